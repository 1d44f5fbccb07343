"""Stage I of the RGB branch on a real folder-format set without label maps (config/train_nordland64.yaml).

The set: real Corridor frames (datasets/corridor) renamed into the community folder format
(``train/`` and ``val/``, ``database/`` = the reference pass, ``queries/`` = the query pass,
``@east@north@`` names with place i at 20·i m, as in the Nordland 64×32 set), resized to 64×32.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import cv2
import pytest

from structvpr_core.training.config import load_train_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(REPO, "training", "train.py")
CONFIG = os.path.join(REPO, "config", "train_nordland64.yaml")


@pytest.fixture(scope="module")
def folder_set(tmp_path_factory, corridor):
    """12 training places and 6 validation places of Corridor in the folder format, 64×32, no label maps."""
    root = tmp_path_factory.mktemp("folder64")
    refs, queries = sorted((corridor / "ref").iterdir()), sorted((corridor / "query").iterdir())
    for split, places in (("train", range(0, 12)), ("val", range(12, 18))):
        for kind, frames, season in (("database", refs, "summer"), ("queries", queries, "winter")):
            (root / split / kind).mkdir(parents=True)
            for place in places:
                frame = frames[place * 5]  # every 5th frame: distinct places
                image = cv2.resize(cv2.imread(str(frame)), (64, 32), interpolation=cv2.INTER_AREA)
                cv2.imwrite(str(root / split / kind / f"@{20.0 * place:.2f}@0.00@{season}-{place:05d}.png"), image)
    return root


def _train(out, root, *extra):
    cmd = [
        sys.executable,
        TRAIN,
        "--config",
        CONFIG,
        "--out",
        str(out),
        "--threads",
        "1",
        "--no-progress",
        "--set",
        f"data.root={root}",
        "--set",
        "data.image_size=[64,32]",
        "--set",
        "stage1_rgb.epochs=2",
        "--set",
        "stage1_rgb.batch_size=4",
        "--set",
        "mining.cache_queries=6",
        "--set",
        "stage1_rgb.validate_start=false",  # the config validates the start; the tests say when they want it
        *extra,
    ]
    ran = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)
    assert ran.returncode == 0, ran.stderr[-3000:]
    return out / "stage1_rgb"


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_config_is_stage_one_rgb_on_a_repository_relative_root():
    cfg = load_train_config(CONFIG)
    assert cfg.stages == ["stage1_rgb"]
    assert str(cfg.data.root) == "data/nordland64" and cfg.data.format == "folder"
    w, h = cfg.data.image_size
    assert w == 2 * h  # the frames' 2:1 aspect
    assert (cfg.mining.positive_m, cfg.mining.negative_m) == (10.0, 25.0)


def test_stage_one_rgb_trains_and_validates_without_label_maps(folder_set, tmp_path):
    assert not (folder_set / "labelmaps").exists()
    stage = _train(tmp_path / "run", folder_set)
    rows = _rows(stage / "log.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(0 <= float(r["R@1"]) <= float(r["R@5"]) <= float(r["R@10"]) <= 1 for r in rows)
    done = json.loads((stage / "done.json").read_text())
    best = max(rows, key=lambda r: float(r["R@1"]))  # the first of equal ones: "better" is strict
    assert done["best_epoch"] == int(best["epoch"])
    assert (stage / "best.pt").is_file() and not (tmp_path / "run" / "stage1_seg").exists()


def test_validate_start_logs_epoch_zero_and_leaves_the_training_as_it_was(folder_set, tmp_path):
    plain = _train(tmp_path / "plain", folder_set, "--set", "stage1_rgb.epochs=1")
    start = _train(
        tmp_path / "start", folder_set, "--set", "stage1_rgb.epochs=1", "--set", "stage1_rgb.validate_start=true"
    )
    rows, before = _rows(start / "log.csv"), _rows(plain / "log.csv")
    assert [r["epoch"] for r in rows] == ["0", "1"] and rows[0]["steps"] == "0" and rows[0]["loss"] == ""
    # validating the start draws nothing at random: the same steps, the same epoch 1
    assert [r["loss"] for r in _rows(start / "steps.csv")] == [r["loss"] for r in _rows(plain / "steps.csv")]
    assert {k: rows[1][k] for k in ("R@1", "R@5", "R@10")} == {k: before[0][k] for k in ("R@1", "R@5", "R@10")}


def test_the_start_stays_best_when_no_epoch_beats_it(folder_set, tmp_path):
    import torch

    # a learning rate that wrecks the model: no trained epoch may be reported as the best
    extra = ["--set", "stage1_rgb.validate_start=true", "--set", "stage1_rgb.lr=1.0", "--set", "stage1_rgb.epochs=1"]
    stage = _train(tmp_path / "run", folder_set, *extra)
    rows = _rows(stage / "log.csv")
    done = json.loads((stage / "done.json").read_text())
    assert float(rows[1]["R@1"]) <= float(rows[0]["R@1"])
    assert done["best_epoch"] == 0 and done["best_recalls"]["1"] == pytest.approx(float(rows[0]["R@1"]))
    assert torch.load(stage / "best.pt", weights_only=True)["extra"]["epoch"] == 0
    # resumed after the stage finished: nothing is validated again, row 0 stays
    _train(tmp_path / "run", folder_set, *extra, "--resume")
    assert _rows(stage / "log.csv") == rows
