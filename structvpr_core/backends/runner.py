"""The one contract every inference runner keeps, whatever the runtime.

``runner.run(batch) -> descriptors``

- ``batch``: ``np.ndarray`` of ``uint8``, shape ``(N, H, W, 3)``, colour order **BGR** (what
  ``images.read_image`` / ``images.to_bgr8`` give), already at the model's input size (W, H);
- returns ``np.ndarray`` of ``float32``, shape ``(N, D)``, every row L2-normalised (in float32,
  also when the network ran in fp16 or int8, whose outputs are only approximately unit length).

What comes before a runner (decoding, any image kind to BGR uint8, the resize) is
``Extractor.prepare``; what happens inside (BGR -> RGB, ImageNet normalisation with the
constants of ``structvpr_core.preprocess``, batching per device) is the runner's business, so
the PyTorch runner may normalise on its device and the ONNX Runtime one on the CPU with
``preprocess.normalise_nchw``. Implemented by ``torch_backend.TorchRunner`` and
``ort_backend.OrtRunner`` (which also drives the CUDA and TensorRT execution providers).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Runner(Protocol):
    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 BGR at the input size -> (N, D) float32, rows L2-normalised."""
        ...


def l2_normalise(descriptors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, in float32 (a zero row stays zero)."""
    desc = np.asarray(descriptors, dtype=np.float32)
    return desc / np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-12)
