"""Static int8 quantisation of an exported model with ONNX Runtime's quantiser.

Per-channel symmetric int8 weights, per-tensor asymmetric uint8 activations (U8S8: the fast
path of ONNX Runtime's x86 kernels, VNNI where the CPU has it), MinMax calibration on real images
of the deployment's kind. MinMax, not percentile or entropy: the descriptor is a global *max*
pool, so clipping the largest activations would flatten exactly the values it keeps.

Layers kept in float (``keep_float``), chosen by measurement on Corridor at 640×480
(docs/performance.md): the first stage (``stem``: the RGB input conv and the first inverted
residual, at half resolution). Quantising it cost most of the descriptor fidelity (mean cosine
to fp32 0.9946 with it, 0.9983 without) for ~7 % of the int8 time. ``heads`` (the three layers
whose outputs are max-pooled into the descriptor) is available but measured no gain.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..atomic import fsync_file
from ..errors import ConfigError
from .onnx_format import INPUT_NAME

FORMATS = ("qdq", "qoperator")
KEEP_FLOAT = ("stem", "heads")
DEFAULT_KEEP_FLOAT = ("stem",)


def float_nodes(model, keep: Sequence[str]) -> list[str]:
    """Names of the nodes to leave unquantised in an onnx ModelProto, for the given policies.

    ``stem``: the first stage (MobileNetV2 ``features[0:2]``, stride 2), i.e. the nodes the
    exporter names ``/blocks.0/...`` (``onnx_export.export_onnx`` exports ``RGBBranch.blocks``).
    ``heads``: the producers of the tensors that are max-pooled (``ReduceMax`` inputs), and for
    a residual ``Add`` also its convolution branch (found in the graph).
    """
    unknown = set(keep) - set(KEEP_FLOAT)
    if unknown:
        raise ConfigError(f"keep_float: unknown policies {sorted(unknown)} (known: {', '.join(KEEP_FLOAT)})")
    nodes = list(model.graph.node)
    producer = {out: n for n in nodes for out in n.output}
    names: list[str] = []
    if "stem" in keep:
        names += [n.name for n in nodes if n.name.startswith("/blocks.0/")]
    if "heads" in keep:
        for n in nodes:
            if n.op_type != "ReduceMax":
                continue
            p = producer.get(n.input[0])
            if p is None:
                continue
            names.append(p.name)
            if p.op_type == "Add":
                names += [producer[i].name for i in p.input if i in producer and producer[i].op_type == "Conv"]
    return sorted(set(names))


class ImageCalibrationReader:
    """Feeds calibration images (files) to the quantiser as normalised NCHW tensors, one at a time."""

    def __init__(self, paths: Sequence[Path], image_size: tuple[int, int], input_name: str, progress: bool = True):
        from tqdm import tqdm

        self.paths, self.size, self.input_name = list(paths), image_size, input_name
        self._i = 0
        self._bar = tqdm(total=len(self.paths), desc="int8 calibration", unit="img", disable=not progress)

    def get_next(self):
        from ..images import read_image, resize_image
        from ..preprocess import normalise_nchw

        if self._i >= len(self.paths):
            self._bar.close()
            return None
        path = self.paths[self._i]
        self._i += 1
        self._bar.update(1)
        bgr = resize_image(read_image(path), self.size)
        return {self.input_name: normalise_nchw(bgr[None], "bgr")}  # the planes the Extractor's runner feeds


def quantize_int8(
    fp32_path: str | os.PathLike,
    out_path: str | os.PathLike,
    calibration: Sequence[Path],
    *,
    image_size: tuple[int, int],
    fmt: str = "qdq",
    keep_float: Sequence[str] = DEFAULT_KEEP_FLOAT,
    progress: bool = True,
) -> dict:
    """Write the int8 model of ``fp32_path`` to ``out_path`` (atomically); returns its description."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if fmt not in FORMATS:
        raise ConfigError(f"int8 format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if len(calibration) < 1:
        raise ConfigError("int8 calibration needs at least one image")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".int8-", dir=out_path.parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        # Shape inference and graph clean-up first, as ONNX Runtime's quantisation guide asks.
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        excluded = float_nodes(onnx.load(str(pre)), keep_float)
        quantized = Path(tmp) / "int8.onnx"
        quantize_static(
            str(pre),
            str(quantized),
            ImageCalibrationReader(calibration, image_size, INPUT_NAME, progress),
            quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            # MinMax keeps per-tensor (min, max) per image, not activations: memory stays small.
            # (Not CalibMaxIntermediateOutputs: in onnxruntime 1.23 it drops the ranges collected.)
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=excluded,
        )
        fsync_file(quantized)
        shutil.move(str(quantized), str(out_path))  # same directory: an atomic rename
    return {
        "method": "static",
        "format": fmt.upper() if fmt == "qdq" else "QOperator",
        "weights": "int8 symmetric, per channel",
        "activations": "uint8 asymmetric, per tensor",
        "calibration": {"method": "MinMax", "images": len(calibration)},
        "kept_float": list(keep_float),
        "float_nodes": excluded,
        "onnxruntime": onnxruntime.__version__,
    }
