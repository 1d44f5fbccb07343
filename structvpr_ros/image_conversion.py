"""sensor_msgs Image / CompressedImage <-> H×W×3 uint8 BGR arrays, without cv_bridge.

The PyPI ``cv-bridge`` is the ROS 1 code and breaks on numpy 2, so messages are decoded by
``structvpr_core.image_msgs`` (pure numpy for raw images: row padding, byte order, the common
encodings; OpenCV for compressed ones). Where a real ROS install provides a working cv_bridge,
it is used for the raw encodings that decoder does not know (Bayer, YUV, ...).

Functions take the message objects but only read their fields, so anything with the same
attributes works (tests use plain namespaces too).
"""

from __future__ import annotations

import array
import os
from functools import lru_cache

import numpy as np

from structvpr_core.errors import ImageError
from structvpr_core.image_msgs import ENCODINGS, compressed_msg_to_bgr, image_msg_to_bgr
from structvpr_core.images import to_bgr8


def image_to_bgr(msg, max_pixels: int | None = None) -> np.ndarray:
    """Decode a sensor_msgs/Image into H×W×3 uint8 BGR; ``ImageError`` when malformed or larger
    than ``max_pixels`` (default ``structvpr_core.images.max_image_pixels()``)."""
    if (msg.encoding or "").strip().lower() not in ENCODINGS:
        bridge = _real_cv_bridge()
        if bridge is not None:  # an encoding we do not decode (Bayer, YUV...) and a cv_bridge that may
            try:
                return to_bgr8(bridge.imgmsg_to_cv2(msg, desired_encoding="bgr8"), name="image message")
            except Exception as e:
                raise ImageError(f"image encoding {msg.encoding!r}: cv_bridge could not convert it ({e})") from None
    return image_msg_to_bgr(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data, max_pixels)


def compressed_to_bgr(msg, max_pixels: int | None = None) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (jpeg, png, ...) into H×W×3 uint8 BGR.

    The size the image's header claims is checked against ``max_pixels`` before decoding, so a
    decompression bomb (a few bytes claiming gigapixels) is an ``ImageError``, not an allocation.
    """
    return compressed_msg_to_bgr(msg.format, msg.data, max_pixels)


def bgr_to_image(bgr: np.ndarray, header=None):
    """A sensor_msgs/Image (bgr8, unpadded rows) holding ``bgr``."""
    from sensor_msgs.msg import Image

    bgr = to_bgr8(bgr)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(bgr.shape[0]), int(bgr.shape[1])
    msg.encoding = "bgr8"
    msg.is_bigendian = 0
    msg.step = int(bgr.shape[1] * 3)
    msg.data = array.array("B", bgr.tobytes())  # an array.array skips the per-byte field check
    return msg


def bgr_to_compressed(bgr: np.ndarray, header=None, fmt: str = "jpeg", quality: int = 90):
    """A sensor_msgs/CompressedImage of ``bgr`` encoded as jpeg or png."""
    import cv2
    from sensor_msgs.msg import CompressedImage

    if fmt not in ("jpeg", "png"):
        raise ImageError(f"compressed format must be jpeg or png, got {fmt!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else []
    ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", to_bgr8(bgr), params)
    if not ok:
        raise ImageError(f"cannot encode image as {fmt}")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = fmt
    msg.data = array.array("B", buf.tobytes())
    return msg


@lru_cache(maxsize=1)
def _real_cv_bridge():
    """A CvBridge from a real ROS 2 install that passes a round trip, else None."""
    if not os.environ.get("ROS_DISTRO"):
        return None  # no sourced ROS install: the PyPI cv-bridge (ROS 1) must not be used
    try:
        from cv_bridge import CvBridge

        bridge = CvBridge()
        probe = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
        if not np.array_equal(bridge.imgmsg_to_cv2(bridge.cv2_to_imgmsg(probe, "bgr8"), "bgr8"), probe):
            return None
        return bridge
    except Exception:
        return None
