"""sensor_msgs/Image → BGR conversion (pure numpy; shared by the bag reader and the ROS node)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from structvpr_core.errors import ImageError
from structvpr_core.image_msgs import compressed_msg_to_bgr, image_msg_to_bgr

H, W = 5, 7


@pytest.fixture
def bgr():
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


def pad_rows(arr2d_bytes: np.ndarray, pad: int) -> bytes:
    """Rows of bytes with ``pad`` junk bytes appended to each (as drivers with aligned rows do)."""
    rows = arr2d_bytes.reshape(H, -1)
    junk = np.full((H, pad), 0xAB, np.uint8)
    return np.concatenate([rows, junk], axis=1).tobytes()


@pytest.mark.parametrize(
    "encoding,make",
    [
        ("bgr8", lambda b: b),
        ("rgb8", lambda b: b[:, :, ::-1]),
        ("bgra8", lambda b: np.dstack([b, np.full((H, W), 7, np.uint8)])),
        ("rgba8", lambda b: np.dstack([b[:, :, ::-1], np.full((H, W), 7, np.uint8)])),
    ],
)
@pytest.mark.parametrize("pad", [0, 3])
def test_colour_encodings_with_and_without_row_padding(bgr, encoding, make, pad):
    src = np.ascontiguousarray(make(bgr))
    step = W * src.shape[2] + pad
    out = image_msg_to_bgr(encoding, H, W, step, False, pad_rows(src.view(np.uint8), pad))
    assert out.dtype == np.uint8 and out.shape == (H, W, 3) and out.flags.c_contiguous
    assert np.array_equal(out, bgr)


def test_mono8_is_replicated_to_grey_bgr():
    g = np.arange(H * W, dtype=np.uint8).reshape(H, W)
    out = image_msg_to_bgr("mono8", H, W, W, 0, g.tobytes())
    assert np.array_equal(out, np.dstack([g, g, g]))


@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
@pytest.mark.parametrize("bigendian", [False, True])
def test_16bit_both_byte_orders_and_padding(encoding, bigendian):
    g = np.linspace(0, 65535, H * W).astype(np.uint16).reshape(H, W)
    raw = g.astype(">u2" if bigendian else "<u2").view(np.uint8)
    out = image_msg_to_bgr(encoding, H, W, W * 2 + 2, bigendian, pad_rows(raw, 2))
    expected = (g.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    assert np.array_equal(out[:, :, 0], expected) and np.array_equal(out[:, :, 2], expected)
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255


def test_last_row_without_padding_is_accepted(bgr):
    data = pad_rows(bgr.view(np.uint8), 4)[:-4]  # the final row's padding omitted
    assert np.array_equal(image_msg_to_bgr("bgr8", H, W, W * 3 + 4, 0, data), bgr)


@pytest.mark.parametrize(
    "args,match",
    [
        (("yuv422", H, W, W * 2, 0, bytes(H * W * 2)), "not supported"),
        (("bgr8", H, W, W * 3 - 1, 0, bytes(H * W * 3)), "step"),
        (("bgr8", H, W, W * 3, 0, bytes(H * W * 3 - 1)), "needs"),
        (("bgr8", 0, W, W * 3, 0, b""), "zero size"),
    ],
)
def test_bad_messages_are_image_errors(args, match):
    with pytest.raises(ImageError, match=match):
        image_msg_to_bgr(*args)


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_compressed_images(bgr, ext):
    _ok, buf = cv2.imencode(ext, bgr)
    out = compressed_msg_to_bgr("bgr8; " + ext[1:] + " compressed bgr8", buf.ravel())
    assert out.shape == (H, W, 3)
    if ext == ".png":
        assert np.array_equal(out, bgr)
    with pytest.raises(ImageError, match="not a readable image"):
        compressed_msg_to_bgr("jpeg", b"not an image")
    with pytest.raises(ImageError, match="depth"):
        compressed_msg_to_bgr("16UC1; compressedDepth", buf.ravel())
