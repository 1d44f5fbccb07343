"""The network's input tensor from pixels: ImageNet normalisation into NCHW float32.

The one home of the ImageNet mean and std (RGB branch, training inputs, SegFormer).

The exported ONNX models take this tensor (their sidecar says so), so everything that feeds
them (the Extractor's ONNX Runtime path, int8 calibration, the benchmark) goes through here.
"""

from __future__ import annotations

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# x = (pixel / 255 - mean) / std = pixel * scale + bias, per channel.
_SCALE = np.array([1.0 / (255.0 * s) for s in IMAGENET_STD], dtype=np.float32)
_BIAS = np.array([-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)], dtype=np.float32)


def normalise_nchw(batch: np.ndarray, order: str = "rgb") -> np.ndarray:
    """(N, H, W, 3) uint8 pixels in ``order`` ("rgb"/"bgr") -> (N, 3, H, W) float32 RGB, ImageNet-normalised.

    Written plane by plane into the output: measured ~0.4 ms per 640×480 image, against ~10 ms
    for normalising in HWC and then transposing (the transpose copy dominates). Reading BGR
    planes directly saves the ~1 ms copy of a channel swap.
    """
    if batch.ndim != 4 or batch.shape[3] != 3:
        raise ValueError(f"expected (N, H, W, 3) pixels, got shape {batch.shape}")
    if order not in ("rgb", "bgr"):
        raise ValueError(f"order: expected rgb or bgr, got {order!r}")
    n, h, w, _ = batch.shape
    out = np.empty((n, 3, h, w), dtype=np.float32)
    for i in range(n):
        for c in range(3):
            plane = out[i, c]
            np.multiply(batch[i, :, :, c if order == "rgb" else 2 - c], _SCALE[c], out=plane, casting="unsafe")
            plane += _BIAS[c]
    return out
