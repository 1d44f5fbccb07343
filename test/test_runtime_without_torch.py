"""The runtime-only install: an exported model runs build-map, eval, query and the node without torch.

``pip install ".[runtime]"`` has no torch and no torchvision (README, "Runtime-only install").
Here their absence is simulated in a subprocess (``test/no_torch.py``: a ``sys.meta_path``
finder that makes them unimportable), so that this runs in CI's full environment and fails as
soon as an import of torch creeps back onto the runtime path. The results must be those of the
normal environment. A real runtime-only venv, its size and the node's memory are measured by
scripts/runtime_env.sh (not a test: it installs packages).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
NO_TORCH = REPO / "test" / "no_torch.py"
SIZE = ("160", "120")
INSTALL_HINT = 'pip install ".[train]"'


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env["OMP_NUM_THREADS"] = "1"
    return env


def run(args: list[str], *, torch: bool, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m structvpr_core.cli ARGS``, with torch importable or not."""
    prefix = [sys.executable, "-m"] if torch else [sys.executable, str(NO_TORCH)]
    r = subprocess.run(
        [*prefix, "structvpr_core.cli", *args], capture_output=True, text=True, env=_env(), cwd=str(REPO), timeout=300
    )
    if check and r.returncode != 0:
        raise AssertionError(f"structvpr {' '.join(args)} failed (torch={torch}):\n{r.stderr[-3000:]}")
    return r


@pytest.fixture(scope="session")
def onnx_model(tmp_path_factory, corridor) -> Path:
    """The ImageNet RGB branch exported at 160x120 with the normal (torch) environment."""
    out = tmp_path_factory.mktemp("runtime") / "imagenet_160.onnx"
    run(
        ["export", "--imagenet", "--size", *SIZE, "--out", str(out), "--parity-images", str(corridor / "query"),
         "--parity-count", "2", "--threads", "1", "--no-progress"],
        torch=True,
    )  # fmt: skip
    return out


def test_the_blocker_blocks_torch():
    r = subprocess.run(
        [sys.executable, str(NO_TORCH), "-c", "import torchvision"], capture_output=True, text=True, env=_env()
    )
    assert r.returncode != 0 and "No module named 'torchvision'" in r.stderr


def test_build_map_eval_query_without_torch_equal_the_normal_run(onnx_model, corridor, tmp_path):
    model = ["--checkpoint", str(onnx_model), "--size", *SIZE, "--device", "cpu"]
    results = {}
    for torch in (True, False):
        work = tmp_path / ("torch" if torch else "no_torch")
        cache = {"STRUCTVPR_CACHE": str(work / "cache")}  # each run embeds for itself
        os.environ.update(cache)
        try:
            built = run(
                ["build-map", "--images", str(corridor / "ref"), "--out", str(work / "map"), *model,
                 "--features", "none", "--no-progress"],
                torch=torch,
            )  # fmt: skip
            evaluated = run(["eval", "--dataset", str(corridor), *model, "--no-progress"], torch=torch)
            run(
                ["query", "--map", str(work / "map"), "--checkpoint", str(onnx_model), "--device", "cpu",
                 "--top-k", "5", "--json", str(work / "query.json"),
                 *(str(p) for p in sorted((corridor / "query").iterdir())[:8])],
                torch=torch,
            )  # fmt: skip
        finally:
            os.environ.pop("STRUCTVPR_CACHE")
        assert "111 keyframes" in built.stdout
        recall = [line for line in evaluated.stdout.splitlines() if "R@1" in line]
        results[torch] = (recall, json.loads((work / "query.json").read_text()))
    assert results[True][0] and results[True][0] == results[False][0]  # the same Recall@N line
    with_torch, without = results[True][1], results[False][1]
    assert len(with_torch) == len(without) == 8
    for a, b in zip(with_torch, without, strict=True):
        assert [c["map_id"] for c in a["candidates"]] == [c["map_id"] for c in b["candidates"]]
        np.testing.assert_allclose(
            [c["score"] for c in a["candidates"]], [c["score"] for c in b["candidates"]], atol=1e-5
        )


