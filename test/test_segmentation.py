"""The SegFormer adapter (optional extra) and `structvpr segment`, with small random-weight models.

No scene-parsing weights are available offline, so the models here are real SegFormer
architectures built from a small config with random weights, saved with save_pretrained and
loaded back through the adapter's real loading code.
"""

import json
import sys

import numpy as np
import pytest

from structvpr_core.errors import ConfigError, WeightsError
from structvpr_core.segmentation import MissingExtraError, get_segmenter, resolve_name

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")


def save_tiny_segformer(path, num_labels: int, size=(64, 48)):
    torch.manual_seed(0)
    config = transformers.SegformerConfig(
        num_labels=num_labels,
        depths=[1, 1, 1, 1],
        hidden_sizes=[8, 16, 24, 32],
        num_attention_heads=[1, 1, 1, 1],
        mlp_ratios=[2, 2, 2, 2],
        decoder_hidden_size=16,
    )
    model = transformers.SegformerForSemanticSegmentation(config).eval()
    model.save_pretrained(path)
    (path / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "size": {"width": size[0], "height": size[1]},
                "image_mean": [0.5, 0.5, 0.5],
                "image_std": [0.25, 0.25, 0.25],
            }
        )
    )
    return model


@pytest.fixture(scope="module")
def ade_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("segformer-ade")
    save_tiny_segformer(path, 150)
    return path


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_ade_model_gives_official_ids_at_the_image_size(ade_dir, corridor):
    import cv2

    from structvpr_core.images import read_image

    seg = get_segmenter(f"segformer:{ade_dir}")
    assert seg.taxonomy == "ade20k" and seg.input_size == (64, 48)
    image = read_image(corridor / "ref" / "0000010.jpg")
    label = seg.segment(image)
    assert label.shape == image.shape[:2] and label.dtype == np.uint8
    assert label.min() >= 1 and label.max() <= 150  # 0-based model output shifted to ADE20K ids
    # Same answer as the plain full-size computation (the adapter takes the argmax in class blocks)
    rgb = cv2.resize(image, (64, 48), interpolation=cv2.INTER_LINEAR)[:, :, ::-1].astype(np.float32)
    x = torch.from_numpy(((rgb - 127.5) / 63.75).transpose(2, 0, 1).copy())[None]
    with torch.inference_mode():
        logits = seg.model(pixel_values=x).logits
        full = torch.nn.functional.interpolate(logits, size=image.shape[:2], mode="bilinear", align_corners=False)
    expected = full[0].argmax(0).numpy() + 1
    assert (label == expected).mean() > 0.999
    assert len(np.unique(label)) > 1


def test_cityscapes_model_keeps_train_ids_and_taxonomy_is_checked(tmp_path):
    save_tiny_segformer(tmp_path / "cs", 19)
    seg = get_segmenter(f"segformer:{tmp_path / 'cs'}", taxonomy="cityscapes")
    label = seg.segment(np.full((30, 40, 3), 90, np.uint8))
    assert seg.taxonomy == "cityscapes" and label.shape == (30, 40) and label.max() <= 18
    with pytest.raises(ConfigError, match="model has 19 classes"):
        get_segmenter(f"segformer:{tmp_path / 'cs'}", taxonomy="ade20k")
    save_tiny_segformer(tmp_path / "odd", 7)
    with pytest.raises(ConfigError, match="7-class model matches no taxonomy"):
        get_segmenter(f"segformer:{tmp_path / 'odd'}")


def test_missing_weights_are_reported_without_any_download(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    with pytest.raises(WeightsError, match=r"not found locally .HF_HUB_OFFLINE is set.: structvpr never downloads"):
        get_segmenter("segformer")
    assert resolve_name("segformer-b2-cityscapes") == "nvidia/segformer-b2-finetuned-cityscapes-1024-1024"
    with pytest.raises(ConfigError, match="unknown name 'deeplab'"):
        get_segmenter("deeplab")


def test_missing_transformers_is_a_clear_error(monkeypatch, ade_dir):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import now fails as if not installed
    with pytest.raises(MissingExtraError, match="pip install transformers"):
        get_segmenter(f"segformer:{ade_dir}")


def test_segment_command_mirrors_the_tree_and_resumes(ade_dir, tmp_path, corridor, capsys):
    from structvpr_core.cli import main
    from structvpr_core.data.labelmaps import LabelMapTree

    data = tmp_path / "ds"
    for rel in ("database/a/0000000.jpg", "database/0000001.jpg", "queries/0000002.jpg"):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes((corridor / "ref" / rel.split("/")[-1]).read_bytes())
    out = tmp_path / "labels"
    argv = [
        "segment",
        "--dataset",
        str(data),
        "--segmenter",
        f"segformer:{ade_dir}",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    assert "3 label maps written, 0 already present" in capsys.readouterr().out
    tree = LabelMapTree(out, data, taxonomy="ade20k")
    images = sorted(data.rglob("*.jpg"))
    tree.check(images)
    assert [tree.path_for(i) for i in images] == [
        out / "database/0000001.png",
        out / "database/a/0000000.png",
        out / "queries/0000002.png",
    ]
    assert all(p.is_file() for p in map(tree.path_for, images))
    stamp = (out / "queries" / "0000002.png").stat().st_mtime_ns
    (out / "database" / "0000001.png").unlink()
    assert main(argv) == 0
    assert "1 label maps written, 2 already present" in capsys.readouterr().out
    assert (out / "queries" / "0000002.png").stat().st_mtime_ns == stamp
    assert main(["segment", "--dataset", str(tmp_path / "void"), "--out", str(out), "--no-progress"]) == 1
    assert "void: no such dataset directory" in capsys.readouterr().err
