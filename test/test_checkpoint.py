"""Checkpoints: round trip, architecture checks, corrupted files."""

import pickle

import pytest
import torch

from structvpr_core.checkpoint import build_model_from_checkpoint, load_checkpoint, save_checkpoint
from structvpr_core.errors import CheckpointError
from structvpr_core.models import build_rgb_branch, build_seg_branch
from structvpr_core.slme import SLMEConfig

RGB, SEG = "structvpr-rgb-mobilenetv2", "structvpr-seg-mobilenetl"


@pytest.fixture(scope="module")
def seg_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = build_seg_branch(in_channels=3).eval()
    path = tmp_path_factory.mktemp("ckpt") / "seg.pt"
    save_checkpoint(
        path,
        model,
        architecture=SEG,
        descriptor_dim=480,
        config={"slme": SLMEConfig(clusters=3)},
        extra={"epoch": 7, "recall": {"1": 0.5}},
    )
    return path, model


def test_round_trip(seg_ckpt):
    path, model = seg_ckpt
    ckpt = load_checkpoint(path, expected_architecture=SEG)
    assert ckpt["architecture"] == SEG and ckpt["descriptor_dim"] == 480
    assert ckpt["config"]["slme"]["clusters"] == 3 and ckpt["extra"]["epoch"] == 7
    loaded = build_model_from_checkpoint(path)
    assert loaded.in_channels == 3 and not loaded.training
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_rgb_round_trip(tmp_path):
    model = build_rgb_branch(pretrained=False).eval()
    path = tmp_path / "rgb.pt"
    save_checkpoint(path, model, architecture=RGB, descriptor_dim=448, config={})
    loaded = build_model_from_checkpoint(path, expected_architecture=RGB)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert not list(tmp_path.glob(".*.tmp")), "atomic write leaves no temp file"


def test_architecture_mismatch_names_both(seg_ckpt):
    path, _ = seg_ckpt
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, expected_architecture=RGB)
    assert RGB in str(e.value) and SEG in str(e.value) and str(path) in str(e.value)


def test_wrong_descriptor_dim_refused_at_save(tmp_path):
    with pytest.raises(CheckpointError, match="448"):
        save_checkpoint(tmp_path / "x.pt", build_seg_branch(), architecture=RGB, descriptor_dim=480, config={})
    assert not (tmp_path / "x.pt").exists()


def test_truncated_and_garbage_files(seg_ckpt, tmp_path):
    data = seg_ckpt[0].read_bytes()
    damaged = bytearray(data)
    damaged[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64  # inside the tensor data, archive intact
    for name, content in [
        ("truncated.pt", data[: len(data) // 2]),
        ("garbage.pt", b"not a checkpoint at all"),
        ("empty.pt", b""),
        ("damaged.pt", bytes(damaged)),
    ]:
        bad = tmp_path / name
        bad.write_bytes(content)
        with pytest.raises(CheckpointError, match="corrupted or truncated") as e:
            load_checkpoint(bad)
        assert str(bad) in str(e.value)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_unsafe_pickle_is_refused(tmp_path):
    import argparse  # any class outside torch's allow-list: weights_only=True must refuse it

    bad = tmp_path / "unsafe.pt"
    torch.save({"architecture": RGB, "obj": argparse.Namespace(x=1)}, bad, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="refused by the safe loader"):
        load_checkpoint(bad)


def test_not_a_structvpr_checkpoint(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"model": {"w": torch.zeros(2)}}, other)
    with pytest.raises(CheckpointError, match="not a structvpr checkpoint"):
        load_checkpoint(other)


def test_weights_that_do_not_fit(seg_ckpt, tmp_path):
    ckpt = load_checkpoint(seg_ckpt[0])
    ckpt["state_dict"].pop(next(iter(ckpt["state_dict"])))
    bad = tmp_path / "incomplete.pt"
    torch.save(ckpt, bad)
    with pytest.raises(CheckpointError, match="do not fit"):
        build_model_from_checkpoint(bad)
