"""Static int8 quantisation of an exported model with NNCF (OpenVINO's post-training quantiser).

The result is an ONNX file in QDQ form like ``int8.py``'s, so ONNX Runtime and OpenVINO both run
it (OpenVINO turns the QDQ pairs into its int8 kernels: VNNI / AMX where the CPU has them). What
NNCF adds over ONNX Runtime's quantiser, measured on Corridor (docs/performance.md): bias
correction of the quantised convolutions, and *accuracy control*: after a first quantisation it
ranks the quantised layers by how much each costs a metric on validation images and returns
the most costly ones to float until the metric is within ``max_drop`` of the fp32 model (or
``MAX_FLOAT_GROUPS`` were returned: each costs speed; the record says what was reached).

The metric here is the mean cosine between a frame's int8 and fp32 descriptors (not Recall@N:
it needs no labels, and a descriptor that keeps its direction keeps its neighbours), computed
on up to ``VALIDATION_IMAGES`` of the calibration images (as NNCF allows; spread evenly: the
search validates once per layer it tries, so this bounds its time), through ONNX Runtime on the
candidate model. ``keep_float`` ("stem": the RGB stem at half resolution, as ``int8.py``) is excluded from
quantisation from the start.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..atomic import fsync_file
from ..errors import ConfigError
from .onnx_format import OUTPUT_NAME

DEFAULT_MAX_DROP = 0.0005  # mean cosine to fp32 >= 0.9995 on the validation frames
VALIDATION_IMAGES = 32  # calibration frames (spread evenly) accuracy control validates on: it runs them per layer tried
# Accuracy control returns at most this many quantiser groups to float, ranked on RANKING_IMAGES:
# every group returned costs speed, and without a bound the search ran for over 40 minutes at
# 640x480 on 2 cores (re-ranking all 58 groups between rounds) and kept returning layers.
MAX_FLOAT_GROUPS = 8
RANKING_IMAGES = 16


def _prepared(paths: Sequence[Path], image_size: tuple[int, int], progress: bool) -> list[np.ndarray]:
    from tqdm import tqdm

    from ..images import read_image, resize_image
    from ..preprocess import normalise_nchw

    return [
        normalise_nchw(resize_image(read_image(p), image_size)[None], "bgr")
        for p in tqdm(paths, desc="int8 calibration images", unit="img", disable=not progress)
    ]


def _descriptors(model_bytes: bytes, inputs: list[np.ndarray], input_name: str) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    session = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    desc = np.concatenate([session.run([OUTPUT_NAME], {input_name: x})[0] for x in inputs])
    return desc / np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-12)


def quantize_int8_nncf(
    fp32_path: str | os.PathLike,
    out_path: str | os.PathLike,
    calibration: Sequence[Path],
    *,
    image_size: tuple[int, int],
    keep_float: Sequence[str] = ("stem",),
    max_drop: float | None = DEFAULT_MAX_DROP,
    progress: bool = True,
) -> dict:
    """Write the NNCF int8 model of ``fp32_path`` to ``out_path`` (atomically); returns its description.

    ``max_drop``: accuracy control's bound on the drop of the mean cosine to fp32 (None: plain
    post-training quantisation, no layer returned to float).
    """
    import nncf
    import onnx
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    if len(calibration) < 1:
        raise ConfigError("int8 calibration needs at least one image")
    unknown = set(keep_float) - {"stem"}
    if unknown:
        raise ConfigError(f"keep_float: NNCF quantisation knows only 'stem', got {sorted(unknown)}")
    if max_drop is not None and not 0 < max_drop < 1:
        raise ConfigError(f"max_drop: expected a cosine drop in (0, 1), got {max_drop}")
    model = onnx.load(str(fp32_path))
    input_name = model.graph.input[0].name
    inputs = _prepared(calibration, image_size, progress)
    reference = _descriptors(model.SerializeToString(), inputs, input_name)
    calibration_set = nncf.Dataset(list(range(len(inputs))), lambda i: {input_name: inputs[i]})
    ignored = nncf.IgnoredScope(patterns=["/blocks\\.0/.*"]) if "stem" in keep_float else None

    def mean_cosine(candidate, indices) -> tuple[float, list[float]]:
        idx = list(indices)
        desc = _descriptors(candidate.SerializeToString(), [inputs[i] for i in idx], input_name)
        per_image = (desc * reference[idx]).sum(axis=1)
        return float(per_image.mean()), [float(v) for v in per_image]

    validation = sorted({int(i) for i in np.linspace(0, len(inputs) - 1, min(VALIDATION_IMAGES, len(inputs)))})
    if max_drop is None:
        quantized = nncf.quantize(model, calibration_set, subset_size=len(inputs), ignored_scope=ignored)
    else:
        quantized = nncf.quantize_with_accuracy_control(
            model,
            calibration_set,
            nncf.Dataset(validation),
            validation_fn=mean_cosine,
            max_drop=max_drop,
            drop_type=nncf.DropType.ABSOLUTE,
            subset_size=len(inputs),
            ignored_scope=ignored,
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                max_num_iterations=MAX_FLOAT_GROUPS, ranking_subset_size=min(RANKING_IMAGES, len(validation))
            ),
        )
    achieved, _ = mean_cosine(quantized, validation)
    quantized_ops = sum(1 for n in quantized.graph.node if n.op_type == "QuantizeLinear")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".int8-", dir=out_path.parent) as tmp:
        written = Path(tmp) / "int8.onnx"
        onnx.save(quantized, str(written))
        fsync_file(written)
        shutil.move(str(written), str(out_path))  # same directory: an atomic rename
    return {
        "method": "nncf",
        "format": "QDQ",
        "nncf": nncf.__version__,
        "calibration": {"images": len(calibration), "statistics": "NNCF defaults (min/max with bias correction)"},
        "accuracy_control": None
        if max_drop is None
        else {
            "metric": "mean cosine to fp32 on validation images (calibration images, spread evenly)",
            "validation_images": len(validation),
            "max_drop": max_drop,
            "max_float_groups": MAX_FLOAT_GROUPS,
        },
        "mean_cosine_to_fp32_on_validation": achieved,
        "kept_float": list(keep_float),
        "quantize_linear_nodes": quantized_ops,
    }
