"""OpenVINO inference of an exported model on the CPU (its CPU plugin).

``OvRunner.run`` keeps the runner contract (``runner.py``). OpenVINO reads the same ONNX file as
ONNX Runtime (fp32, or an int8 QDQ export, whose quantised parts it runs with its int8 kernels:
VNNI / AMX where the CPU has them). Its *inference precision* is a run-time choice on the same
file: ``fp32`` (exact, set explicitly: on CPUs with AMX or AVX-512 BF16 OpenVINO's own default
is bf16), ``bf16`` or ``fp16`` where the CPU supports them (``cpu_precisions``). A reduced
precision moves the descriptors a little; whether it is allowed to run is decided by the parity
check against PyTorch (``backends.runtime_choice``), not here.

Compile options: a latency hint (one stream, one request in flight: the node embeds one frame at
a time), ``threads`` inference threads (default: PyTorch's count when installed, else the cores,
as ONNX Runtime).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, ConfigError
from ..preprocess import normalise_nchw
from .onnx_format import MASKS_NAME, OUTPUT_NAME
from .runner import l2_normalise

PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}  # ours -> OpenVINO's element type


def openvino_version() -> str | None:
    """The installed OpenVINO's version, or None when it is not installed."""
    try:
        import openvino
    except ImportError:
        return None
    return str(openvino.__version__)


def cpu_precisions() -> tuple[str, ...] | None:
    """The inference precisions OpenVINO's CPU plugin offers here, in our names (fp32 first), or
    None when OpenVINO is not installed. bf16 needs AVX-512 BF16 or AMX, fp16 AVX-512 FP16 or AMX-FP16."""
    try:
        import openvino
    except ImportError:
        return None
    caps = set(openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return tuple(p for p, cap in (("fp32", "FP32"), ("bf16", "BF16"), ("fp16", "FP16")) if cap in caps)


def _default_threads() -> int:
    from .ort_backend import default_threads

    return default_threads()


class OvRunner:
    """Runs (N, H, W, 3) uint8 BGR batches through a model compiled for OpenVINO's CPU plugin.

    After construction: ``precision`` (fp32 | bf16 | fp16: the inference precision asked for),
    ``threads``, ``mask_channels`` (C of a StructVPR++ export's masks output, else 0), ``version``.
    """

    def __init__(
        self,
        onnx_path: str | os.PathLike,
        *,
        image_size: tuple[int, int],
        dim: int,
        threads: int | None = None,
        precision: str = "fp32",
    ) -> None:
        import openvino

        if precision not in PRECISION_HINTS:
            raise ConfigError(f"OpenVINO precision: expected one of {', '.join(PRECISION_HINTS)}, got {precision!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ConfigError(f"threads: expected a positive integer or None, got {threads!r}")
        offered = cpu_precisions() or ()
        if precision not in offered:
            raise ConfigError(
                f"OpenVINO precision {precision}: this CPU offers {', '.join(offered)} "
                "(bf16 needs AVX-512 BF16 or AMX, fp16 AVX-512 FP16 or AMX-FP16)"
            )
        self.path = Path(onnx_path)
        self.precision = precision
        self.threads = int(threads or _default_threads())
        self.version = str(openvino.__version__)
        core = openvino.Core()
        try:
            model = core.read_model(str(self.path))
        except Exception as e:  # OpenVINO raises RuntimeError subclasses with multi-line texts
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"{self.path}: OpenVINO cannot read this model ({first[:200]})") from None
        self._check_shapes(model, image_size, dim)
        compiled = core.compile_model(
            model,
            "CPU",
            {
                "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision],
                "INFERENCE_NUM_THREADS": self.threads,
                "PERFORMANCE_HINT": "LATENCY",
            },
        )
        self._request = compiled.create_infer_request()
        self._descriptor = compiled.output(OUTPUT_NAME)
        names = {name for out in compiled.outputs for name in out.get_names()}
        self._masks = compiled.output(MASKS_NAME) if MASKS_NAME in names else None

    def _check_shapes(self, model, image_size: tuple[int, int], dim: int) -> None:
        inputs = model.inputs
        outputs = {name: out for out in model.outputs for name in out.get_names()}
        if len(inputs) != 1 or OUTPUT_NAME not in outputs:
            raise CheckpointError(
                f"{self.path}: expected one input and an output named {OUTPUT_NAME!r}, the graph has "
                f"{len(inputs)} inputs and outputs {sorted(outputs)}"
            )
        w, h = image_size
        shape = inputs[0].get_partial_shape()
        dims = [d.get_length() if d.is_static else None for d in shape]
        if len(dims) != 4 or dims[1:] != [3, int(h), int(w)]:
            raise CheckpointError(
                f"{self.path}: graph input has shape {dims}, expected [batch, 3, {h}, {w}] (input size {w}x{h})"
            )
        out = outputs[OUTPUT_NAME].get_partial_shape()
        if len(out) != 2 or not out[1].is_static or out[1].get_length() != int(dim):
            raise CheckpointError(
                f"{self.path}: graph output has shape {out}, expected [batch, {dim}] (descriptor dim of its sidecar)"
            )
        masks = outputs.get(MASKS_NAME)
        channels = masks.get_partial_shape()[1] if masks is not None else None
        self.mask_channels = channels.get_length() if channels is not None and channels.is_static else 0

    def _infer(self, x: np.ndarray, output) -> np.ndarray:
        # One image per request, as the other CPU runners: larger batches overflow the caches.
        return np.concatenate([self._request.infer({0: x[i : i + 1]})[output] for i in range(len(x))])

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 BGR -> (N, D) float32 L2-normalised descriptors."""
        desc = self._infer(normalise_nchw(batch, "bgr"), self._descriptor)
        # The graph normalises already; bf16, fp16 and int8 outputs are only approximately unit length.
        return l2_normalise(desc)

    def run_masks(self, batch: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 BGR -> (N, C, H/16, W/16) float32 soft label masks (a StructVPR++ export only)."""
        if self._masks is None:
            raise CheckpointError(f"{self.path}: the graph has no {MASKS_NAME!r} output")
        return self._infer(normalise_nchw(batch, "bgr"), self._masks).astype(np.float32, copy=False)
