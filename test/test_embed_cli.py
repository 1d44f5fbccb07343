"""`structvpr embed` end to end on real Corridor frames (in-process CLI)."""

import shutil

import numpy as np
import pytest
import torch

from structvpr_core.cli import main
from structvpr_core.extractor import Extractor
from structvpr_core.images import list_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def frames(corridor, tmp_path):
    """Five real Corridor frames in a folder of their own, plus one loose file."""
    folder = tmp_path / "frames"
    folder.mkdir()
    refs = list_images(corridor / "ref")
    for p in reversed(refs[:5]):  # copy order must not matter: folders are read sorted by name
        shutil.copy(p, folder / p.name)
    return folder, corridor / "query" / "0000042.jpg"


def test_embed_folder_and_file(frames, tmp_path, capsys):
    folder, loose = frames
    out = tmp_path / "out" / "desc.npy"
    code = main(
        [
            "embed",
            str(folder),
            str(loose),
            "--size",
            "160",
            "120",
            "--device",
            "cpu",
            "--batch-size",
            "2",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    desc = np.load(out)
    assert desc.shape == (6, 448) and desc.dtype == np.float32
    expected = Extractor(device="cpu", image_size=(160, 120)).embed_paths(
        [*sorted(folder.iterdir()), loose], progress=False
    )
    assert np.allclose(desc, expected, atol=1e-5)
    summary = capsys.readouterr().out.strip().splitlines()
    assert len(summary) == 1 and "embedded 6 images" in summary[0] and "6x448" in summary[0]
    assert not list(out.parent.glob(".*")), "no temp file left behind"


def test_errors_are_one_line_and_write_nothing(frames, tmp_path, capsys):
    folder, _ = frames
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "desc.npy"
    assert main(["embed", str(folder), "--size", "64", "48", "--device", "cpu", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("structvpr embed: error: ") and "broken.png" in err[-1]
    assert not out.exists()

    assert main(["embed", str(tmp_path / "nothing.jpg"), "--out", str(out)]) == 1
    assert "no such image file or directory" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["embed", str(empty), "--out", str(out)]) == 1
    assert "contains no images" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["embed", str(folder), "--device", "cuda", "--out", str(out)]) == 1
        assert "CUDA is not available" in capsys.readouterr().err


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["embed", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "--checkpoint" in text and "sorted by name" in text


def test_decompression_bomb_and_absurd_size_are_one_line_errors(tmp_path, capsys):
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = tmp_path / "bomb.png"  # 69 bytes claiming 40000×30000 RGB pixels (3.6 GB decoded)
    ihdr = struct.pack(">IIBBBBB", 40000, 30000, 8, 2, 0, 0, 0)
    bomb.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(4))) + chunk(b"IEND", b"")
    )
    assert bomb.stat().st_size == 69
    out = tmp_path / "d.npy"
    assert main(["embed", str(bomb), "--size", "64", "48", "--device", "cpu", "--no-progress", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("structvpr embed: error: ") and "header claims 40000×30000" in err[0]
    assert not out.exists()

    for cmd in (["embed", str(bomb), "--out", str(out)], ["build-map", "--images", str(tmp_path), "--out", str(out)]):
        assert main([*cmd, "--size", "100000", "100000"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--size: W and H must be in 32..8192 pixels, got 100000 100000" in err[0], err
