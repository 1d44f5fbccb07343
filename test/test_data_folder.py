"""The community folder format (database/ queries/, @UTM_east@UTM_north@ names) and auto-detection."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from structvpr_core.data import detect_format, load_dataset
from structvpr_core.data.utm_names import parse_utm
from structvpr_core.errors import DatasetError


def write_image(path: Path, value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((12, 16, 3), value, np.uint8))
    return path


def utm_name(east: float, north: float, tag: str) -> str:
    return f"@{east:.2f}@{north:.2f}@17@T@{tag}@.jpg"


def make_folder_set(base: Path, db: np.ndarray, q: np.ndarray) -> None:
    for i, (e, n) in enumerate(db):
        write_image(base / "database" / utm_name(e, n, f"d{i}"))
    for i, (e, n) in enumerate(q):
        write_image(base / "queries" / utm_name(e, n, f"q{i}"))


@pytest.fixture()
def coords():
    rng = np.random.default_rng(3)
    db = rng.uniform(0, 200, (60, 2)) + np.array([585000, 4477000])  # an offset, not a concatenation
    q = rng.uniform(0, 200, (25, 2)) + np.array([585000, 4477000])
    return db, q


def brute_force_positives(db, q, radius):
    d = np.linalg.norm(q[:, None, :] - db[None, :, :], axis=2)
    return [np.flatnonzero(row <= radius) for row in d]


def test_positives_match_a_brute_force_distance_computation(tmp_path, coords):
    db, q = coords
    make_folder_set(tmp_path / "set", db, q)
    for radius in (25.0, 40.0):
        ds = load_dataset(tmp_path / "set", pos_dist_m=radius)
        # Files are sorted by name; recover each file's coordinates from its name.
        db_sorted = np.array([parse_utm(p) for p in ds.database])
        q_sorted = np.array([parse_utm(p) for p in ds.queries])
        np.testing.assert_allclose(ds.db_coords, db_sorted)
        expected = brute_force_positives(np.round(db_sorted, 2), np.round(q_sorted, 2), radius)
        assert [p.tolist() for p in ds.positives] == [e.tolist() for e in expected]
        assert sum(len(p) for p in ds.positives) > 0
    assert ds.kind == "geo" and ds.format == "folder"
    assert ds.num_database == 60 and ds.num_queries == 25
    # within() answers other radii (e.g. the 10 m training positives) from the same coordinates
    assert [p.tolist() for p in ds.within(10.0)] == [
        e.tolist() for e in brute_force_positives(ds.db_coords, ds.q_coords, 10.0)
    ]


def test_splits_nested_folders_and_the_benchmark_layout(tmp_path):
    root = tmp_path / "splits"
    make_folder_set(root / "train", np.array([[0.0, 0.0], [100.0, 0.0]]), np.array([[1.0, 1.0]]))
    make_folder_set(root / "test", np.array([[0.0, 0.0]]), np.array([[500.0, 0.0], [3.0, 4.0]]))
    write_image(root / "test" / "database" / "sub" / utm_name(30.0, 0.0, "nested"))
    train = load_dataset(root, split="train")
    test = load_dataset(root)  # default split: test
    assert (train.num_database, train.num_queries, train.split) == (2, 1, "train")
    assert (test.num_database, test.num_queries) == (2, 2)  # the nested image is found
    # queries sorted by name: (3, 4) then (500, 0); database: (0, 0) then sub/(30, 0)
    assert [p.tolist() for p in test.positives] == [[0], []]  # 5 m and 27.3 m from (3, 4)
    with pytest.raises(DatasetError, match=r"split 'val' missing"):
        load_dataset(root, split="val")
    bench = tmp_path / "bench"
    make_folder_set(bench / "images" / "val", np.array([[0.0, 0.0]]), np.array([[0.0, 5.0]]))
    assert detect_format(bench) == "folder"
    assert load_dataset(bench, split="val").positives[0].tolist() == [0]


def test_a_folder_without_splits_is_a_test_set_only(tmp_path):
    make_folder_set(tmp_path / "flat", np.array([[0.0, 0.0]]), np.array([[0.0, 1.0]]))
    assert load_dataset(tmp_path / "flat").num_queries == 1
    with pytest.raises(DatasetError, match="has no train/ split"):
        load_dataset(tmp_path / "flat", split="train")


@pytest.mark.parametrize("case", ["bad_name", "no_queries", "empty_db", "no_root", "nan_name"])
def test_malformed_folder_sets_name_the_file(tmp_path, case):
    root = tmp_path / "bad"
    make_folder_set(root, np.array([[0.0, 0.0]]), np.array([[0.0, 1.0]]))
    culprit = root
    if case == "bad_name":
        culprit = write_image(root / "database" / "IMG_0001.jpg")
    elif case == "nan_name":
        culprit = write_image(root / "queries" / "@nan@5@.jpg")
    elif case == "no_queries":
        for p in (root / "queries").iterdir():
            p.unlink()
        (root / "queries").rmdir()
        culprit = root / "queries"
    elif case == "empty_db":
        for p in (root / "database").iterdir():
            p.unlink()
        culprit = root / "database"
    elif case == "no_root":
        culprit = root / "missing"
        root = culprit
    with pytest.raises(DatasetError) as e:
        load_dataset(root, format="folder")
    message = str(e.value)
    assert "\n" not in message and str(culprit) in message


def test_autodetect_rejects_unknown_layouts_and_unknown_options(tmp_path):
    (tmp_path / "odd" / "pictures").mkdir(parents=True)
    with pytest.raises(DatasetError, match="cannot tell the dataset format"):
        load_dataset(tmp_path / "odd")
    with pytest.raises(DatasetError, match="unknown dataset format"):
        load_dataset(tmp_path / "odd", format="kitti")
    make_folder_set(tmp_path / "ok", np.array([[0.0, 0.0]]), np.array([[0.0, 1.0]]))
    with pytest.raises(DatasetError, match=r"format folder:.*frame_tolerance"):
        load_dataset(tmp_path / "ok", frame_tolerance=3)
    with pytest.raises(DatasetError, match="unknown split"):
        load_dataset(tmp_path / "ok", split="dev")
