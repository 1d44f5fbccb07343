"""Reading and normalising images to 8-bit BGR, the one form the rest of the core takes.

Accepts grey, BGR, BGRA, 16-bit and float images; rejects empty or degenerate ones with an
``ImageError`` that names the file.

Decompression bombs: an encoded image's header claims its size, and decoding allocates it
(a 69-byte PNG may claim 40000×30000 pixels, 3.6 GB). ``decode_image`` (used by ``read_image``
and for compressed image messages) reads the claimed size from the header first
(``probe_image_size``: PNG, JPEG, GIF, BMP, WebP, TIFF, PNM/PAM/PFM, Sun raster, OpenEXR,
Radiance HDR, JPEG 2000, AVIF) and refuses more than ``max_pixels`` (default ``max_image_pixels()``:
``$STRUCTVPR_MAX_IMAGE_PIXELS`` or 100 million) before OpenCV allocates anything. Formats the
probe does not know are left to OpenCV's own limit, which ``limit_decoder_pixels`` lowers to
the same value when called before OpenCV is imported (the ``structvpr`` CLI and the node do).
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import numpy as np

from .errors import ConfigError, ImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

DEFAULT_MAX_IMAGE_PIXELS = 100_000_000  # 100 MP: ~300 MB as 8-bit BGR; phones reach 50 MP
MAX_PIXELS_ENV = "STRUCTVPR_MAX_IMAGE_PIXELS"
# The network input size (W, H): below 32 the backbone's stride-32 feature map is empty; above
# 8192 one image costs gigabytes of activations (a typo such as --size 100000 100000 asked 30 GB).
MIN_INPUT_SIDE, MAX_INPUT_SIDE = 32, 8192


def check_input_size(size, name: str = "image_size") -> tuple[int, int]:
    """``size`` as a (W, H) tuple of ints in MIN_INPUT_SIDE..MAX_INPUT_SIDE; ConfigError naming ``name``."""
    try:
        w, h = size
        ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (w, h))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"{name}: expected W and H as two integers, got {size!r}")
    if not (MIN_INPUT_SIDE <= w <= MAX_INPUT_SIDE and MIN_INPUT_SIDE <= h <= MAX_INPUT_SIDE):
        raise ConfigError(
            f"{name}: W and H must be in {MIN_INPUT_SIDE}..{MAX_INPUT_SIDE} pixels, got {int(w)} {int(h)}"
        )
    return int(w), int(h)


def max_image_pixels() -> int:
    """The largest image (W·H) decoded: ``$STRUCTVPR_MAX_IMAGE_PIXELS``, else DEFAULT_MAX_IMAGE_PIXELS."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"${MAX_PIXELS_ENV}: expected a positive number of pixels, got {text!r}")
    return value


def limit_decoder_pixels(max_pixels: int | None = None) -> None:
    """Lower OpenCV's own decoding limit (the backstop for formats ``probe_image_size`` does not
    know) to ``max_pixels``. Effective only before OpenCV is first imported in the process (it
    reads ``OPENCV_IO_MAX_IMAGE_PIXELS`` once); a value the user set is kept."""
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(max_pixels or max_image_pixels()))


# -- header probe ------------------------------------------------------------------------------

_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PNM_TOKEN = re.compile(rb"(?:\s|#[^\n]*\n?)*(\S+)")


