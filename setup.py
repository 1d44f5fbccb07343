"""ament_python package structvpr_ros, which also ships the ROS-free core structvpr_core."""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

package_name = "structvpr_ros"


def pinned(*names: str) -> list[str]:
    """``name==version`` for each name, from requirements.txt: the one place versions are pinned."""
    pins = {}
    for line in (Path(__file__).resolve().parent / "requirements.txt").read_text().splitlines():
        spec = line.split("#", 1)[0].strip()
        if "==" in spec:
            pins[spec.split("==", 1)[0].strip().lower()] = spec
    return [pins[name] for name in names]


# What runs an exported model (structvpr build-map / query / eval / embed and the node with an
# .onnx checkpoint): no PyTorch. ROS itself comes from ROS 2 or requirements-ros.txt (README).
RUNTIME = ("numpy", "onnxruntime", "openvino", "faiss-cpu", "opencv-python-headless", "pyyaml", "tqdm", "rosbags")
# Export, training, .pt checkpoints and the ImageNet model: PyTorch and what goes with it.
TRAIN = ("torch", "torchvision", "onnx", "nncf", "filelock", "scipy", "matplotlib")

setup(
    name=package_name,
    version="0.1.0",
    description="StructVPR visual place recognition and loop-closure detection for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["structvpr_core", "structvpr_core.*", "structvpr_ros", "structvpr_ros.*"]),
    package_data={"structvpr_core": ["taxonomies/*.yaml", "assets/parity/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/launch", glob("launch/*.launch.py")),
        (f"share/{package_name}/config", glob("config/*.yaml") + glob("config/*.xml") + glob("config/*.rviz")),
    ],
    # Dependencies are pinned in requirements.txt (installed by `make setup`); none is required
    # here so that a ROS install or a CUDA torch is never replaced. The extras take their pins
    # from it: `pip install ".[runtime]"` runs exported models without torch (README).
    install_requires=["setuptools"],
    extras_require={
        "runtime": pinned(*RUNTIME),
        "train": pinned(*RUNTIME, *TRAIN),
        "segformer": ["transformers"],
        "gpu": ["faiss-gpu-cu12"],
    },
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "structvpr = structvpr_core.cli:main",
            "structvpr_node = structvpr_ros.vpr_node:main",
            "structvpr_replay = structvpr_ros.replay:main",
            "structvpr_pose_graph = structvpr_ros.pose_graph_node:main",
            "structvpr_slam_demo = structvpr_ros.slam_demo:main",
        ],
    },
)
