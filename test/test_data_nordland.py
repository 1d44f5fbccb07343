"""Nordland: two season traversals with aligned frame numbers and a frame-tolerance window."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from structvpr_core.data import detect_format, load_dataset
from structvpr_core.errors import DatasetError


def make_season(folder: Path, frames, pattern="images-{:05d}.png", section=None):
    for f in frames:
        target = folder / (section or "") / pattern.format(f)
        target.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(target), np.zeros((8, 8, 3), np.uint8))


def test_positives_are_the_frames_within_the_tolerance(tmp_path):
    root = tmp_path / "nordland"
    make_season(root / "summer", range(0, 40))
    make_season(root / "winter", [5, 20], section="section1")
    make_season(root / "winter", [39], section="section2")
    assert detect_format(root) == "nordland"
    ds = load_dataset(root)
    assert ds.kind == "sequence" and ds.num_database == 40
    assert [p.tolist() for p in ds.positives] == [list(range(0, 16)), list(range(10, 31)), list(range(29, 40))]
    narrow = load_dataset(root, format="nordland", frame_tolerance=1)
    assert [p.tolist() for p in narrow.positives] == [[4, 5, 6], [19, 20, 21], [38, 39]]
    swapped = load_dataset(root, format="nordland", database_name="winter", query_name="summer", frame_tolerance=0)
    assert swapped.num_database == 3 and sum(len(p) for p in swapped.positives) == 3


def test_database_order_follows_the_frame_numbers_not_the_names(tmp_path):
    root = tmp_path / "n"
    make_season(root / "summer", [3, 12, 100], pattern="{}.jpg")  # "100" < "12" < "3" by name
    make_season(root / "winter", [12], pattern="{}.jpg")
    ds = load_dataset(root, format="nordland", frame_tolerance=0)
    assert [p.stem for p in ds.database] == ["3", "12", "100"] and ds.positives[0].tolist() == [1]


@pytest.mark.parametrize(
    "case, match",
    [
        ("no_winter", r"winter: missing traversal folder \(present: summer\)"),
        ("duplicate", "two images have frame number 7"),
        ("empty", "winter: no images"),
        ("tolerance", "frame tolerance must be >= 0"),
    ],
)
def test_malformed_nordland_inputs_are_named(tmp_path, case, match):
    root = tmp_path / "n"
    make_season(root / "summer", range(10))
    make_season(root / "winter", range(10))
    kwargs = {}
    if case == "no_winter":
        for p in (root / "winter").iterdir():
            p.unlink()
        (root / "winter").rmdir()
    elif case == "duplicate":
        make_season(root / "summer", [7], pattern="other-{:03d}.png")
    elif case == "empty":
        for p in (root / "winter").iterdir():
            p.unlink()
    elif case == "tolerance":
        kwargs = {"frame_tolerance": -1}
    with pytest.raises(DatasetError, match=match) as e:
        load_dataset(root, format="nordland", **kwargs)
    assert "\n" not in str(e.value)
