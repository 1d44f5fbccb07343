"""Small mistakes a user makes are one-line errors, never a traceback or a silent wrong result:
a NaN checkpoint, several unreadable images, --min-score out of range, --out naming a directory,
a training config that is a list (with --seed/--set)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from structvpr_core.cli import main
from structvpr_core.images import list_images

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")
SMALL = ["--size", "64", "48", "--device", "cpu", "--no-progress"]


def _err_line(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


@pytest.fixture(scope="module")
def nan_checkpoint(tmp_path_factory):
    from structvpr_core.checkpoint import save_checkpoint
    from structvpr_core.models import RGBBranch, build_rgb_branch

    model = build_rgb_branch(pretrained=False)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))  # what a diverged training run leaves
    path = tmp_path_factory.mktemp("ckpt") / "diverged.pt"
    save_checkpoint(path, model, architecture=RGBBranch.architecture, descriptor_dim=model.dim, config={})
    return path


def test_a_nan_checkpoint_is_refused_in_embed_and_eval(nan_checkpoint, corridor, tmp_path, capsys):
    image = corridor / "query" / "0000001.jpg"
    assert (
        main(["embed", str(image), "--checkpoint", str(nan_checkpoint), *SMALL, "--out", str(tmp_path / "d.npy")]) == 1
    )
    lines = _err_line(capsys)
    assert len(lines) == 1 and "diverged.pt: weight" in lines[0] and "holds NaN or infinity" in lines[0], lines
    assert not (tmp_path / "d.npy").exists()
    argv = ["eval", "--dataset", str(corridor), "--checkpoint", str(nan_checkpoint), "--size", "64", "48"]
    assert main([*argv, "--device", "cpu"]) == 1
    lines = _err_line(capsys)
    assert len(lines) == 1 and "holds NaN or infinity" in lines[-1], lines


def test_several_unreadable_images_are_all_reported(corridor, tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    for p in list_images(corridor / "ref")[:4]:
        shutil.copy(p, folder / p.name)
    for name in ("b1.jpg", "b2.png", "b3.jpg", "b4.png", "b5.jpg"):
        (folder / name).write_bytes(b"\xff\xd8 not really a jpeg" if name.endswith("jpg") else b"junk")
    assert main(["embed", str(folder), *SMALL, "--out", str(tmp_path / "d.npy")]) == 1
    lines = _err_line(capsys)
    assert len(lines) == 1, lines
    assert "5 of 9 images are unreadable: " in lines[0] and "(and 2 more)" in lines[0]
    assert all(f"{n}: " in lines[0] for n in ("b1.jpg", "b2.png", "b3.jpg"))
    out = tmp_path / "map"
    assert main(["build-map", "--images", str(folder), "--out", str(out), *SMALL]) == 1
    lines = _err_line(capsys)
    assert len(lines) == 1 and "5 of 9 images are unreadable: " in lines[0], lines
    assert not out.exists()


def test_min_score_out_of_range_is_refused_not_clamped(tmp_path, capsys):
    argv = ["query", "--map", str(tmp_path / "no_map"), str(tmp_path / "q.jpg"), "--min-score", "2"]
    assert main(argv) == 1
    lines = _err_line(capsys)
    assert len(lines) == 1 and "--min-score: must be in [-1, 1] (cosine similarity), got 2.0" in lines[0], lines


def test_out_naming_an_existing_directory_is_one_line(corridor, tmp_path, capsys):
    image = corridor / "query" / "0000001.jpg"
    assert main(["embed", str(image), *SMALL, "--out", str(tmp_path)]) == 1
    lines = _err_line(capsys)
    assert len(lines) == 1 and f"{tmp_path}: is a directory; give a file name to write" in lines[0], lines


@pytest.mark.parametrize("extra", [["--seed", "3"], ["--set", "seed=3"]])
def test_a_training_config_that_is_a_list_is_one_line(tmp_path, extra):
    config = tmp_path / "list.yaml"
    config.write_text("- seed: 1\n- data: {}\n")
    r = subprocess.run(
        [sys.executable, str(REPO / "training" / "train.py"), "--config", str(config), "--out", str(tmp_path / "run"),
         *extra],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert "list.yaml: the top level must be a mapping of sections, got a list" in lines[0]
