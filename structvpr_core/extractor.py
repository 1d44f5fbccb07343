"""The run-time descriptor extractor: images in, L2-normalised RGB-branch descriptors out.

Only the RGB branch runs at deployment (StructVPR distils the segmentation knowledge into it).
Images of any size and kind ``images.to_bgr8`` accepts (grey, colour, alpha, 16-bit, float) are
resized to ``image_size`` (W, H; 640×480 as in the paper; INTER_AREA when shrinking, bilinear
when enlarging), normalised with the ImageNet mean and std and embedded in batches.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import ConfigError, ImageError
from .images import read_image, to_bgr8

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
COLORS = ("bgr", "rgb", "gray", "grey")


def resolve_device(device: str):
    """``auto`` → cuda when available, else cpu; an explicit cuda without CUDA is a ConfigError."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device: expected auto, cpu or cuda[:N], got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {device!r} requested but CUDA is not available on this machine "
                              f"(use --device cpu or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device: {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type != "cpu":
        raise ConfigError(f"device: expected auto, cpu or cuda[:N], got {device!r}")
    return dev


def resize_image(image_bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to ``size`` = (W, H): area averaging when shrinking (no aliasing), bilinear otherwise."""
    import cv2

    h, w = image_bgr.shape[:2]
    if (w, h) == tuple(size):
        return image_bgr
    shrinking = size[0] <= w and size[1] <= h
    return cv2.resize(image_bgr, tuple(size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


class Extractor:
    """Embeds images with the StructVPR RGB branch (a checkpoint, or the ImageNet initialisation).

    ``batch_size``: images decoded and prepared per step, and per forward pass on CUDA; on the CPU
    the network runs one image at a time (faster there, see ``_forward``).
    ``channels_last``: memory format of the forward pass; ``None`` (default) uses it on the CPU,
    where it measured ~20 % less CPU time per 640×480 image than the default layout.
    """

    def __init__(self, checkpoint: str | os.PathLike | None = None, *, device: str = "auto",
                 image_size: tuple[int, int] = (640, 480), batch_size: int = 8, half: bool = False,
                 channels_last: bool | None = None) -> None:
        import torch

        from .checkpoint import build_model_from_checkpoint
        from .models import RGBBranch, build_rgb_branch
        from .models.fusion import fuse_conv_bn
        from .weights import file_sha256, verify_imagenet_weights

        if (len(image_size) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                             for v in image_size) or min(image_size) < 1):
            raise ConfigError(f"image_size: expected (W, H) of positive integers, got {image_size!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ConfigError(f"batch_size: expected a positive integer, got {batch_size!r}")
        self.device = resolve_device(device)
        if half and self.device.type != "cuda":
            raise ConfigError(f"half: half precision is only supported on CUDA, not on device {self.device.type!r}")
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.batch_size = int(batch_size)
        self.half = bool(half)
        self.channels_last = (self.device.type == "cpu") if channels_last is None else bool(channels_last)

        if checkpoint is None:
            model = build_rgb_branch(pretrained=True)
            weights_file = verify_imagenet_weights()
        else:
            weights_file = Path(checkpoint)
            model = build_model_from_checkpoint(weights_file, expected_architecture=RGBBranch.architecture)
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.dim = int(model.dim)
        self.fingerprint = {
            "architecture": model.architecture,
            "weights_sha256": file_sha256(weights_file),
            "input_size": [self.image_size[0], self.image_size[1]],
            "descriptor_dim": self.dim,
        }
        model = fuse_conv_bn(model.eval()).to(self.device)
        if self.half:
            model = model.half()
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self._dtype = torch.float16 if self.half else torch.float32
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1) * 255.0

    def __repr__(self) -> str:
        return (f"Extractor({self.fingerprint['architecture']}, dim={self.dim}, device={self.device}, "
                f"image_size={self.image_size}, checkpoint={self.checkpoint})")

    def prepare(self, image: np.ndarray, color: str = "bgr", name: str = "image") -> np.ndarray:
        """One image as H×W×3 uint8 **RGB** at ``image_size`` (the network's input before normalising)."""
        if color not in COLORS:
            raise ConfigError(f"color: expected one of {list(COLORS)}, got {color!r}")
        is_colour = isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] in (3, 4)
        bgr = to_bgr8(image, name=name)
        if color == "rgb" and is_colour:
            bgr = bgr[:, :, ::-1]  # the caller's RGB(A) went through to_bgr8 unchanged: swap it now
        return np.ascontiguousarray(resize_image(bgr, self.image_size)[:, :, ::-1])

    def _forward(self, batch_rgb: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(batch_rgb).to(self.device, non_blocking=True)
            x = x.permute(0, 3, 1, 2).float()  # uint8 travels to the GPU, not float
            x = ((x - self._mean) / self._std).to(self._dtype)  # normalise in float32, then cast
            x = x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
            # On the CPU one image per forward pass is fastest: at 640×480 a batch's activations
            # overflow the caches (measured: 8 images cost ~2× the CPU time per image of 1).
            step = 1 if self.device.type == "cpu" else len(x)
            desc = torch.cat([self.model(x[i:i + step]) for i in range(0, len(x), step)]).float()
            # Renormalise in float32: half-precision outputs are only approximately unit length.
            desc = torch.nn.functional.normalize(desc, dim=1)
        return desc.cpu().numpy().astype(np.float32, copy=False)

    def embed(self, images: Sequence[np.ndarray], color: str = "bgr") -> np.ndarray:
        """Descriptors (N, dim) float32, L2-normalised, of a sequence of images (any size/kind)."""
        if isinstance(images, np.ndarray) and images.ndim in (2, 3) and images.dtype != object:
            raise ImageError("images: expected a sequence of images; wrap a single image in a list")
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            batch = np.stack([self.prepare(im, color, name=f"image {start + i}") for i, im in enumerate(chunk)])
            out[start:start + len(chunk)] = self._forward(batch)
        return out

    def embed_paths(self, paths: Sequence[str | os.PathLike], progress: bool = True) -> np.ndarray:
        """Descriptors (N, dim) of image files, in order; an unreadable file raises ImageError naming it."""
        from tqdm import tqdm

        paths = [Path(p) for p in paths]
        out = np.zeros((len(paths), self.dim), dtype=np.float32)
        with tqdm(total=len(paths), desc="embed", unit="img", disable=not progress) as bar:
            for start in range(0, len(paths), self.batch_size):
                chunk = paths[start:start + self.batch_size]
                batch = np.stack([self.prepare(read_image(p), "bgr", name=str(p)) for p in chunk])
                out[start:start + len(chunk)] = self._forward(batch)
                bar.update(len(chunk))
        return out
