"""The Extractor's backends: selection policy, ONNX Runtime on the CPU by default, the ONNX cache,
and clear errors for mismatched or damaged ONNX files. Real models, real images, real ORT."""

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from structvpr_core.backends.onnx_cache import cache_dir, cache_path, cached_onnx
from structvpr_core.backends.onnx_export import export_onnx
from structvpr_core.backends.onnx_format import make_sidecar, sidecar_path, write_sidecar
from structvpr_core.backends.providers import CPU_EP, CUDA_EP, TRT_EP, plan_backend
from structvpr_core.checkpoint import save_checkpoint
from structvpr_core.errors import CheckpointError, ConfigError
from structvpr_core.extractor import Extractor
from structvpr_core.images import list_images, read_image
from structvpr_core.mapdb import MapDatabase
from structvpr_core.models import build_rgb_branch
from structvpr_core.weights import file_sha256

SIZE = (160, 120)  # Corridor's own resolution: small and real


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def frames(corridor):
    paths = list_images(corridor / "ref")[::11] + list_images(corridor / "query")[5::11]
    return paths


@pytest.fixture(scope="module")
def auto_extractor():
    return Extractor(device="cpu", image_size=SIZE)


@pytest.fixture(scope="module")
def torch_extractor():
    return Extractor(device="cpu", image_size=SIZE, backend="torch")


# -- selection policy (pure: takes the available providers list) ------------------------------


def test_policy_on_cpu():
    assert plan_backend("auto", "cpu", [CPU_EP]).providers == (CPU_EP,)
    assert plan_backend("auto", "cpu", [CPU_EP, CUDA_EP, TRT_EP]).name == "onnxruntime"
    assert plan_backend("torch", "cpu", [CPU_EP]).runtime == "torch"
    fallback = plan_backend("auto", "cpu", None)  # onnxruntime not installed
    assert fallback.runtime == "torch" and "onnxruntime is not installed" in fallback.warning
    with pytest.raises(ConfigError, match="onnxruntime package is not installed"):
        plan_backend("onnxruntime", "cpu", None)
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        plan_backend("tensorrt", "cpu", [CPU_EP, TRT_EP])
    with pytest.raises(ConfigError, match="cannot run an ONNX model"):
        plan_backend("torch", "cpu", [CPU_EP], onnx_only=True)
    with pytest.raises(ConfigError, match="backend: expected one of"):
        plan_backend("openvino-int4", "cpu", [CPU_EP])


def test_policy_on_cuda():
    # auto on CUDA: TensorRT when its provider exists, else PyTorch; ORT-CUDA only when asked.
    trt = plan_backend(
        "auto",
        "cuda",
        [TRT_EP, CUDA_EP, CPU_EP],
        device_index=1,
        half=True,
        max_batch=4,
        input_shape=(3, 480, 640),
        trt_cache_dir="/tmp/trt",
    )
    names = [p if isinstance(p, str) else p[0] for p in trt.providers]
    assert trt.name == "tensorrt" and names == [TRT_EP, CUDA_EP, CPU_EP]
    opts = trt.providers[0][1]
    assert opts["device_id"] == 1 and opts["trt_fp16_enable"] is True and opts["trt_engine_cache_enable"] is True
    assert opts["trt_profile_max_shapes"] == "image:4x3x480x640"
    assert plan_backend("auto", "cuda", [CUDA_EP, CPU_EP]).runtime == "torch"
    ort_cuda = plan_backend("onnxruntime", "cuda", [CUDA_EP, CPU_EP], device_index=0)
    assert ort_cuda.providers == ((CUDA_EP, {"device_id": 0}), CPU_EP)
    with pytest.raises(ConfigError, match="no CUDAExecutionProvider"):
        plan_backend("onnxruntime", "cuda", [CPU_EP])
    with pytest.raises(ConfigError, match="no TensorrtExecutionProvider"):
        plan_backend("tensorrt", "cuda", [CUDA_EP, CPU_EP])
    assert plan_backend("auto", "cuda", [CUDA_EP, CPU_EP], onnx_only=True).providers[0][0] == CUDA_EP


# -- auto on this CPU ------------------------------------------------------------------------


