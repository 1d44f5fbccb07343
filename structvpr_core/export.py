"""Export of the RGB branch to ONNX, descriptor head included, with a JSON sidecar.

The graph maps a batch of ImageNet-normalised RGB images to unit-length descriptors: the
MobileNetV2 stages, global max pooling of F3..F5, per-level L2 normalisation, concatenation
and the final L2 normalisation all run inside it (BatchNorm folded into the convolutions).

Input ``image``: float32 (N, 3, H, W), RGB, ``(pixel / 255 - mean) / std`` with the ImageNet mean
and std, at the fixed size H×W the model was exported for (N is dynamic). Output
``descriptor``: float32 (N, D). A normalised float input, rather than raw uint8 pixels, is what
ONNX Runtime, TensorRT and OpenCV's dnn module all take without a custom pre-processing graph.

The sidecar ``MODEL.onnx.json`` records what a consumer needs and what the loader checks:
the model fingerprint (architecture, weights sha256, input size, descriptor dim: the same
fingerprint the PyTorch extractor has, so maps work across backends), the normalisation, the
precision (fp32 / int8), the ONNX file's own sha256 (corruption or replacement is caught),
the source checkpoint and, from ``structvpr export``, the measured parity.

Exporter: PyTorch's TorchScript-based exporter (``dynamo=False``): ~1 s and no onnxscript
dependency. It is deprecated in PyTorch ≥ 2.9 but present in the pinned 2.14.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import numpy as np

from .atomic import atomic_write, atomic_write_json
from .errors import CheckpointError
from .fingerprint import FINGERPRINT_KEYS, describe_mismatch, fingerprint_mismatch

FORMAT = "structvpr-onnx"
FORMAT_VERSION = 1
OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "descriptor"


def sidecar_path(onnx_path: str | os.PathLike) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    p = Path(onnx_path)
    return p.with_name(p.name + ".json")


def input_description(image_size: tuple[int, int]) -> dict:
    from .preprocess import IMAGENET_MEAN, IMAGENET_STD

    w, h = image_size
    return {"name": INPUT_NAME, "dtype": "float32", "layout": "NCHW", "shape": ["batch", 3, int(h), int(w)],
            "color": "RGB", "scale": "1/255", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
            "formula": "(pixel / 255 - mean) / std, per channel",
            "resize": "to W x H; cv2.INTER_AREA when shrinking both sides, else bilinear"}


def make_sidecar(onnx_path: str | os.PathLike, *, fingerprint: dict, source: dict, precision: str = "fp32",
                 quantization: dict | None = None, parity: dict | None = None) -> dict:
    """The sidecar of an ONNX file already on disk (hashes it)."""
    import onnx
    import torch

    from . import __version__
    from .weights import file_sha256

    fp = {k: fingerprint[k] for k in FINGERPRINT_KEYS}
    fp["input_size"] = [int(v) for v in fp["input_size"]]
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "fingerprint": fp,
        "architecture": fp["architecture"], "descriptor_dim": int(fp["descriptor_dim"]),
        "input_size": fp["input_size"],
        "input": input_description(tuple(fp["input_size"])),
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": ["batch", int(fp["descriptor_dim"])],
                   "l2_normalised": True},
        "precision": precision, "quantization": quantization,
        "opset": OPSET,
        "onnx_sha256": file_sha256(onnx_path),
        "source": source,
        "exporter": {"structvpr": __version__, "torch": torch.__version__.split("+")[0], "onnx": onnx.__version__},
        "parity": parity,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def export_onnx(model, path: str | os.PathLike, *, image_size: tuple[int, int], opset: int = OPSET) -> None:
    """Write ``model`` (an RGB branch in eval mode, on the CPU) as ONNX to ``path``, atomically.

    BatchNorm is folded into the convolutions first (a copy; ``model`` is left as it is).
    """
    import copy

    import torch

    from .models.fusion import fuse_conv_bn

    if model.training:
        raise ValueError("export_onnx needs a model in eval mode")
    model = fuse_conv_bn(copy.deepcopy(model).float().cpu())
    w, h = image_size
    dummy = torch.zeros(1, 3, int(h), int(w))

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation notices (see module docstring)
            torch.onnx.export(model, (dummy,), str(tmp), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                              do_constant_folding=True)

    atomic_write(path, write)


def write_sidecar(onnx_path: str | os.PathLike, sidecar: dict) -> Path:
    out = sidecar_path(onnx_path)
    atomic_write_json(out, sidecar)
    return out


def read_sidecar(onnx_path: str | os.PathLike) -> dict:
    """The sidecar of ``onnx_path``; CheckpointError naming the file when missing or malformed."""
    onnx_path = Path(onnx_path)
    side = sidecar_path(onnx_path)
    if not onnx_path.is_file():
        raise CheckpointError(f"{onnx_path}: no such ONNX model file")
    if not side.is_file():
        raise CheckpointError(f"{side}: missing; {onnx_path.name} needs the sidecar written beside it by "
                              "'structvpr export' (input size, normalisation, fingerprint)")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{side}: unreadable or corrupted sidecar ({type(e).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{side}: not a structvpr ONNX sidecar (format {found!r})")
    if not isinstance(meta.get("format_version"), int) or meta["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{side}: sidecar format version {meta.get('format_version')!r}, this structvpr "
                              f"reads up to {FORMAT_VERSION}")
    fp = meta.get("fingerprint")
    if (not isinstance(fp, dict) or any(k not in fp for k in FINGERPRINT_KEYS)
            or not isinstance(meta.get("onnx_sha256"), str) or meta.get("precision") not in ("fp32", "fp16", "int8")):
        raise CheckpointError(f"{side}: sidecar lacks or has invalid fingerprint/onnx_sha256/precision")
    return meta


def check_onnx_model(onnx_path: str | os.PathLike, *, expected_fingerprint: dict | None = None,
                     image_size: tuple[int, int] | None = None) -> dict:
    """Validate an exported model against its sidecar and the caller's expectations; returns the sidecar.

    CheckpointError (one line, naming the file) when the file is missing, its bytes differ from
    what the sidecar recorded (corrupted, truncated, replaced), it was exported for another
    input size, or from other weights / another architecture than ``expected_fingerprint``.
    """
    from .weights import file_sha256

    onnx_path = Path(onnx_path)
    meta = read_sidecar(onnx_path)
    digest = file_sha256(onnx_path)
    if digest != meta["onnx_sha256"]:
        raise CheckpointError(f"{onnx_path}: contents differ from its sidecar {sidecar_path(onnx_path).name} "
                              f"(sha256 {digest[:12]}…, recorded {meta['onnx_sha256'][:12]}…): corrupted, "
                              "truncated or replaced file; export it again")
    fp = meta["fingerprint"]
    if image_size is not None and list(fp["input_size"]) != [int(image_size[0]), int(image_size[1])]:
        w, h = fp["input_size"]
        raise CheckpointError(f"{onnx_path}: exported for input size {w}x{h}, but the image size asked for is "
                              f"{image_size[0]}x{image_size[1]} (use --size {w} {h} / image_size=({w}, {h}), "
                              "or export again)")
    if expected_fingerprint is not None:
        diff = fingerprint_mismatch(expected_fingerprint, fp)
        if diff:
            shown = describe_mismatch(expected_fingerprint, fp, diff)
            raise CheckpointError(f"{onnx_path}: exported from another model ({shown})")
    return meta


def _norm(v):
    return list(v) if isinstance(v, tuple) else v


# ---------------------------------------------------------------------------------------------
# The `structvpr export` workflow: export, check against PyTorch, optionally quantise, install.

FP32_MIN_COSINE = 0.999       # parity floor of the fp32 export against PyTorch (the bound)
INT8_MAX_RECALL_CHANGE = 0.01  # |ΔRecall@1| the int8 model should stay within (reported, not enforced)


def default_eval_dataset() -> Path | None:
    """The real Corridor set when it is on this machine ($STRUCTVPR_CORRIDOR or ../shared/data/corridor)."""
    env = os.environ.get("STRUCTVPR_CORRIDOR")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "corridor"
    return path if (path / "ground_truth.csv").is_file() else None


def evenly(items: list, n: int) -> list:
    """Up to ``n`` items spread evenly over ``items`` (order kept)."""
    if len(items) <= n:
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def parity(reference, candidate, paths, progress: bool = False) -> dict:
    """Cosine between two extractors' descriptors of the same images."""
    a = reference.embed_paths(paths, progress=progress)
    b = candidate.embed_paths(paths, progress=progress)
    cos = (a * b).sum(axis=1)
    return {"images": len(paths), "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}


def recall_change(fp32, int8, dataset, progress: bool = False) -> dict:
    """Recall@1 on ``dataset`` with fp32 and int8 descriptors (and int8 queries on an fp32 map)."""
    from .evaluate import recall_at_n

    db32, q32 = (fp32.embed_paths(paths, progress=progress) for paths in (dataset.database, dataset.queries))
    db8, q8 = (int8.embed_paths(paths, progress=progress) for paths in (dataset.database, dataset.queries))
    r32 = recall_at_n(db32, q32, dataset.positives, ns=(1,))[1]
    r8 = recall_at_n(db8, q8, dataset.positives, ns=(1,))[1]
    mixed = recall_at_n(db32, q8, dataset.positives, ns=(1,))[1]
    cos = np.concatenate([(db32 * db8).sum(1), (q32 * q8).sum(1)])
    return {"dataset": str(dataset.root), "synthetic": bool(getattr(dataset, "synthetic", False)),
            "num_queries": dataset.num_queries, "recall@1_fp32": r32, "recall@1_int8": r8, "delta": r8 - r32,
            "recall@1_int8_queries_fp32_map": mixed, "delta_mixed": mixed - r32,
            "descriptor_cosine_mean": float(cos.mean()), "descriptor_cosine_min": float(cos.min())}


def time_per_image_ms(extractor, image, repeats: int = 20) -> float:
    """Median wall time of ``extractor.embed([image])`` (after two warm-up runs)."""
    import time

    image = extractor._prepare_bgr(image)      # at the input size already: the resize is not timed
    for _ in range(2):
        extractor.embed([image])
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        extractor.embed([image])
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000.0)


