"""End to end: the experiment runner on a tiny SYNTHETIC set, 1 seed x 2 variants, rerun and resumed.

The experiment's base is the shipped config/train_experiment_synthetic.yaml, shrunk by the
experiment's own ``set`` list (20 places, 64x48 images, one short epoch per stage). The test checks the
report (results.csv, summary.md with the paired bootstrap, the figure), that a rerun reuses
everything, and that a variant deleted (as if killed before it ran) is trained and evaluated
again to the same numbers: same seed, same result.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "training", "experiment.py")


def _config(tmp_path):
    cfg = {
        "base": os.path.join(REPO, "config", "train_experiment_synthetic.yaml"),
        "set": [
            f"data.root={tmp_path / 'tiny-synthetic'}",
            "data.synthetic.places=20",
            "data.synthetic.splits=[10, 3, 7]",
            "data.synthetic.lookalike=2",
            "data.synthetic.query_views=2",
            "data.image_size=[64, 48]",
            "data.synthetic.size=[64, 48]",
            *(f"{s}.epochs=1" for s in ("stage1_seg", "stage1_rgb", "stage2")),
            *(f"{s}.queries_per_epoch=8" for s in ("stage1_seg", "stage1_rgb", "stage2")),
        ],
        "seeds": [0],
        "bootstrap": 200,
        "variants": [
            {"name": "none", "set": ["partition.method=none"]},
            {"name": "gp-d", "set": ["partition.method=gp-d"]},
        ],
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def _run(config, out, *extra):
    cmd = [sys.executable, SCRIPT, "--config", str(config), "--out", str(out), "--threads", "1", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def _rows(path):
    with open(path, newline="") as f:
        return {r["model"]: r for r in csv.DictReader(f)}


@pytest.mark.timeout(900)
def test_experiment_runs_reports_and_resumes(tmp_path):
    config, out = _config(tmp_path), tmp_path / "exp"
    r = _run(config, out)
    assert r.returncode == 0, r.stderr
    rows = _rows(out / "results.csv")
    assert list(rows) == ["untrained", "seg-teacher", "stage1-rgb", "none", "gp-d"]
    assert all(int(row["queries"]) == 14 for row in rows.values())  # 7 test places x 2 query views
    for row in rows.values():
        assert 0.0 <= float(row["R@1"]) <= float(row["R@5"]) <= float(row["R@10"]) <= 1.0
        assert (out / row["hits_file"]).is_file()
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "SYNTHETIC" in summary and "| gp-d | none |" in summary
    assert "| none | gp-d |" not in summary  # the mirror of gp-d vs none is left out
    assert "Missing (not yet run): none." in summary
    assert (out / "recall.png").stat().st_size > 1000
    stage2 = out / "seed0" / "base" / "stage2-gp-d"
    assert (out / "seed0" / "base" / "partition-gp-d" / "partition.json").is_file()
    assert not (out / "seed0" / "base" / "partition-none").exists()  # "none" needs no partition

    # A rerun reuses every stage and evaluation.
    before = (stage2 / "done.json").stat().st_mtime_ns, (out / "seed0" / "eval" / "gp-d.npz").stat().st_mtime_ns
    r = _run(config, out)
    assert r.returncode == 0, r.stderr
    assert "stage2 done" not in r.stderr
    after = (stage2 / "done.json").stat().st_mtime_ns, (out / "seed0" / "eval" / "gp-d.npz").stat().st_mtime_ns
    assert before == after

    # A variant lost (killed before it ran) is trained again: same seed, same numbers.
    shutil.rmtree(stage2)
    (out / "seed0" / "eval" / "gp-d.npz").unlink()
    partial = _run(config, out, "--report-only")
    assert partial.returncode == 0, partial.stderr
    assert "seed 0 gp-d" in (out / "summary.md").read_text(encoding="utf-8")  # listed as missing
    r = _run(config, out)
    assert r.returncode == 0, r.stderr
    again = _rows(out / "results.csv")
    assert again["gp-d"]["R@1"] == rows["gp-d"]["R@1"] and again["gp-d"]["R@5"] == rows["gp-d"]["R@5"]


def test_bad_experiment_config_is_a_one_line_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "base": os.path.join(REPO, "config", "train_experiment_synthetic.yaml"),
                "variants": [{"name": "x", "family": "nope"}],
            }
        )
    )
    r = _run(path, tmp_path / "out")
    assert r.returncode == 1
    assert "unknown family" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_variant_seeds_must_be_a_subset_of_the_experiment_seeds():
    from structvpr_core.config import from_dict
    from structvpr_core.errors import ConfigError
    from structvpr_core.training.experiment import ExperimentConfig

    base = os.path.join(REPO, "config", "train_experiment_synthetic.yaml")
    ok = from_dict(ExperimentConfig, {"base": base, "seeds": [0, 1], "variants": [{"name": "a", "seeds": [1]}]})
    assert ok.variants[0].seeds == [1]
    with pytest.raises(ConfigError, match="subset"):
        from_dict(ExperimentConfig, {"base": base, "seeds": [0], "variants": [{"name": "a", "seeds": [2]}]})
    with pytest.raises(ConfigError, match="name"):
        from_dict(ExperimentConfig, {"base": base, "variants": [{"name": "untrained"}]})