def test_auto_picks_onnxruntime_on_cpu_and_matches_torch(auto_extractor, torch_extractor, frames):
    ex = auto_extractor
    assert ex.backend == "onnxruntime" and ex.providers == [CPU_EP] and ex.precision == "fp32"
    assert ex.model is None  # no PyTorch network kept in memory
    assert ex.onnx_path.parent == cache_dir() and ex.onnx_path == cache_path(ex.fingerprint)
    assert sidecar_path(ex.onnx_path).is_file()
    assert ex.fingerprint == torch_extractor.fingerprint  # maps work across backends
    assert ex.runner.session.get_session_options().intra_op_num_threads == 1  # follows torch's count
    a, b = ex.embed_paths(frames, progress=False), torch_extractor.embed_paths(frames, progress=False)
    cos = (a * b).sum(axis=1)
    assert cos.min() >= 0.999, cos.min()
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    rgb = ex.embed([read_image(frames[0])[:, :, ::-1].copy()], color="rgb")  # colour order handled
    assert np.allclose(rgb, a[:1], atol=1e-5)


def test_map_built_with_torch_is_queried_with_onnxruntime(auto_extractor, torch_extractor, frames, tmp_path):
    db = MapDatabase.create(torch_extractor.fingerprint, torch_extractor.dim)
    db.add(torch_extractor.embed_paths(frames, progress=False), [{"source": str(p)} for p in frames])
    db.save(tmp_path / "map")
    loaded = MapDatabase.load(tmp_path / "map", expected_fingerprint=auto_extractor.fingerprint)
    hits = loaded.search(auto_extractor.embed_paths(frames[:3], progress=False), 1)
    assert [h[0][0] for h in hits] == [1, 2, 3]


def test_cache_is_reused_and_a_damaged_entry_is_exported_again(auto_extractor):
    path = auto_extractor.onnx_path
    before = path.stat().st_mtime_ns
    again = Extractor(device="cpu", image_size=SIZE, threads=2)
    assert again.onnx_path == path and path.stat().st_mtime_ns == before  # no second export
    assert again.runner.session.get_session_options().intra_op_num_threads == 2
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    path.write_bytes(bytes(data))
    repaired = Extractor(device="cpu", image_size=SIZE)  # a cache entry: re-exported
    assert repaired.backend == "onnxruntime"
    assert file_sha256(path) == json.loads(sidecar_path(path).read_text())["onnx_sha256"]


def test_two_processes_exporting_the_same_model_do_not_clash(tmp_path):
    code = (
        "import sys, torch; torch.set_num_threads(1)\n"
        "from structvpr_core.extractor import Extractor\n"
        "e = Extractor(device='cpu', image_size=(64, 48))\n"
        "print(e.backend, e.onnx_path)\n"
    )
    env = {**__import__("os").environ, "STRUCTVPR_CACHE": str(tmp_path)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1].decode()[-500:] for o in outs]
    lines = {o[0].decode().strip() for o in outs}
    assert len(lines) == 1 and lines.pop().startswith("onnxruntime ")
    files = sorted(p.name for p in (tmp_path / "onnx").iterdir() if not p.name.endswith(".lock"))
    assert len(files) == 2 and files[1] == files[0] + ".json"  # one model, one sidecar, no temp left


# -- explicit ONNX files: clear errors naming the file ----------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory, auto_extractor):
    """A user-held copy of the 160x120 export (the cache's own file) and its sidecar."""
    d = tmp_path_factory.mktemp("onnx")
    onnx_file = d / "model.onnx"
    onnx_file.write_bytes(auto_extractor.onnx_path.read_bytes())
    sidecar_path(onnx_file).write_text(sidecar_path(auto_extractor.onnx_path).read_text())
    return onnx_file


def _copy(src, dst):
    dst.write_bytes(src.read_bytes())
    sidecar_path(dst).write_text(sidecar_path(src).read_text())
    return dst


def test_onnx_file_as_the_model(exported, auto_extractor, frames):
    ex = Extractor(exported, device="cpu", image_size=SIZE)
    assert ex.backend == "onnxruntime" and ex.onnx_path == exported and ex.fingerprint == auto_extractor.fingerprint
    expected = auto_extractor.embed_paths(frames[:2], progress=False)
    assert np.allclose(ex.embed_paths(frames[:2], progress=False), expected, atol=1e-5)
    paired = Extractor(None, device="cpu", image_size=SIZE, onnx_model=exported)
    assert paired.onnx_path == exported
    with pytest.raises(ConfigError, match="cannot run an ONNX model"):
        Extractor(exported, device="cpu", image_size=SIZE, backend="torch")


def test_wrong_input_size(exported):
    with pytest.raises(CheckpointError, match=r"model\.onnx: exported for input size 160x120.*320x240"):
        Extractor(exported, device="cpu", image_size=(320, 240))


def test_wrong_weights(exported, tmp_path):
    torch.manual_seed(0)
    ckpt = tmp_path / "other.pt"
    save_checkpoint(
        ckpt,
        build_rgb_branch(pretrained=False),
        architecture="structvpr-rgb-mobilenetv2",
        descriptor_dim=448,
        config={"synthetic": True},
    )
    with pytest.raises(CheckpointError, match=r"model\.onnx: exported from another model \(weights_sha256"):
        Extractor(ckpt, device="cpu", image_size=SIZE, onnx_model=exported)


