"""Image reading and normalisation to 8-bit BGR, on real files and odd formats."""

import cv2
import numpy as np
import pytest

from structvpr_core.errors import ImageError
from structvpr_core.images import list_images, read_image, to_bgr8


def test_reads_real_jpeg(corridor):
    img = read_image(corridor / "ref" / "0000000.jpg")
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert img.shape[:2] == (120, 160)


def test_sixteen_bit_and_alpha_and_grey(tmp_path):
    grey16 = np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000
    p = tmp_path / "d.png"
    cv2.imwrite(str(p), grey16)
    out = read_image(p)
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8
    assert out[2, 3, 0] == 55000 * 255 // 65535
    bgra = np.zeros((5, 6, 4), np.uint8)
    bgra[..., 2] = 200
    bgra[..., 3] = 7
    assert np.array_equal(to_bgr8(bgra), bgra[..., :3])
    assert to_bgr8(np.full((2, 2), 9, np.uint8)).tolist() == [[[9, 9, 9]] * 2] * 2


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((0, 5, 3), np.uint8), "zero size"),
        (np.zeros((4, 4, 2), np.uint8), "unsupported image shape"),
        (np.zeros((4, 4), np.int64), "unsupported pixel type"),
        (np.full((4, 4), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_arrays(array, message):
    with pytest.raises(ImageError, match=message):
        to_bgr8(array)


def test_bad_files(tmp_path):
    with pytest.raises(ImageError, match="no such image file"):
        read_image(tmp_path / "nope.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        read_image(tmp_path / "empty.jpg")
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    with pytest.raises(ImageError, match=r"junk.jpg: not a readable image"):
        read_image(tmp_path / "junk.jpg")


def test_list_images_sorted(tmp_path):
    for name in ["b.jpg", "a.PNG", "c.txt"]:
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.PNG", "b.jpg"]
