"""The ImageNet MobileNetV2 file: found where torchvision looks, checksum-verified, clear errors."""

import shutil
from pathlib import Path

import pytest
import torch

from structvpr_core.errors import WeightsError
from structvpr_core.weights import (
    ENV_OVERRIDE,
    IMAGENET_FILENAME,
    IMAGENET_SHA256,
    file_sha256,
    imagenet_weights_path,
    load_imagenet_mobilenet_v2,
    verify_imagenet_weights,
)


@pytest.fixture
def real_weights(monkeypatch):
    monkeypatch.delenv(ENV_OVERRIDE, raising=False)
    return imagenet_weights_path()


def test_default_location_is_torchvision_cache_and_checksum_matches(real_weights):
    assert real_weights == Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILENAME
    assert verify_imagenet_weights() == real_weights
    assert file_sha256(real_weights) == IMAGENET_SHA256


def test_loaded_model_equals_torchvision_offline_load(real_weights):
    from torchvision.models import mobilenet_v2

    ours = load_imagenet_mobilenet_v2().state_dict()
    theirs = mobilenet_v2(weights="IMAGENET1K_V1").state_dict()  # no network: the file is cached
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_override_path(monkeypatch, tmp_path, real_weights):
    copy = tmp_path / "mnv2.pth"
    shutil.copyfile(real_weights, copy)
    monkeypatch.setenv(ENV_OVERRIDE, str(copy))
    assert imagenet_weights_path() == copy
    assert verify_imagenet_weights() == copy


def test_missing_file(monkeypatch, tmp_path):
    missing = tmp_path / "nowhere" / IMAGENET_FILENAME
    monkeypatch.setenv(ENV_OVERRIDE, str(missing))
    with pytest.raises(WeightsError, match="not found") as e:
        load_imagenet_mobilenet_v2()
    assert str(missing) in str(e.value) and "make setup" in str(e.value)
    with pytest.raises(WeightsError, match="not found"):
        verify_imagenet_weights(tmp_path)  # a directory is not the file


def test_truncated_file(monkeypatch, tmp_path, real_weights):
    bad = tmp_path / IMAGENET_FILENAME
    bad.write_bytes(real_weights.read_bytes()[: 1 << 20])
    monkeypatch.setenv(ENV_OVERRIDE, str(bad))
    with pytest.raises(WeightsError, match="corrupted or a different file") as e:
        load_imagenet_mobilenet_v2()
    assert str(bad) in str(e.value)


def test_same_size_wrong_content(monkeypatch, tmp_path, real_weights):
    data = bytearray(real_weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: a file torch might still load
    bad = tmp_path / IMAGENET_FILENAME
    bad.write_bytes(bytes(data))
    monkeypatch.setenv(ENV_OVERRIDE, str(bad))
    with pytest.raises(WeightsError, match="sha256"):
        verify_imagenet_weights()
    # the hash cache must notice a file that changes under the same name
    bad.write_bytes(real_weights.read_bytes())
    assert verify_imagenet_weights() == bad
