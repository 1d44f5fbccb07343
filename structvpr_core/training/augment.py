"""Photometric augmentation of the RGB training images, for appearance change such as the seasons.

Opt-in (``data.augment`` in the training config; absent: no augmentation, the images exactly as
the run-time ``Extractor`` prepares them). When on, every image of a *training tuple* of the
RGB branch (stage I RGB, stage II student) gets, after the resize and before the ImageNet
normalisation, in this order:

1. brightness: the pixels scaled by a factor drawn from [1 - brightness, 1 + brightness];
2. contrast: the distance from the image's mean grey scaled by a factor from [1 - contrast, 1 + contrast];
3. saturation: the distance from each pixel's grey scaled by a factor from [1 - saturation, 1 + saturation];
4. hue: rotated by an angle from [-hue_deg, hue_deg] degrees;
5. grey: with probability ``grayscale``, the image replaced by its grey (colour is the cue a
   season changes most: green or brown in summer, white in winter).

Mining and validation never see augmented images. No geometric change: a place's positives
are defined by position, and the images of a route are taken looking the same way. The draws
come from a generator seeded by (run seed, epoch, image path): different each epoch, the same on
``--resume`` and in every DataLoader worker.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from .config import AugmentConfig

GREY_WEIGHTS_BGR = np.array([0.114, 0.587, 0.299], dtype=np.float32)  # ITU-R BT.601 luma, BGR order


class SeasonAugment:
    """``(bgr uint8 (H, W, 3), path) -> bgr uint8``, the augmentation of one image in one epoch (picklable)."""

    def __init__(self, cfg: AugmentConfig, seed: int, epoch: int):
        self.cfg = cfg
        self.seed, self.epoch = int(seed), int(epoch)

    def rng(self, path: str | Path) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, zlib.crc32(str(path).encode())])

    def __call__(self, bgr: np.ndarray, path: str | Path) -> np.ndarray:
        c, rng = self.cfg, self.rng(path)
        factors = rng.uniform(-1.0, 1.0, size=4) * [c.brightness, c.contrast, c.saturation, c.hue_deg]
        grey_draw = rng.random()
        x = bgr.astype(np.float32) * (1.0 + factors[0])
        mean = float((x @ GREY_WEIGHTS_BGR).mean())
        x = mean + (x - mean) * (1.0 + factors[1])
        grey = (x @ GREY_WEIGHTS_BGR)[..., None]
        x = grey + (x - grey) * (1.0 + factors[2])
        out = np.clip(np.rint(x), 0, 255).astype(np.uint8)
        if factors[3]:
            out = rotate_hue(out, factors[3])
        if grey_draw < c.grayscale:
            grey = np.clip(np.rint(out.astype(np.float32) @ GREY_WEIGHTS_BGR), 0, 255).astype(np.uint8)
            out = np.repeat(grey[..., None], 3, axis=2)
        return out


def rotate_hue(bgr: np.ndarray, degrees: float) -> np.ndarray:
    """``bgr`` with its hue rotated by ``degrees`` (OpenCV's 8-bit HSV: hue in 0..179, 2 degrees a step)."""
    import cv2

    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + round(float(degrees) / 2.0)) % 180).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
