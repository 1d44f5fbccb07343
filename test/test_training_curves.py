"""The training-curve plot: validation R@N per epoch from a stage's log.csv (training/plot_curve.py)."""

from __future__ import annotations

import subprocess
import sys

import cv2
import pytest

from structvpr_core.errors import ConfigError
from structvpr_core.training.curves import plot_curve, read_curve
from structvpr_core.training.records import LOG, StageLog


def write_log(out, rows):
    log = StageLog(out, "stage1_rgb", ["R@1", "R@5"], enabled=True)
    for epoch, loss, metrics in rows:
        row = {"epoch": epoch, "steps": 3, "tuples": 12, "loss": loss, "loss_vpr": loss, "loss_kd": 0.0}
        log.epoch({**row, "lr": 1e-5, "seconds": 1.5}, metrics, epoch * 3)
    return out / LOG


def test_read_curve_skips_unvalidated_epochs(tmp_path):
    path = write_log(
        tmp_path,
        [(1, 0.08, {"R@1": 0.1, "R@5": 0.3}), (2, 0.06, None), (3, 0.05, {"R@1": 0.25, "R@5": 0.5})],
    )
    curve = read_curve(path, ["R@1", "R@5"])
    assert curve["R@1"] == [(1, pytest.approx(0.1)), (3, pytest.approx(0.25))]
    assert [e for e, _ in curve["loss"]] == [1, 2, 3]


def test_plot_curve_writes_a_png(tmp_path):
    path = write_log(tmp_path, [(1, 0.08, {"R@1": 0.1, "R@5": 0.3}), (2, 0.05, {"R@1": 0.2, "R@5": 0.4})])
    out = plot_curve(path, tmp_path / "curve.png", metrics=["R@1", "R@5"], start={"R@1": 0.07}, title="t")
    image = cv2.imread(str(out))
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 100


def test_unknown_column_and_missing_log_are_one_line_errors(tmp_path):
    path = write_log(tmp_path, [(1, 0.08, {"R@1": 0.1, "R@5": 0.3})])
    with pytest.raises(ConfigError, match=r"no column 'R@20'.*R@1, R@5"):
        read_curve(path, ["R@20"])
    with pytest.raises(ConfigError, match="no such log"):
        read_curve(tmp_path / "nope.csv", ["R@1"])


def test_command(tmp_path, repo_root):
    path = write_log(tmp_path, [(1, 0.08, {"R@1": 0.1, "R@5": 0.3})])
    script = str(repo_root / "training" / "plot_curve.py")
    ok = subprocess.run(
        [sys.executable, script, "--log", str(path), "--out", str(tmp_path / "c.png"), "--start", "R@1=0.05"],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "c.png").is_file()
    bad = subprocess.run(
        [sys.executable, script, "--log", str(path), "--out", str(tmp_path / "d.png"), "--start", "R@1"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "expected METRIC=VALUE" in bad.stderr and "Traceback" not in bad.stderr
