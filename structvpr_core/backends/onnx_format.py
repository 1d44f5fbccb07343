"""The structvpr ONNX file format: graph names, the JSON sidecar, and the check before a file runs.

The graph maps a batch of ImageNet-normalised RGB images to unit-length descriptors.
Input ``image``: float32 (N, 3, H, W), RGB, ``(pixel / 255 - mean) / std`` with the ImageNet mean
and std, at the fixed size H×W the model was exported for (N is dynamic). Output
``descriptor``: float32 (N, D); a StructVPR++ student has a second output ``masks``, float32
(N, C, H/16, W/16), its soft label masks (runners take the descriptor by name). A normalised
float input, rather than raw uint8 pixels, is what
ONNX Runtime, TensorRT and OpenCV's dnn module all take without a custom pre-processing graph.

The sidecar ``MODEL.onnx.json`` records what a consumer needs and what the loader checks:
the model fingerprint (architecture, weights sha256, input size, descriptor dim: the same
fingerprint the PyTorch extractor has, so maps work across backends), the normalisation, the
precision (fp32 / int8), the ONNX file's own sha256 (corruption or replacement is caught),
the source checkpoint, ``query_encoder_for`` (a low-quality-query student's teacher fingerprint,
else null: an exported student stays a query encoder) and, from ``structvpr export``, the
measured parity.

This module sits with the runners (not with the ``structvpr export`` pipeline) because the
ONNX cache, the TensorRT profile and the int8 quantiser all need it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..atomic import atomic_write_json
from ..errors import CheckpointError
from ..fingerprint import FINGERPRINT_KEYS, describe_mismatch, fingerprint_mismatch, fingerprint_subset

FORMAT = "structvpr-onnx"
FORMAT_VERSION = 1
OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "descriptor"
MASKS_NAME = "masks"  # the StructVPR++ student's second output: soft label masks (N, C, H/16, W/16)
PRECISIONS = ("fp32", "fp16", "int8")


def is_onnx_file(path) -> bool:
    return path is not None and Path(path).suffix.lower() == ".onnx"


def sidecar_path(onnx_path: str | os.PathLike) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    p = Path(onnx_path)
    return p.with_name(p.name + ".json")


def input_description(image_size: tuple[int, int]) -> dict:
    from ..preprocess import IMAGENET_MEAN, IMAGENET_STD

    w, h = image_size
    return {
        "name": INPUT_NAME,
        "dtype": "float32",
        "layout": "NCHW",
        "shape": ["batch", 3, int(h), int(w)],
        "color": "RGB",
        "scale": "1/255",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "formula": "(pixel / 255 - mean) / std, per channel",
        "resize": "to W x H; cv2.INTER_AREA when shrinking both sides, else bilinear",
    }


def make_sidecar(
    onnx_path: str | os.PathLike,
    *,
    fingerprint: dict,
    source: dict,
    precision: str = "fp32",
    quantization: dict | None = None,
    parity: dict | None = None,
    query_encoder_for: dict | None = None,
) -> dict:
    """The sidecar of an ONNX file already on disk (hashes it)."""
    import onnx
    import torch

    from .. import __version__
    from ..weights import file_sha256

    fp = {k: fingerprint[k] for k in FINGERPRINT_KEYS}
    fp["input_size"] = [int(v) for v in fp["input_size"]]
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fingerprint": fp,
        "architecture": fp["architecture"],
        "descriptor_dim": int(fp["descriptor_dim"]),
        "input_size": fp["input_size"],
        "input": input_description(tuple(fp["input_size"])),
        "output": {
            "name": OUTPUT_NAME,
            "dtype": "float32",
            "shape": ["batch", int(fp["descriptor_dim"])],
            "l2_normalised": True,
        },
        "extra_outputs": _extra_outputs(onnx_path),
        "precision": precision,
        "quantization": quantization,
        "opset": OPSET,
        "onnx_sha256": file_sha256(onnx_path),
        "source": source,
        "query_encoder_for": None if query_encoder_for is None else fingerprint_subset(query_encoder_for),
        "exporter": {"structvpr": __version__, "torch": torch.__version__.split("+")[0], "onnx": onnx.__version__},
        "parity": parity,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _extra_outputs(onnx_path) -> list[dict]:
    """The graph's outputs besides the descriptor (the StructVPR++ masks), as name and shape."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    out = []
    for o in graph.output:
        if o.name == OUTPUT_NAME:
            continue
        dims = [d.dim_param or int(d.dim_value) for d in o.type.tensor_type.shape.dim]
        out.append({"name": o.name, "dtype": "float32", "shape": dims})
    return out


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
        raise CheckpointError(
            f"{side}: missing; {onnx_path.name} needs the sidecar written beside it by "
            "'structvpr export' (input size, normalisation, fingerprint)"
        )
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{side}: unreadable or corrupted sidecar ({type(e).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{side}: not a structvpr ONNX sidecar (format {found!r})")
    if not isinstance(meta.get("format_version"), int) or meta["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{side}: sidecar format version {meta.get('format_version')!r}, this structvpr "
            f"reads up to {FORMAT_VERSION}"
        )
    fp = meta.get("fingerprint")
    if (
        not isinstance(fp, dict)
        or any(k not in fp for k in FINGERPRINT_KEYS)
        or not isinstance(meta.get("onnx_sha256"), str)
        or meta.get("precision") not in PRECISIONS
    ):
        raise CheckpointError(f"{side}: sidecar lacks or has invalid fingerprint/onnx_sha256/precision")
    teacher = meta.setdefault("query_encoder_for", None)  # absent in sidecars written before students
    if teacher is not None and (not isinstance(teacher, dict) or any(k not in teacher for k in FINGERPRINT_KEYS)):
        raise CheckpointError(
            f"{side}: sidecar has an invalid query_encoder_for (expected a model fingerprint or null)"
        )
    return meta


def check_onnx_model(
    onnx_path: str | os.PathLike, *, expected_fingerprint: dict | None = None, image_size: tuple[int, int] | None = None
) -> dict:
    """Validate an exported model against its sidecar and the caller's expectations; returns the sidecar.

    CheckpointError (one line, naming the file) when the file is missing, its bytes differ from
    what the sidecar recorded (corrupted, truncated, replaced), it was exported for another
    input size, or from other weights / another architecture than ``expected_fingerprint``.
    """
    from ..weights import file_sha256

    onnx_path = Path(onnx_path)
    meta = read_sidecar(onnx_path)
    digest = file_sha256(onnx_path)
    if digest != meta["onnx_sha256"]:
        raise CheckpointError(
            f"{onnx_path}: contents differ from its sidecar {sidecar_path(onnx_path).name} "
            f"(sha256 {digest[:12]}…, recorded {meta['onnx_sha256'][:12]}…): corrupted, "
            "truncated or replaced file; export it again"
        )
    fp = meta["fingerprint"]
    if image_size is not None and list(fp["input_size"]) != [int(image_size[0]), int(image_size[1])]:
        w, h = fp["input_size"]
        raise CheckpointError(
            f"{onnx_path}: exported for input size {w}x{h}, but the image size asked for is "
            f"{image_size[0]}x{image_size[1]} (use --size {w} {h} / image_size=({w}, {h}), "
            "or export again)"
        )
    if expected_fingerprint is not None:
        diff = fingerprint_mismatch(expected_fingerprint, fp)
        if diff:
            shown = describe_mismatch(expected_fingerprint, fp, diff)
            raise CheckpointError(f"{onnx_path}: exported from another model ({shown})")
    return meta