def _with_and_without_torch(script: str, *args) -> dict[bool, dict]:
    """{torch importable: the JSON the snippet prints last}, the snippet run with and without torch."""
    answers = {}
    for torch in (True, False):
        prefix = [sys.executable, "-c"] if torch else [sys.executable, str(NO_TORCH), "-c"]
        r = subprocess.run(
            [*prefix, script, *map(str, args)], capture_output=True, text=True, env=_env(), cwd=str(REPO), timeout=300
        )
        assert r.returncode == 0, r.stderr[-3000:]
        answers[torch] = json.loads(r.stdout.strip().splitlines()[-1])
    return answers


NODE_START = """
import json, logging, sys
import cv2
from structvpr_ros.detector_setup import build_detector
from structvpr_ros.params import NodeParams
map_path, model, frame = sys.argv[1:4]
p = NodeParams(map_path=map_path, checkpoint=model, image_width=160, image_height=120, device="cpu", cpu_threads=1)
detector, extractor = build_detector(p, logging.getLogger("node"))
d = detector.process(cv2.imread(frame), stamp=1.0e9)
print(json.dumps({"backend": extractor.backend, "device": str(extractor.device), "torch": "torch" in sys.modules,
                  "ids": [c.map_id for c in d.candidates], "scores": [c.score for c in d.candidates]}))
"""


def test_node_start_up_without_torch_answers_as_with_torch(onnx_model, corridor, tmp_path):
    """detector_setup.build_detector (the node's start-up, ROS-free) with an .onnx checkpoint, then one frame."""
    run(
        ["build-map", "--images", str(corridor / "ref"), "--out", str(tmp_path / "map"), "--checkpoint",
         str(onnx_model), "--size", *SIZE, "--features", "none", "--no-progress"],
        torch=True,
    )  # fmt: skip
    frame = sorted((corridor / "query").iterdir())[3]
    answers = _with_and_without_torch(NODE_START, tmp_path / "map", onnx_model, frame)
    assert answers[False]["backend"] == "onnxruntime" and answers[False]["device"] == "cpu"
    assert answers[False]["torch"] is False
    assert answers[False]["ids"] and answers[False]["ids"] == answers[True]["ids"]
    np.testing.assert_allclose(answers[False]["scores"], answers[True]["scores"], atol=1e-5)


@pytest.mark.parametrize(
    "extra, needs",
    [
        (["--checkpoint", "{pt}"], "a PyTorch checkpoint"),
        ([], "the ImageNet model"),
        (["--checkpoint", "{onnx}", "--device", "cuda"], "device 'cuda'"),
    ],
)
def test_torch_only_features_name_what_to_install(extra, needs, onnx_model, corridor, tmp_path):
    pt = tmp_path / "model.pt"
    pt.write_bytes(b"not read: torch is missing")
    args = [a.format(pt=pt, onnx=onnx_model) for a in extra]
    r = run(["eval", "--dataset", str(corridor), *args, "--size", *SIZE, "--no-progress"], torch=False, check=False)
    assert r.returncode == 1
    error = r.stderr.strip().splitlines()[-1]
    assert error.startswith("structvpr eval: error:") and needs in error and INSTALL_HINT in error


def test_architecture_names_and_sizes_agree_with_the_networks():
    """models.architectures (torch-free) states what the classes say."""
    from structvpr_core.models import ARCHITECTURES, DIMS, RGB_ARCHITECTURES, RGBBranch, StructVPRPPStudent

    assert DIMS == {name: cls.dim for name, cls in ARCHITECTURES.items()}
    assert RGB_ARCHITECTURES == (RGBBranch.architecture, StructVPRPPStudent.architecture)


def test_radius_neighbours_without_scipy_equal_the_kd_tree():
    from structvpr_core.data.dataset import _radius_neighbours_brute, radius_neighbours

    rng = np.random.default_rng(0)
    db = rng.uniform(0, 300, (2000, 2)) + 5e5  # UTM-like magnitudes
    q = rng.uniform(0, 300, (300, 2)) + 5e5
    q[:20] = db[:20] + np.array([25.0, 0.0])  # on the boundary: inclusive
    kd = radius_neighbours(db, q, 25.0)
    brute = _radius_neighbours_brute(db, q, 25.0)
    assert sum(len(h) for h in kd) > 1000
    assert all(np.array_equal(a, b) for a, b in zip(kd, brute, strict=True))


