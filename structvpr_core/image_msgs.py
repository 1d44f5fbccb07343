"""sensor_msgs/Image payloads → H×W×3 uint8 BGR, in pure numpy (no cv_bridge, no ROS import).

Shared by the bag reader and the ROS node. Handles row padding (``step`` > width·bytes per
pixel), big-endian 16-bit data, and the common encodings; anything else is an ImageError that
names the encoding.
"""

from __future__ import annotations

import numpy as np

from .errors import ImageError

# encoding -> (channels, numpy dtype, channel order of the source)
ENCODINGS = {
    "bgr8": (3, np.uint8, "bgr"),
    "rgb8": (3, np.uint8, "rgb"),
    "bgra8": (4, np.uint8, "bgr"),
    "rgba8": (4, np.uint8, "rgb"),
    "mono8": (1, np.uint8, "mono"),
    "8uc1": (1, np.uint8, "mono"),
    "8uc3": (3, np.uint8, "bgr"),
    "8uc4": (4, np.uint8, "bgr"),
    "mono16": (1, np.uint16, "mono"),
    "16uc1": (1, np.uint16, "mono"),
    "bgr16": (3, np.uint16, "bgr"),
    "rgb16": (3, np.uint16, "rgb"),
    "bgra16": (4, np.uint16, "bgr"),
    "rgba16": (4, np.uint16, "rgb"),
}


def as_uint8(data) -> np.ndarray:
    """A flat uint8 view of a message's byte field (bytes, array.array, numpy array or a list).

    Buffers are viewed, not copied: a raw 640×480 frame is ~1 MB per message.
    """
    import array

    if isinstance(data, (bytes, bytearray, memoryview, array.array, np.ndarray)):
        return np.frombuffer(data, dtype=np.uint8)
    return np.asarray(data, dtype=np.uint8)


def image_msg_to_bgr(
    encoding: str, height: int, width: int, step: int, is_bigendian: bool | int, data, max_pixels: int | None = None
) -> np.ndarray:
    """Decode the fields of a ``sensor_msgs/Image`` into a contiguous H×W×3 uint8 BGR array.

    16-bit images are scaled by their full range (x · 255 / 65535), like ``images.to_bgr8``.
    Single-channel images are replicated to grey BGR. Alpha is dropped. An image of more than
    ``max_pixels`` (default ``images.max_image_pixels()``) is refused like a compressed one.
    """
    from .images import max_image_pixels

    enc = (encoding or "").strip().lower()
    if enc not in ENCODINGS:
        raise ImageError(f"image encoding {encoding!r} is not supported (supported: {', '.join(sorted(ENCODINGS))})")
    channels, dtype, order = ENCODINGS[enc]
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise ImageError(f"image message has zero size ({width}×{height})")
    limit = max_image_pixels() if max_pixels is None else int(max_pixels)
    if width * height > limit:
        raise ImageError(f"image message of {width}×{height} pixels is larger than the limit of {limit / 1e6:g} MP")
    itemsize = np.dtype(dtype).itemsize
    row_bytes = width * channels * itemsize
    if step < row_bytes:
        raise ImageError(
            f"image message step {step} is smaller than a row ({width} px × {channels} ch × "
            f"{itemsize} B = {row_bytes} B)"
        )
    buf = as_uint8(data)
    if buf.size < step * (height - 1) + row_bytes:
        raise ImageError(
            f"image message data has {buf.size} bytes, {encoding} {width}×{height} with step "
            f"{step} needs {step * (height - 1) + row_bytes}"
        )
    # The last row may omit its padding; pad the buffer so that a strided view is valid.
    if buf.size < step * height:
        buf = np.concatenate([buf, np.zeros(step * height - buf.size, np.uint8)])
    rows = buf[: step * height].reshape(height, step)[:, :row_bytes]
    byte_order = ">" if is_bigendian else "<"
    pixels = np.ascontiguousarray(rows).view(np.dtype(dtype).newbyteorder(byte_order) if itemsize > 1 else dtype)
    img = pixels.reshape(height, width, channels)
    if itemsize > 1:
        img = (img.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    if order == "mono":
        return np.ascontiguousarray(np.repeat(img, 3, axis=2))
    img = img[:, :, :3]
    if order == "rgb":
        img = img[:, :, ::-1]
    return np.ascontiguousarray(img)


def compressed_msg_to_bgr(fmt: str, data, max_pixels: int | None = None) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (jpeg/png) into H×W×3 uint8 BGR.

    The size its header claims is checked against ``max_pixels`` (default
    ``images.max_image_pixels()``) before decoding: a decompression bomb is an ImageError.
    """
    from .images import decode_image, to_bgr8

    if "compresseddepth" in (fmt or "").lower():
        raise ImageError(f"compressed image format {fmt!r} (depth) is not a camera image")
    buf = as_uint8(data)
    if buf.size == 0:
        raise ImageError("compressed image message has no data")
    name = f"compressed image (format {fmt!r})"
    img = decode_image(buf, name, max_pixels)
    # imdecode returns BGR for colour jpeg/png whatever the "rgb8; jpeg" prefix says.
    return to_bgr8(img, name=name)
