"""ament_python package structvpr_ros, which also ships the ROS-free core structvpr_core."""

from glob import glob

from setuptools import find_packages, setup

package_name = "structvpr_ros"

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
    # Runtime dependencies are pinned in requirements.txt (installed by `make setup`);
    # they are not repeated here so that a ROS install or a CUDA torch is never replaced.
    install_requires=["setuptools"],
    extras_require={
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
