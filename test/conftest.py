"""Shared fixtures: real data locations and an isolated cache per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from structvpr_core.paths import corridor_root

REPO = Path(__file__).resolve().parents[1]
CORRIDOR = corridor_root()
ASSETS = Path(os.environ.get("STRUCTVPR_ASSETS", REPO / ".cache" / "assets"))
OPENCV_DATA = ASSETS / "opencv-doc" / "usr" / "share" / "doc" / "opencv-doc" / "examples" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def corridor() -> Path:
    """The real Corridor route (VPR-Bench layout): ref/, query/, ground_truth.csv."""
    if not (CORRIDOR / "ground_truth.csv").is_file():
        pytest.fail(f"Corridor data not found at {CORRIDOR} (set STRUCTVPR_CORRIDOR)")
    return CORRIDOR


@pytest.fixture(scope="session")
def opencv_data() -> Path:
    """Real images of Debian's opencv-doc (graf1/graf3, leuvenA/B, ...), fetched by `make test`."""
    if not (OPENCV_DATA / "graf1.png").is_file():
        pytest.fail(
            f"opencv-doc test images not found under {OPENCV_DATA}: run `make test` "
            "(or WITH_TEST_ASSETS=1 scripts/setup_env.sh)"
        )
    return OPENCV_DATA


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Descriptor caches written by the code under test go to a temp dir, not ~/.cache.

    And ``backend="auto"`` on the CPU runs ONNX Runtime ($STRUCTVPR_CPU_RUNTIME pins it; the
    processes the tests start inherit it): which runtime a measurement picks depends on the
    machine and its load, and tests compare descriptors to tight tolerances. The measurement
    itself is tested in test_openvino.py, with the pin removed.
    """
    saved = {k: os.environ.get(k) for k in ("STRUCTVPR_CACHE", "STRUCTVPR_CPU_RUNTIME")}
    os.environ["STRUCTVPR_CACHE"] = str(tmp_path_factory.mktemp("structvpr-cache"))
    os.environ["STRUCTVPR_CPU_RUNTIME"] = "onnxruntime"
    yield
    for key, old in saved.items():
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: on small inputs a second thread costs more than it gains."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def make_student(tmp_path_factory):
    """A factory of query-encoder checkpoints for ``teacher_fingerprint``: the ImageNet RGB branch
    with every weight scaled by 1 + ``noise``·N(0, 1), saved with ``query_encoder_for``.

    A query encoder by declaration only (untrained: descriptors within a few per cent of the
    ImageNet model's); the tests that use it are about the acceptance rule, not about quality.
    """

    def make(teacher_fingerprint: dict, name: str = "student", noise: float = 0.01, seed: int = 0) -> Path:
        import torch

        from structvpr_core.checkpoint import save_checkpoint
        from structvpr_core.models import DIMS, RGB_ARCHITECTURE, build_rgb_branch

        model = build_rgb_branch(pretrained=True)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for tensor in model.state_dict().values():
                if tensor.is_floating_point():
                    tensor.mul_(1 + noise * torch.randn(tensor.shape, generator=generator))
        path = tmp_path_factory.mktemp("students") / f"{name}.pt"
        save_checkpoint(
            path,
            model,
            architecture=RGB_ARCHITECTURE,
            descriptor_dim=DIMS[RGB_ARCHITECTURE],
            config={"test": "ImageNet RGB branch, weights perturbed: a query encoder by declaration"},
            query_encoder_for=teacher_fingerprint,
        )
        return path

    return make
