"""StructVPR++ training end to end on a tiny SYNTHETIC set: every stage with config/train_synthetic_pp.yaml,
the label part switched off reproducing plain StructVPR bit for bit, and an ablation run
(C = 3, d_l = 32, no CE, no presence weighting)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from structvpr_core.checkpoint import load_checkpoint
from structvpr_core.extractor import Extractor
from structvpr_core.models import PP_RGB_ARCHITECTURE, PP_SEG_ARCHITECTURE, RGB_ARCHITECTURE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(REPO, "training", "train.py")
STAGES = ("stage1_seg", "stage1_rgb", "stage2")


def _train(config, out, root, *extra):
    cmd = [
        sys.executable,
        TRAIN,
        "--config",
        os.path.join(REPO, "config", config),
        "--out",
        str(out),
        "--threads",
        "1",
        "--no-progress",
        "--set",
        f"data.root={root}",
        "--set",
        "data.synthetic.places=10",
        "--set",
        "stage1_seg.epochs=2",
        "--set",
        "stage1_rgb.epochs=1",
        "--set",
        "stage2.epochs=2",
        *extra,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from structvpr_core.data.synthetic import generate

    root = tmp_path_factory.mktemp("pp-train") / "tiny-synthetic"
    generate(root, 10, 0, size=(160, 120), progress=False)
    return root


@pytest.fixture(scope="module")
def pp_run(data_root):
    out = data_root.parent / "pp"
    return out, _train("train_synthetic_pp.yaml", out, data_root)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_pp_run_trains_teacher_student_and_distils(pp_run, corridor):
    out, result = pp_run
    assert "synthetic" in result.stderr
    teacher = load_checkpoint(out / "stage1_seg" / "best.pt")
    assert teacher["architecture"] == PP_SEG_ARCHITECTURE and teacher["descriptor_dim"] == 480 + 6 * 64
    for stage in ("stage1_rgb", "stage2"):
        ckpt = load_checkpoint(out / stage / "best.pt")
        assert ckpt["architecture"] == PP_RGB_ARCHITECTURE and ckpt["descriptor_dim"] == 832
        assert ckpt["config"]["train"]["model"]["label_features"]["dim"] == 64
    assert (out / "teacher_cache_pp" / "meta.json").is_file()
    assert (out / "partition" / "partition.json").is_file()
    logs = _rows(out / "stage2" / "log.csv")
    assert len(logs) == 2 and all(float(r["loss_kd"]) > 0 for r in logs)
    assert all(float(r["loss_kd"]) == 0 for r in _rows(out / "stage1_rgb" / "log.csv"))
    state = torch.load(out / "stage2" / "state.pt", weights_only=True)
    assert set(state["modules"]) == {"projector", "label_projectors"}
    assert tuple(state["modules"]["label_projectors"]["weight"].shape) == (6, 64, 64)
    # the final student works where a StructVPR student works: the Extractor, masks included
    ex = Extractor(out / "stage2" / "best.pt", backend="torch", image_size=(128, 96))
    frames = sorted((corridor / "query").glob("*.jpg"))[:2]
    d = ex.embed_paths(frames, progress=False)
    assert d.shape == (2, 832) and np.allclose(np.linalg.norm(d, axis=1), 1, atol=1e-5)
    assert ex.has_masks


def test_label_part_off_reproduces_structvpr_bit_for_bit(data_root):
    plain = data_root.parent / "plain"
    off = data_root.parent / "off"
    _train("train_synthetic.yaml", plain, data_root)
    _train("train_synthetic_pp.yaml", off, data_root, "--set", "model.label_features.enabled=false")
    for stage in STAGES:
        a = load_checkpoint(plain / stage / "best.pt")
        b = load_checkpoint(off / stage / "best.pt")
        assert a["architecture"] == b["architecture"] and a["model_args"] == b["model_args"]
        assert a["state_dict"].keys() == b["state_dict"].keys()
        assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"]), stage
        steps = [[{k: v for k, v in r.items()} for r in _rows(d / stage / "steps.csv")] for d in (plain, off)]
        assert steps[0] == steps[1], stage
    assert load_checkpoint(off / "stage2" / "best.pt")["architecture"] == RGB_ARCHITECTURE
    assert (plain / "partition" / "pairs.csv").read_bytes() == (off / "partition" / "pairs.csv").read_bytes()
    assert not (off / "teacher_cache_pp").exists()


def test_ablation_c3_small_labels_no_ce_no_presence(data_root):
    out = data_root.parent / "ablation"
    _train(
        "train_synthetic_pp.yaml",
        out,
        data_root,
        "--set",
        "model.label_features.clusters=3",
        "--set",
        "model.label_features.dim=32",
        "--set",
        "model.label_features.ce=false",
        "--set",
        "model.label_features.presence_weighting=false",
        "--set",
        "stage1_seg.epochs=1",
        "--set",
        "stage2.epochs=1",
    )
    ckpt = load_checkpoint(out / "stage2" / "best.pt")
    assert ckpt["descriptor_dim"] == 448 + 3 * 32
    assert ckpt["model_args"]["clusters"] == 3 and ckpt["model_args"]["presence_weighting"] is False
    assert load_checkpoint(out / "stage1_seg" / "best.pt")["model_args"]["in_channels"] == 6  # SLME stays C = 6
