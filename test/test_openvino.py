"""OpenVINO as a runtime, and ``auto`` choosing the CPU runtime by measurement (backends/runtime_choice.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from structvpr_core.backends import runtime_choice
from structvpr_core.backends.onnx_cache import cached_onnx
from structvpr_core.backends.ort_backend import OrtRunner
from structvpr_core.backends.ov_backend import OvRunner, cpu_precisions
from structvpr_core.backends.providers import CPU_EP, plan_backend
from structvpr_core.checkpoint import save_checkpoint
from structvpr_core.errors import CheckpointError, ConfigError
from structvpr_core.extractor import Extractor
from structvpr_core.images import list_images, read_image
from structvpr_core.models import build_rgb_branch

SIZE = (160, 120)  # Corridor's own resolution: small and real
ALL = ("fp32", "bf16", "fp16")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def frames(corridor):
    return list_images(corridor / "ref")[::11] + list_images(corridor / "query")[5::11]


@pytest.fixture(scope="module")
def torch_extractor():
    return Extractor(device="cpu", image_size=SIZE, backend="torch")


@pytest.fixture()
def unpinned(monkeypatch, tmp_path):
    """auto measures for real: the session's pin removed, a cache of its own."""
    monkeypatch.delenv(runtime_choice.PIN_ENV, raising=False)
    monkeypatch.setenv("STRUCTVPR_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "runtime_choice"


# -- policy (pure) ----------------------------------------------------------------------------


def test_openvino_backends_and_their_refusals():
    plan = plan_backend("openvino", "cpu", [CPU_EP], openvino_precisions=ALL)
    assert (plan.runtime, plan.name, plan.precision, plan.candidates) == ("openvino", "openvino", "fp32", ())
    assert plan_backend("openvino-bf16", "cpu", None, openvino_precisions=ALL).precision == "bf16"
    assert plan_backend("openvino-fp16", "cpu", None, openvino_precisions=ALL).name == "openvino-fp16"
    with pytest.raises(ConfigError, match=r"this CPU offers OpenVINO fp32 only \(bf16 needs AVX-512 BF16 or AMX"):
        plan_backend("openvino-bf16", "cpu", [CPU_EP], openvino_precisions=("fp32",))
    with pytest.raises(ConfigError, match="the openvino package is not installed"):
        plan_backend("openvino", "cpu", [CPU_EP], openvino_precisions=None)
    with pytest.raises(ConfigError, match="OpenVINO runs on the CPU here"):
        plan_backend("openvino", "cuda", [CPU_EP], openvino_precisions=ALL)


def test_auto_on_the_cpu_measures_every_installed_runtime_and_precision():
    plan = plan_backend("auto", "cpu", [CPU_EP], openvino_precisions=ALL)
    assert plan.candidates == ("onnxruntime", "openvino", "openvino-bf16", "openvino-fp16")
    assert plan.runtime == "onnxruntime"  # the fallback until measured
    int8 = plan_backend("auto", "cpu", [CPU_EP], openvino_precisions=ALL, onnx_only=True, int8=True)
    assert int8.candidates == ("onnxruntime", "openvino")  # no reduced float precision on top of int8
    assert plan_backend("auto", "cpu", [CPU_EP], openvino_precisions=("fp32",)).candidates == (
        "onnxruntime",
        "openvino",
    )
    only_ort = plan_backend("auto", "cpu", [CPU_EP], openvino_precisions=None)
    assert (only_ort.runtime, only_ort.candidates) == ("onnxruntime", ())
    only_ov = plan_backend("auto", "cpu", None, openvino_precisions=("fp32", "bf16"))
    assert only_ov.candidates == ("openvino", "openvino-bf16")
    assert plan_backend("auto", "cpu", None, openvino_precisions=("fp32",)).runtime == "openvino"
    assert plan_backend("auto", "cuda", [CPU_EP], openvino_precisions=ALL).runtime == "torch"  # CUDA as before


# -- the OpenVINO runner on real frames --------------------------------------------------------


def test_openvino_fp32_reproduces_pytorch_and_onnxruntime(torch_extractor, frames):
    ov = Extractor(device="cpu", image_size=SIZE, backend="openvino")
    assert (ov.backend, ov.precision, ov.model) == ("openvino", "fp32", None)
    assert ov.fingerprint == torch_extractor.fingerprint  # a map built with one is queried with the other
    a = ov.embed_paths(frames, progress=False)
    b = torch_extractor.embed_paths(frames, progress=False)
    c = Extractor(device="cpu", image_size=SIZE, backend="onnxruntime").embed_paths(frames, progress=False)
    assert (a * b).sum(1).min() >= 0.99999
    assert (a * c).sum(1).min() >= 0.99999
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precisions_run_where_the_cpu_offers_them(torch_extractor, frames, precision):
    offered = cpu_precisions() or ()
    if precision not in offered:
        with pytest.raises(ConfigError, match=f"this CPU offers OpenVINO {', '.join(offered)} only"):
            Extractor(device="cpu", image_size=SIZE, backend=f"openvino-{precision}")
        return
    ex = Extractor(device="cpu", image_size=SIZE, backend=f"openvino-{precision}")
    assert ex.precision == precision and ex.runner.precision == precision
    cos = (ex.embed_paths(frames, progress=False) * torch_extractor.embed_paths(frames, progress=False)).sum(1)
    assert 0.99 <= cos.min() and cos.mean() < 1.0 - 1e-7  # close, but not the fp32 numbers


def test_openvino_refuses_a_graph_of_another_size_or_dimension(torch_extractor):
    path, _ = cached_onnx(torch_extractor.fingerprint, lambda: torch_extractor.model, source=torch_extractor.source)
    with pytest.raises(
        CheckpointError, match=r"graph input has shape \[.*, 3, 120, 160\], expected \[batch, 3, 240, 320\]"
    ):
        OvRunner(path, image_size=(320, 240), dim=448)
    with pytest.raises(CheckpointError, match=r"expected \[batch, 64\]"):
        OvRunner(path, image_size=SIZE, dim=64)
    not_onnx = path.parent / "broken.onnx"
    not_onnx.write_bytes(b"\x08\x07not a protobuf")
    with pytest.raises(CheckpointError, match="OpenVINO cannot read this model"):
        OvRunner(not_onnx, image_size=SIZE, dim=448)


# -- auto: measured once per machine and model, cached, pinned on request -----------------------


def test_auto_measures_the_candidates_runs_the_fastest_that_passes_and_caches_the_choice(
    unpinned, torch_extractor, frames
):
    ex = Extractor(device="cpu", image_size=SIZE)
    record = ex.runtime_choice
    candidates = plan_backend("auto", "cpu", [CPU_EP], openvino_precisions=cpu_precisions()).candidates
    assert set(record["candidates"]) == set(candidates) and len(candidates) >= 2
    passed = {n: r for n, r in record["candidates"].items() if r["passed"]}
    assert record["chosen"] == min(passed, key=lambda n: passed[n]["p50_ms"]) == ex.backend
    for name, result in record["candidates"].items():
        assert result["passed"] == (result["min_cosine"] >= runtime_choice.MIN_COSINE), name
    assert record["candidates"]["onnxruntime"]["min_cosine"] >= 0.99999  # fp32 against PyTorch
    assert record["reference"] == "PyTorch fp32" and record["machine"]["threads"] == 1
    assert "fastest" in record["why"] and "8 real frames" in record["why"]
    files = list(unpinned.glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["chosen"] == ex.backend
    cos = (ex.embed_paths(frames, progress=False) * torch_extractor.embed_paths(frames, progress=False)).sum(1)
    assert cos.min() >= runtime_choice.MIN_COSINE

    again = Extractor(device="cpu", image_size=SIZE)  # read from the cache: same choice, not measured again
    assert again.backend == ex.backend and again.runtime_choice["measured_at"] == record["measured_at"]
    # Another thread count, CPU or runtime version is another record (measured again).
    key = runtime_choice.machine_key(1)
    assert runtime_choice.record_path(ex.fingerprint, "fp32", key, unpinned) == files[0]
    for changed in ({"threads": 2}, {"cpu": "another CPU"}, {"openvino": "0.0"}, {"simd": []}):
        assert runtime_choice.record_path(ex.fingerprint, "fp32", {**key, **changed}, unpinned) != files[0]


def test_a_runtime_that_does_not_reproduce_the_reference_is_refused(unpinned, torch_extractor, frames, tmp_path):
    """Two real runtimes; one runs another model's export (as a wrong conversion would): refused."""
    other = build_rgb_branch(pretrained=False)
    arch = torch_extractor.fingerprint["architecture"]
    save_checkpoint(tmp_path / "other.pt", other, architecture=arch, descriptor_dim=448, config={})
    wrong = Extractor(tmp_path / "other.pt", device="cpu", image_size=SIZE, backend="onnxruntime").onnx_path
    right = Extractor(device="cpu", image_size=SIZE, backend="onnxruntime").onnx_path

    def make_runner(name):
        if name == "onnxruntime":
            return OrtRunner(right, providers=[CPU_EP], image_size=SIZE, dim=448, threads=1)
        return OvRunner(wrong, image_size=SIZE, dim=448, threads=1)

    batches = [torch_extractor.prepare(read_image(p))[None] for p in frames[:4]]
    results, runners = runtime_choice.measure(
        ["onnxruntime", "openvino"], make_runner, torch_extractor.runner.run, batches
    )
    assert results["openvino"]["passed"] is False and results["openvino"]["min_cosine"] < 0.99
    assert "p50_ms" not in results["openvino"] and set(runners) == {"onnxruntime"}
    assert results["onnxruntime"]["passed"] and results["onnxruntime"]["p50_ms"] > 0


def test_the_pin_skips_the_measurement_and_a_bad_pin_is_an_error(unpinned, monkeypatch):
    monkeypatch.setenv(runtime_choice.PIN_ENV, "openvino")
    ex = Extractor(device="cpu", image_size=SIZE)
    assert ex.backend == "openvino" and "pinned" in ex.runtime_choice["why"]
    assert not unpinned.exists()  # nothing measured, nothing cached
    monkeypatch.setenv(runtime_choice.PIN_ENV, "tensorrt")
    with pytest.raises(ConfigError, match=r"\$STRUCTVPR_CPU_RUNTIME=tensorrt: not a runtime auto can run here"):
        Extractor(device="cpu", image_size=SIZE)


def test_auto_on_an_exported_file_measures_against_onnx_runtime_fp32(unpinned, torch_extractor, frames, tmp_path):
    """A .onnx given as the model has no PyTorch weights: the reference is the checked export itself."""
    from structvpr_core.cli import main

    out = tmp_path / "model.onnx"
    assert main(["export", "--imagenet", "--size", *map(str, SIZE), "--out", str(out), "--no-progress"]) == 0
    ex = Extractor(out, device="cpu", image_size=SIZE)
    assert ex.runtime_choice["reference"] == "ONNX Runtime fp32 (an exported file)"
    assert ex.runtime_choice["candidates"]["onnxruntime"]["min_cosine"] >= 0.99999
    cos = (ex.embed_paths(frames, progress=False) * torch_extractor.embed_paths(frames, progress=False)).sum(1)
    assert cos.min() >= runtime_choice.MIN_COSINE
