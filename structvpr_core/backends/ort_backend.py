"""ONNX Runtime inference of an exported model (CPU; CUDA and TensorRT providers untested here).

``OrtRunner.run`` keeps the runner contract (``runner.py``): BGR uint8 batches in, normalised
here with ``preprocess.normalise_nchw`` into the tensor the graph takes (see ``onnx_format``).
Session options: all graph optimisations, ``intra_op`` threads as asked (default: PyTorch's
thread count, so ``torch.set_num_threads`` and ``OMP_NUM_THREADS`` keep meaning what they
mean), one inter-op thread, sequential execution (one small graph: parallel branches are rare).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, ConfigError
from ..preprocess import normalise_nchw
from .onnx_format import MASKS_NAME, OUTPUT_NAME
from .providers import CPU_EP
from .runner import l2_normalise


def default_threads() -> int:
    """PyTorch's thread count when PyTorch is already imported (so ``torch.set_num_threads`` keeps its
    meaning), else ``$OMP_NUM_THREADS``, else the cores: never imports torch just to ask."""
    import sys

    if "torch" in sys.modules:
        return max(1, int(sys.modules["torch"].get_num_threads()))
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS") or 0) or os.cpu_count() or 1)
    except ValueError:
        return max(1, os.cpu_count() or 1)


def make_session(onnx_path: str | os.PathLike, providers, threads: int | None = None):
    """An InferenceSession; CheckpointError naming the file when ONNX Runtime cannot load it."""
    import onnxruntime as ort

    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads: expected a positive integer or None, got {threads!r}")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or default_threads()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3  # errors only: ORT's warnings about unused initialisers are noise here
    try:
        return ort.InferenceSession(str(onnx_path), so, providers=list(providers))
    except Exception as e:  # ORT raises its own Fail/InvalidGraph/... types for bad files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{onnx_path}: ONNX Runtime cannot load this model ({first[:200]})") from None


class OrtRunner:
    """Runs (N, H, W, 3) uint8 BGR batches through a session checked against the expected shapes.

    After construction: ``providers`` (in order, as the session registered them), ``threads``
    (its intra-op thread count), ``session``.
    """

    def __init__(
        self,
        onnx_path: str | os.PathLike,
        *,
        providers,
        image_size: tuple[int, int],
        dim: int,
        threads: int | None = None,
    ) -> None:
        self.path = Path(onnx_path)
        self.session = make_session(self.path, providers, threads)
        self.providers = list(self.session.get_providers())
        self.threads = int(self.session.get_session_options().intra_op_num_threads)
        # One image per run on the CPU, as with PyTorch: larger batches overflow the caches.
        self._per_image = self.providers[:1] == [CPU_EP]
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        by_name = {o.name: o for o in outputs}
        if len(inputs) != 1 or OUTPUT_NAME not in by_name:
            raise CheckpointError(
                f"{self.path}: expected one input and an output named {OUTPUT_NAME!r}, the graph has "
                f"{len(inputs)} inputs and outputs {sorted(by_name)}"
            )
        w, h = image_size
        shape = list(inputs[0].shape)
        if len(shape) != 4 or shape[1:] != [3, int(h), int(w)]:
            raise CheckpointError(
                f"{self.path}: graph input has shape {shape}, expected [batch, 3, {h}, {w}] (input size {w}x{h})"
            )
        out_shape = list(by_name[OUTPUT_NAME].shape)
        if len(out_shape) != 2 or out_shape[1] != int(dim):
            raise CheckpointError(
                f"{self.path}: graph output has shape {out_shape}, expected [batch, {dim}] "
                "(descriptor dim of its sidecar)"
            )
        # The descriptor is taken by name: a StructVPR++ export has the masks as a second output.
        self.input_name, self.output_name = inputs[0].name, OUTPUT_NAME
        masks = by_name.get(MASKS_NAME)
        self.mask_channels = int(masks.shape[1]) if masks is not None and isinstance(masks.shape[1], int) else 0

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 BGR -> (N, D) float32 L2-normalised descriptors."""
        x = normalise_nchw(batch, "bgr")  # reads the BGR planes directly: no channel-swap copy
        step = 1 if self._per_image else len(x)
        desc = np.concatenate(
            [
                self.session.run([self.output_name], {self.input_name: x[i : i + step]})[0]
                for i in range(0, len(x), step)
            ]
        )
        # The graph normalises already; int8 and fp16 outputs are only approximately unit length.
        return l2_normalise(desc)

    def run_masks(self, batch: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 BGR -> (N, C, H/16, W/16) float32 soft label masks (a StructVPR++ export only)."""
        if not self.mask_channels:
            raise CheckpointError(f"{self.path}: the graph has no {MASKS_NAME!r} output")
        x = normalise_nchw(batch, "bgr")
        step = 1 if self._per_image else len(x)
        return np.concatenate(
            [self.session.run([MASKS_NAME], {self.input_name: x[i : i + step]})[0] for i in range(0, len(x), step)]
        ).astype(np.float32, copy=False)