def export_model_files(checkpoint: str | os.PathLike | None, out: str | os.PathLike, *,
                       image_size: tuple[int, int] = (640, 480), int8: bool = False,
                       calibration: list[Path] | None = None, int8_format: str = "qdq",
                       keep_float=None, parity_images: list[Path] | None = None,
                       eval_dataset=None, threads: int | None = None, progress: bool = True,
                       say=print) -> dict:
    """Export ``checkpoint`` (None = ImageNet weights) to ``out`` + sidecar; returns the sidecar.

    The fp32 export must match PyTorch (min cosine >= FP32_MIN_COSINE on ``parity_images``) or
    nothing is written. With ``int8`` the quantised model is written instead, calibrated on
    ``calibration``; its parity, speed and (with ``eval_dataset``) Recall@1 change are recorded.
    """
    import tempfile
    import time

    from .backends.int8 import DEFAULT_KEEP_FLOAT, quantize_int8
    from .extractor import Extractor
    from .images import read_image

    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise CheckpointError(f"{out}: the output file must end in .onnx")
    if not parity_images:
        raise CheckpointError("no images for the parity check (give --parity-images DIR)")
    if int8 and not calibration:
        raise CheckpointError("--int8 needs calibration images (--calibration DIR)")
    out.parent.mkdir(parents=True, exist_ok=True)
    reference = Extractor(checkpoint, device="cpu", backend="torch", image_size=image_size, channels_last=False)
    fp = reference.fingerprint
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out.parent) as tmp:
        fp32_path = Path(tmp) / "fp32.onnx"
        export_onnx(reference.model, fp32_path, image_size=image_size)
        write_sidecar(fp32_path, make_sidecar(fp32_path, fingerprint=fp, source=reference.source))
        ort32 = Extractor(checkpoint, device="cpu", backend="onnxruntime", image_size=image_size,
                          onnx_model=fp32_path, threads=threads)
        par32 = parity(reference, ort32, parity_images, progress)
        say(f"parity fp32 ONNX Runtime vs PyTorch on {par32['images']} real images: "
            f"cosine min {par32['min_cosine']:.6f} mean {par32['mean_cosine']:.6f} (bound >= {FP32_MIN_COSINE})")
        if not par32["min_cosine"] >= FP32_MIN_COSINE:
            raise CheckpointError(f"{out}: not written: the fp32 export does not match PyTorch (min cosine "
                                  f"{par32['min_cosine']:.6f} < {FP32_MIN_COSINE})")
        result = {"fp32": par32}
        final, precision, quant = fp32_path, "fp32", None
        if int8:
            int8_path = Path(tmp) / "int8.onnx"
            quant = quantize_int8(fp32_path, int8_path, calibration, image_size=image_size, fmt=int8_format,
                                  keep_float=DEFAULT_KEEP_FLOAT if keep_float is None else keep_float,
                                  progress=progress)
            write_sidecar(int8_path, make_sidecar(int8_path, fingerprint=fp, source=reference.source,
                                                  precision="int8", quantization=quant))
            ort8 = Extractor(checkpoint, device="cpu", backend="onnxruntime", image_size=image_size,
                             onnx_model=int8_path, threads=threads)
            result["int8"] = parity(reference, ort8, parity_images, progress)
            say(f"parity int8 vs PyTorch: cosine min {result['int8']['min_cosine']:.4f} "
                f"mean {result['int8']['mean_cosine']:.4f}")
            image = read_image(parity_images[0])
            time_per_image_ms(ort32, image, repeats=3)   # ONNX Runtime's spinning threads of the
            t32 = time_per_image_ms(ort32, image)         # parity runs settle first
            time.sleep(0.1)
            t8 = time_per_image_ms(ort8, image)
            result["speed"] = {"fp32_ms": t32, "int8_ms": t8, "speedup": t32 / t8,
                               "threads": ort32._runner.session.get_session_options().intra_op_num_threads}
            say(f"speed at {image_size[0]}x{image_size[1]}, batch 1: fp32 {t32:.1f} ms, int8 {t8:.1f} ms "
                f"({t32 / t8:.2f}x)")
            if eval_dataset is not None:
                rc = recall_change(ort32, ort8, eval_dataset, progress)
                result["recall"] = rc
                tag = " (synthetic)" if rc["synthetic"] else ""
                say(f"Recall@1 on {eval_dataset.name}{tag} ({rc['num_queries']} queries): "
                    f"fp32 {rc['recall@1_fp32']:.3f}, int8 {rc['recall@1_int8']:.3f} "
                    f"(change {100 * rc['delta']:+.1f} points); int8 queries on an fp32 map {rc['recall@1_int8_queries_fp32_map']:.3f} ({100 * rc['delta_mixed']:+.1f} points)")
                if abs(rc["delta"]) > INT8_MAX_RECALL_CHANGE:
                    say(f"warning: |change| > {100 * INT8_MAX_RECALL_CHANGE:.0f} point: check the int8 model on your "
                        "own data before deploying it")
            final, precision = int8_path, "int8"
        sidecar = make_sidecar(final, fingerprint=fp, source=reference.source, precision=precision,
                               quantization=quant, parity=result)
        os.replace(final, out)            # same directory: atomic
        write_sidecar(out, sidecar)
    from .atomic import fsync_dir

    fsync_dir(out.parent)
    _readable(out, sidecar_path(out))
    return sidecar


def _readable(*paths: Path) -> None:
    """Temporary files are created private (0600); a model to deploy gets the umask's mode like any file."""
    umask = os.umask(0)
    os.umask(umask)
    for p in paths:
        os.chmod(p, 0o666 & ~umask)
