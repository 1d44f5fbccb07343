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


# ---- decompression bombs: the header is read before anything is decoded -----------------------


def _png_claiming(width: int, height: int) -> bytes:
    """A 69-byte PNG whose header claims width×height RGB pixels (its data is 4 zero bytes)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 4)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "ext", [".png", ".jpg", ".bmp", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pam", ".ras", ".jp2", ".gif", ".hdr"]
)
def test_header_probe_reads_the_size_of_every_common_format(ext):
    from structvpr_core.images import probe_image_size

    image = (np.random.default_rng(0).random((37, 53, 3)) * 255).astype(np.uint8)
    if ext in (".pgm", ".pbm"):
        image = image[..., 0]
    if ext == ".hdr":
        image = image.astype(np.float32) / 255
    ok, buf = cv2.imencode(ext, image)
    assert ok
    assert probe_image_size(buf) == (53, 37)
    assert probe_image_size(buf.tobytes()) == (53, 37)


def test_header_probe_finds_a_jpeg_frame_header_after_large_segments():
    from structvpr_core.images import probe_image_size

    _ok, buf = cv2.imencode(".jpg", np.zeros((37, 53, 3), np.uint8))
    app = b"\xff\xe1" + (65535).to_bytes(2, "big") + bytes(65533)  # two 64 KB APP1 segments
    data = buf.tobytes()[:2] + app + app + buf.tobytes()[2:]
    assert probe_image_size(data) == (53, 37)
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).shape == (37, 53, 3)


def test_decompression_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    from structvpr_core.images import decode_image, read_image

    bomb = _png_claiming(40000, 30000)
    assert len(bomb) == 69
    with pytest.raises(ImageError, match=r"bomb.png: header claims 40000×30000 pixels \(1200 MP\), more than"):
        decode_image(bomb, "bomb.png")
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb)
    with pytest.raises(ImageError, match="header claims 40000×30000"):
        read_image(path)
    # Below OpenCV's own limit (2^30 pixels) but far above any camera: refused by ours.
    path.write_bytes(_png_claiming(30000, 30000))
    with pytest.raises(ImageError, match="header claims 30000×30000"):
        read_image(path)
    # The limit is configurable; a real image under it is read as before.
    real = tmp_path / "real.png"
    cv2.imwrite(str(real), np.zeros((120, 160, 3), np.uint8))
    with pytest.raises(ImageError, match=r"more than the limit of 0\.01 MP"):
        read_image(real, max_pixels=10_000)
    monkeypatch.setenv("STRUCTVPR_MAX_IMAGE_PIXELS", "10000")
    with pytest.raises(ImageError, match=r"limit of 0\.01 MP"):
        read_image(real)
    monkeypatch.setenv("STRUCTVPR_MAX_IMAGE_PIXELS", "20000")
    assert read_image(real).shape == (120, 160, 3)


def test_opencv_errors_while_decoding_are_image_errors():
    from structvpr_core.images import decode_image

    # A PNG header claiming a plausible size with a broken stream: OpenCV fails, we name the image.
    with pytest.raises(ImageError, match="frame 7"):
        decode_image(_png_claiming(64, 48), "frame 7")


@pytest.mark.parametrize("size", [(100000, 100000), (16, 480), (640, 0), ("a", 1), (640,)])
def test_input_size_rule(size):
    from structvpr_core.errors import ConfigError
    from structvpr_core.images import check_input_size

    with pytest.raises(ConfigError, match="--size"):
        check_input_size(size, "--size")
    assert check_input_size([640, 480]) == (640, 480)