def _jpeg_size(b) -> tuple[int, int] | None:
    i, n = 2, len(b)
    while i < n:
        if b[i] != 0xFF:  # garbage between segments: libjpeg skips to the next marker, so do we
            i += 1
            continue
        while i < n and b[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            return None
        marker = b[i]
        i += 1
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # standalone markers
            continue
        if marker == 0xD9 or i + 2 > n:  # end of image before a frame header
            return None
        length = struct.unpack_from(">H", b, i)[0]
        if marker in _JPEG_SOF:
            if i + 7 > n:
                return None
            h, w = struct.unpack_from(">HH", b, i + 3)
            return w, h
        i += max(length, 2)
    return None


def _tiff_size(b) -> tuple[int, int] | None:
    order = "<" if bytes(b[:2]) == b"II" else ">"
    if len(b) < 8:
        return None
    ifd = struct.unpack_from(order + "I", b, 4)[0]
    if ifd + 2 > len(b):
        return None
    count = struct.unpack_from(order + "H", b, ifd)[0]
    size: dict[int, int] = {}
    for k in range(count):
        e = ifd + 2 + 12 * k
        if e + 12 > len(b):
            break
        tag, typ = struct.unpack_from(order + "HH", b, e)
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT or LONG
            size[tag] = struct.unpack_from(order + ("H" if typ == 3 else "I"), b, e + 8)[0]
    return (size[256], size[257]) if len(size) == 2 else None


def _pnm_size(b: bytes) -> tuple[int, int] | None:
    if b[:2] == b"P7":  # PAM: WIDTH w / HEIGHT h lines
        head = b[:4096]
        w, h = re.search(rb"\bWIDTH\s+(\d+)", head), re.search(rb"\bHEIGHT\s+(\d+)", head)
        return (int(w.group(1)), int(h.group(1))) if w and h else None
    tokens, pos = [], 2
    while len(tokens) < 2:
        m = _PNM_TOKEN.match(b, pos, min(len(b), 4096))
        if m is None:
            return None
        tokens.append(m.group(1))
        pos = m.end()
    try:
        return int(tokens[0]), int(tokens[1])
    except ValueError:
        return None


def _webp_size(b: bytes) -> tuple[int, int] | None:
    kind = b[12:16]
    if kind == b"VP8X" and len(b) >= 30:
        return 1 + int.from_bytes(b[24:27], "little"), 1 + int.from_bytes(b[27:30], "little")
    if kind == b"VP8L" and len(b) >= 25:
        bits = int.from_bytes(b[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if kind == b"VP8 " and len(b) >= 30:
        w, h = struct.unpack_from("<HH", b, 26)
        return w & 0x3FFF, h & 0x3FFF
    return None


def _exr_size(b: bytes) -> tuple[int, int] | None:
    i = b.find(b"dataWindow\0box2i\0")
    if i < 0 or i + 37 > len(b):
        return None
    xmin, ymin, xmax, ymax = struct.unpack_from("<iiii", b, i + 21)
    return xmax - xmin + 1, ymax - ymin + 1


def _hdr_size(b: bytes) -> tuple[int, int] | None:
    m = re.search(rb"\n\n([-+])([YX]) (\d+) ([-+])([YX]) (\d+)", b[:8192])
    if m is None:
        return None
    first, second = int(m.group(3)), int(m.group(6))
    return (second, first) if m.group(2) == b"Y" else (first, second)


def _jp2_size(b: bytes) -> tuple[int, int] | None:
    if b[:4] == b"\xff\x4f\xff\x51":  # a J2K codestream: SIZ right after SOC
        if len(b) < 24:
            return None
        xsiz, ysiz, x0, y0 = struct.unpack_from(">IIII", b, 8)
        return xsiz - x0, ysiz - y0
    i = b.find(b"ihdr", 0, 4096)  # a JP2 file: the image header box
    if i < 0 or i + 12 > len(b):
        return None
    h, w = struct.unpack_from(">II", b, i + 4)
    return w, h


def probe_image_size(data) -> tuple[int, int] | None:
    """The (W, H) an encoded image's header claims, read without decoding; None if the format is
    not one the probe knows or its header is incomplete (see the module docstring)."""
    whole = memoryview(data).cast("B")  # no copy: JPEG and TIFF headers may lie far into the file
    b = bytes(whole[:65536])
    try:
        if b[:8] == b"\x89PNG\r\n\x1a\n":
            return struct.unpack_from(">II", b, 16) if b[12:16] == b"IHDR" else None
        if b[:2] == b"\xff\xd8":
            return _jpeg_size(whole)
        if b[:6] in (b"GIF87a", b"GIF89a"):
            return struct.unpack_from("<HH", b, 6)
        if b[:2] == b"BM":
            if struct.unpack_from("<I", b, 14)[0] == 12:  # OS/2 BITMAPCOREHEADER
                return struct.unpack_from("<HH", b, 18)
            w, h = struct.unpack_from("<ii", b, 18)
            return abs(w), abs(h)
        if b[:4] == b"RIFF" and b[8:12] == b"WEBP":
            return _webp_size(b)
        if b[:4] in (b"II*\0", b"MM\0*"):
            return _tiff_size(whole)
        if re.match(rb"P[1-7]\s", b[:3]) or b[:2] in (b"PF", b"Pf"):
            return _pnm_size(b)
        if b[:4] == b"\x59\xa6\x6a\x95":  # Sun raster
            return struct.unpack_from(">II", b, 4)
        if b[:4] == b"\x76\x2f\x31\x01":
            return _exr_size(b)
        if b[:10] == b"#?RADIANCE" or b[:6] == b"#?RGBE":
            return _hdr_size(b)
        if b[:4] == b"\xff\x4f\xff\x51" or b[4:8] == b"jP  ":
            return _jp2_size(b)
        if b[4:8] == b"ftyp":  # ISO BMFF (AVIF, HEIF): the image spatial extents property
            i = b.find(b"ispe")
            return struct.unpack_from(">II", b, i + 8) if i >= 0 else None
    except struct.error:  # a header cut short
        return None
    return None


def check_image_header(data, name: str = "image", max_pixels: int | None = None) -> None:
    """ImageError naming ``name`` when the header claims more than ``max_pixels`` pixels (or none)."""
    limit = max_image_pixels() if max_pixels is None else int(max_pixels)
    size = probe_image_size(data)
    if size is None:
        return
    w, h = int(size[0]), int(size[1])
    if w <= 0 or h <= 0:
        raise ImageError(f"{name}: header claims an image of {w}×{h} pixels")
    if w * h > limit:
        raise ImageError(
            f"{name}: header claims {w}×{h} pixels ({w * h / 1e6:.0f} MP), more than the limit of "
            f"{limit / 1e6:g} MP (not decoded; a decompression bomb or a wrong file; raise the limit "
            f"with ${MAX_PIXELS_ENV} or the node's max_image_pixels)"
        )


def decode_image(data, name: str = "image", max_pixels: int | None = None) -> np.ndarray:
    """Decode an encoded image (bytes or a uint8 array) as OpenCV reads it (IMREAD_UNCHANGED), after
    the header probe; ImageError naming ``name`` for a refused, unreadable or corrupted image."""
    import cv2

    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1)
    if buf.size == 0:
        raise ImageError(f"{name}: no data")
    check_image_header(buf, name, max_pixels)
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as e:  # OpenCV's own limits, or a decoder failing on corrupted data
        reason = str(e).strip().splitlines()[-1][:160] if str(e).strip() else "decoder error"
        raise ImageError(f"{name}: not decoded ({reason})") from None
    if image is None:
        raise ImageError(f"{name}: not a readable image (unknown format or corrupted data)")
    return image


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


def read_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as H×W×3 uint8 BGR (any bit depth or channel count on disk).

    An image whose header claims more than ``max_pixels`` (default ``max_image_pixels()``) is
    refused before it is decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such image file")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None
    if data.size == 0:
        raise ImageError(f"{path}: file is empty")
    return to_bgr8(decode_image(data, str(path), max_pixels), name=str(path))


class UnreadableImages:
    """Reads images on, collecting the unreadable ones, to report them all in one ImageError.

    ``read(path)`` returns the image or None (an unreadable one is recorded); ``raise_if_any``
    raises ``N of M images are unreadable: a.png: reason; b.png: reason; ... (and K more)``.
    """

    SHOWN = 3

    def __init__(self, total: int) -> None:
        self.total = total
        self.errors: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.errors)

    def read(self, path, max_pixels: int | None = None) -> np.ndarray | None:
        return self.load(lambda: read_image(path, max_pixels))

    def load(self, load) -> np.ndarray | None:
        """``load()``, or None when it raises an ImageError (recorded)."""
        try:
            return load()
        except ImageError as e:
            self.errors.append(str(e))
            return None

    def raise_if_any(self) -> None:
        if not self.errors:
            return
        if len(self.errors) == 1:
            raise ImageError(self.errors[0])
        more = f" (and {len(self.errors) - self.SHOWN} more)" if len(self.errors) > self.SHOWN else ""
        of = f" of {self.total}" if self.total else ""
        raise ImageError(f"{len(self.errors)}{of} images are unreadable: {'; '.join(self.errors[: self.SHOWN])}{more}")


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