def test_corrupted_or_truncated_file(exported, tmp_path):
    bad = _copy(exported, tmp_path / "bad.onnx")
    bad.write_bytes(bad.read_bytes()[:1000])  # truncated
    with pytest.raises(CheckpointError, match=r"bad\.onnx: contents differ from its sidecar"):
        Extractor(bad, device="cpu", image_size=SIZE)
    # Garbage whose sidecar was made to agree: ONNX Runtime's refusal, named.
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx model at all" * 100)
    meta = json.loads(sidecar_path(exported).read_text())
    meta["onnx_sha256"] = file_sha256(junk)
    sidecar_path(junk).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"junk\.onnx: ONNX Runtime cannot load this model"):
        Extractor(junk, device="cpu", image_size=SIZE)


def test_bad_sidecars(exported, tmp_path):
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(exported.read_bytes())
    with pytest.raises(CheckpointError, match=r"lonely\.onnx\.json: missing"):
        Extractor(lonely, device="cpu", image_size=SIZE)
    broken = _copy(exported, tmp_path / "broken.onnx")
    sidecar_path(broken).write_text('{"format": "structvpr-onnx", "fingerp')
    with pytest.raises(CheckpointError, match=r"broken\.onnx\.json: unreadable or corrupted"):
        Extractor(broken, device="cpu", image_size=SIZE)
    wrong_dim = _copy(exported, tmp_path / "dim.onnx")  # sidecar says 512-d, graph gives 448
    meta = json.loads(sidecar_path(wrong_dim).read_text())
    meta["fingerprint"]["descriptor_dim"] = 512
    sidecar_path(wrong_dim).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"dim\.onnx: graph output has shape \[.*448\], expected \[batch, 512\]"):
        Extractor(wrong_dim, device="cpu", image_size=SIZE)
    with pytest.raises(CheckpointError, match=r"missing\.onnx: no such ONNX model file"):
        Extractor(tmp_path / "missing.onnx", device="cpu", image_size=SIZE)


def test_auto_falls_back_to_torch_when_the_cache_is_unwritable(tmp_path, monkeypatch, frames, torch_extractor):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("STRUCTVPR_CACHE", str(blocker))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ex = Extractor(device="cpu", image_size=SIZE)
    assert ex.backend == "torch" and any("running PyTorch instead" in str(w.message) for w in caught)
    expected = torch_extractor.embed_paths(frames[:1], progress=False)
    assert np.allclose(ex.embed_paths(frames[:1], progress=False), expected, atol=1e-5)
    with pytest.raises(CheckpointError, match="cannot write the ONNX cache"):
        Extractor(device="cpu", image_size=SIZE, backend="onnxruntime")  # asked for explicitly: an error


def test_cached_onnx_checks_the_fingerprint(tmp_path, auto_extractor):
    fp = dict(auto_extractor.fingerprint)
    path, made = cached_onnx(
        fp,
        lambda: pytest.fail("must not export: the entry exists"),
        source={},
        directory=auto_extractor.onnx_path.parent,
    )
    assert path == auto_extractor.onnx_path and not made
    # An entry whose sidecar names other weights (e.g. copied by hand) is replaced, not used.
    other = dict(fp, weights_sha256="0" * 64)
    target = cache_path(other, tmp_path)
    _copy(auto_extractor.onnx_path, target)
    path, made = cached_onnx(other, lambda: build_rgb_branch(pretrained=True).eval(), source={}, directory=tmp_path)
    assert made and json.loads(sidecar_path(path).read_text())["fingerprint"]["weights_sha256"] == "0" * 64


def test_explicit_export_roundtrip(tmp_path):
    model = build_rgb_branch(pretrained=True).eval()
    out = tmp_path / "m.onnx"
    export_onnx(model, out, image_size=(64, 48))
    fp = {
        "architecture": "structvpr-rgb-mobilenetv2",
        "weights_sha256": "f" * 64,
        "input_size": [64, 48],
        "descriptor_dim": 448,
    }
    write_sidecar(out, make_sidecar(out, fingerprint=fp, source={"synthetic": True}))
    ex = Extractor(out, device="cpu", image_size=(64, 48))
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)  # synthetic noise image
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (torch.from_numpy(image[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255 - mean) / std
    with torch.inference_mode():
        expected = model(x).numpy()
    assert np.allclose(ex.embed([image]), expected, atol=1e-4)
    assert model.training is False and not any(type(m).__name__ == "Identity" for m in model.modules())  # untouched