def test_runtime_extra_pins_from_requirements_without_torch(tmp_path):
    """setup.py's extras take their versions from requirements.txt; runtime has no torch."""
    r = subprocess.run(
        [sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path)],
        capture_output=True, text=True, cwd=str(REPO),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    sections, current = {}, None
    for line in (tmp_path / "structvpr_ros.egg-info" / "requires.txt").read_text().splitlines():
        if line.startswith("["):
            current = line.strip("[]")
        elif line.strip() and current:
            sections.setdefault(current, []).append(line.strip())
    pins = {
        line.split("#")[0].strip()
        for line in (REPO / "requirements.txt").read_text().splitlines()
        if "==" in line.split("#")[0]
    }
    runtime = set(sections["runtime"])
    assert runtime <= pins and {"onnxruntime", "faiss-cpu", "numpy"} <= {s.split("==")[0] for s in runtime}
    assert not any(s.split("==")[0] in ("torch", "torchvision") for s in runtime)
    assert set(sections["train"]) <= pins and runtime <= set(sections["train"])
    assert any(s.startswith("torch==") for s in sections["train"])


PP_START = """
import json, logging, sys
import cv2
from structvpr_ros.detector_setup import build_detector
from structvpr_ros.params import NodeParams
map_path, model, frame = sys.argv[1:4]
p = NodeParams(map_path=map_path, checkpoint=model, image_width=160, image_height=120, device="cpu", cpu_threads=1,
               label_rescore=True)
detector, extractor = build_detector(p, logging.getLogger("node"))
image = cv2.imread(frame)
d = detector.process(image, stamp=1.0e9)
print(json.dumps({"layout": extractor.label_layout, "masks": list(extractor.masks([image]).shape),
                  "torch": "torch" in sys.modules, "ids": [c.map_id for c in d.candidates],
                  "scores": [c.score for c in d.candidates]}))
"""


def test_structvpr_pp_student_export_without_torch(corridor, tmp_path):
    """A StructVPR++ student's export: label layout, soft masks and label re-scoring in the node, no torch."""
    import torch

    from structvpr_core.checkpoint import save_checkpoint
    from structvpr_core.models import PP_RGB_ARCHITECTURE, build_pp_student
    from structvpr_core.slme import label_retrieval_weights

    torch.manual_seed(0)
    model = build_pp_student(pretrained=True, weights=label_retrieval_weights(6)).eval()
    ckpt, onnx_model = tmp_path / "pp.pt", tmp_path / "pp.onnx"
    save_checkpoint(ckpt, model, architecture=PP_RGB_ARCHITECTURE, descriptor_dim=model.dim, config={})
    run(
        ["export", "--checkpoint", str(ckpt), "--size", *SIZE, "--out", str(onnx_model), "--parity-images",
         str(corridor / "query"), "--parity-count", "2", "--threads", "1", "--no-progress"],
        torch=True,
    )  # fmt: skip
    run(
        ["build-map", "--images", str(corridor / "ref"), "--out", str(tmp_path / "map"), "--checkpoint",
         str(onnx_model), "--size", *SIZE, "--features", "none", "--no-progress"],
        torch=False,
    )  # fmt: skip
    frame = sorted((corridor / "query").iterdir())[5]
    answers = _with_and_without_torch(PP_START, tmp_path / "map", onnx_model, frame)
    assert answers[False]["layout"] == [448, 6, 64] and answers[False]["masks"] == [
        1,
        6,
        8,
        10,
    ]  # stride 16, rounded up
    assert answers[False]["torch"] is False
    assert answers[False]["ids"] and answers[False]["ids"] == answers[True]["ids"]
    np.testing.assert_allclose(answers[False]["scores"], answers[True]["scores"], atol=1e-5)
