"""Reading and normalising images to 8-bit BGR, the one form the rest of the core takes.

Accepts grey, BGR, BGRA, 16-bit and float images; rejects empty or degenerate ones with an
``ImageError`` that names the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def to_bgr8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Return ``image`` as a contiguous H×W×3 uint8 BGR array.

    Grey images are replicated to three channels, a 4th (alpha) channel is dropped, 16-bit
    images are scaled by 1/257 (the full 16-bit range maps onto the 8-bit range), float
    images are taken to lie in [0, 1].
    """
    if not isinstance(image, np.ndarray):
        raise ImageError(f"{name}: expected a numpy array, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ImageError(f"{name}: unsupported image shape {image.shape} (expected H×W, H×W×3 or H×W×4)")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"{name}: image has zero size {image.shape[:2]}")
    if image.dtype == np.uint8:
        pass
    elif image.dtype == np.uint16:
        image = (image.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    elif np.issubdtype(image.dtype, np.floating):
        if not np.all(np.isfinite(image)):
            raise ImageError(f"{name}: float image contains NaN or infinity")
        image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    else:
        raise ImageError(f"{name}: unsupported pixel type {image.dtype} (expected uint8, uint16 or float)")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    return np.ascontiguousarray(image)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as H×W×3 uint8 BGR (any bit depth or channel count on disk)."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such image file")
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise ImageError(f"{path}: file is empty")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageError(f"{path}: not a readable image (unknown format or corrupted data)")
    return to_bgr8(image, name=str(path))


def list_images(folder: str | Path, *, recursive: bool = False, exclude: str | Path | None = None) -> list[Path]:
    """Image files in ``folder`` (``recursive``: anywhere below it), sorted by path.

    ``exclude``: a directory whose contents are left out (e.g. an output tree inside the input).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"{folder}: not a directory")
    found = folder.rglob("*") if recursive else folder.iterdir()
    images = sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if exclude is not None:
        skip = Path(exclude).resolve()
        images = [p for p in images if p.resolve() != skip and skip not in p.resolve().parents]
    return images


def resize_image(image_bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to ``size`` = (W, H): area averaging when shrinking (no aliasing), bilinear otherwise."""
    import cv2

    h, w = image_bgr.shape[:2]
    if (w, h) == tuple(size):
        return image_bgr
    shrinking = size[0] <= w and size[1] <= h
    return cv2.resize(image_bgr, tuple(size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
