"""Label maps on disk: PNGs of class ids mirroring the image tree, taxonomy and sizes checked."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from structvpr_core.data.labelmaps import LabelMapTree, read_label_map, read_manifest, write_label_map, write_manifest
from structvpr_core.errors import DatasetError


def write_image(path: Path, w=20, h=10) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.zeros((h, w, 3), np.uint8))
    return path


def test_round_trip_in_8_and_16_bits(tmp_path):
    small = np.random.default_rng(0).integers(0, 151, (10, 20)).astype(np.int64)
    write_label_map(tmp_path / "a.png", small)
    back = read_label_map(tmp_path / "a.png")
    assert back.dtype == np.uint8 and np.array_equal(back, small)
    big = small * 300
    write_label_map(tmp_path / "b.png", big)
    back = read_label_map(tmp_path / "b.png")
    assert back.dtype == np.uint16 and np.array_equal(back, big)
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left beside


def test_grey_saved_as_rgb_is_accepted_a_colour_rendering_is_not(tmp_path):
    ids = np.random.default_rng(1).integers(0, 150, (6, 7)).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "grey3.png"), np.dstack([ids] * 3))
    assert np.array_equal(read_label_map(tmp_path / "grey3.png"), ids)
    colour = np.dstack([ids, ids, 255 - ids])
    cv2.imwrite(str(tmp_path / "palette.png"), colour)
    with pytest.raises(DatasetError, match=r"palette.png: colour image"):
        read_label_map(tmp_path / "palette.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DatasetError, match=r"broken.png: not a readable image"):
        read_label_map(tmp_path / "broken.png")
    with pytest.raises(DatasetError, match="no such label map"):
        read_label_map(tmp_path / "absent.png")


def test_tree_mirrors_images_and_checks_size_taxonomy_and_ids(tmp_path):
    images, labels = tmp_path / "ds", tmp_path / "labels"
    img = write_image(images / "test" / "queries" / "@1@2@.jpg")
    target = labels / "test" / "queries" / "@1@2@.png"
    write_manifest(labels, "ade20k", segmenter="unit-test")
    assert read_manifest(labels)["taxonomy"] == "ade20k"
    tree = LabelMapTree(labels, images, taxonomy="ade20k")
    assert tree.path_for(img) == target
    with pytest.raises(DatasetError, match="missing label map"):
        tree.read(img)
    ids = np.full((10, 20), 3, np.uint8)
    ids[5:, :] = 7  # sky over road
    write_label_map(target, ids)
    assert np.array_equal(tree.read(img), ids)
    tree.check([img])
    write_label_map(target, np.full((10, 21), 3, np.uint8))
    with pytest.raises(DatasetError, match=r"label map is 21×10, its image is 20×10"):
        tree.read(img)
    with pytest.raises(DatasetError, match="differs from its image"):
        tree.check([img])
    write_label_map(target, np.full((10, 20), 200, np.uint8))
    with pytest.raises(DatasetError, match="class id 200 is not in taxonomy 'ade20k'"):
        tree.read(img)
    assert LabelMapTree(labels, images, check_ids=False).read(img, size=(20, 10)).max() == 200
    with pytest.raises(DatasetError, match="label maps are 'ade20k', the config expects 'cityscapes'"):
        LabelMapTree(labels, images, taxonomy="cityscapes")
    with pytest.raises(DatasetError, match="not under the image root"):
        tree.path_for(tmp_path / "elsewhere.jpg")


def test_cityscapes_ignore_id_is_valid_and_a_taxonomy_must_be_named(tmp_path):
    images, labels = tmp_path / "ds", tmp_path / "labels"
    img = write_image(images / "x.png", w=4, h=4)
    labels.mkdir()
    with pytest.raises(DatasetError, match=r"no labelmaps.json naming the taxonomy"):
        LabelMapTree(labels, images)
    tree = LabelMapTree(labels, images, taxonomy="cityscapes")
    write_label_map(labels / "x.png", np.array([[0, 18, 255, 2]] * 4, np.uint8))
    assert tree.read(img).max() == 255
    write_label_map(labels / "x.png", np.array([[0, 19, 255, 2]] * 4, np.uint8))
    with pytest.raises(DatasetError, match="class id 19"):
        tree.read(img)
    with pytest.raises(DatasetError, match="taxonomy"):
        LabelMapTree(labels, images, taxonomy="coco")
