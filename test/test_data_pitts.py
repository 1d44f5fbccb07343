"""Pittsburgh NetVLAD .mat dbStruct files written with scipy.io.savemat, as MATLAB stores them."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from structvpr_core.data import detect_format, load_dataset
from structvpr_core.errors import DatasetError


def write_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.zeros((8, 8, 3), np.uint8))


def cell(names):
    arr = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        arr[i, 0] = n
    return arr


def make_pitts(root: Path, split="test", drop=(), db_utm=None, q_utm=None, write_images=True, name=None):
    db_utm = np.array([[0.0, 0.0], [20.0, 0.0], [40.0, 0.0], [300.0, 0.0]]) if db_utm is None else db_utm
    q_utm = np.array([[10.0, 0.0], [30.0, 1.0], [1000.0, 0.0]]) if q_utm is None else q_utm
    db_names = [f"00{i}/00{i}000_pitch1_yaw{i}.jpg" for i in range(len(db_utm))]
    q_names = [f"00{i}/q{i}.jpg" for i in range(len(q_utm))]
    struct = {
        "whichSet": split,
        "dbImageFns": cell(db_names),
        "utmDb": db_utm.T,
        "qImageFns": cell(q_names),
        "utmQ": q_utm.T,
        "numImages": len(db_names),
        "numQueries": len(q_names),
        "posDistThr": 25.0,
        "posDistSqThr": 625.0,
        "nonTrivPosDistSqThr": 100.0,
    }
    for key in drop:
        struct.pop(key)
    mat = root / "datasets" / (name or f"pitts30k_{split}.mat")
    mat.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(mat), {"dbStruct": struct})
    if write_images:
        for n in db_names:
            write_image(root / n)
        for n in q_names:
            write_image(root / "queries_real" / n)
    return mat


def test_dbstruct_fields_paths_and_positives(tmp_path):
    root = tmp_path / "pitts"
    mat = make_pitts(root)
    make_pitts(root, split="val")
    assert detect_format(root) == "pitts"
    ds = load_dataset(root)
    assert ds.split == "test" and ds.format == "pitts" and ds.kind == "geo"
    assert ds.database[1] == root / "001/001000_pitch1_yaw1.jpg"
    assert ds.queries[2] == root / "queries_real/002/q2.jpg"
    np.testing.assert_allclose(ds.db_coords[3], [300.0, 0.0])
    assert [p.tolist() for p in ds.positives] == [[0, 1], [1, 2], []]
    assert ds.meta["train_pos_dist_m"] == pytest.approx(10.0)
    assert load_dataset(root, split="val").split == "val"
    # the .mat itself as the dataset argument: images live two levels up
    assert load_dataset(mat).database == ds.database
    assert [p.tolist() for p in load_dataset(root, pos_dist_m=11.0).positives] == [[0, 1], [1, 2], []]
    assert [p.tolist() for p in load_dataset(root, pos_dist_m=9.0).positives] == [[], [], []]


def test_a_single_query_squeezed_by_matlab_still_reads(tmp_path):
    make_pitts(tmp_path / "p", db_utm=np.array([[0.0, 0.0], [5.0, 5.0]]), q_utm=np.array([[1.0, 1.0]]))
    ds = load_dataset(tmp_path / "p", format="pitts")
    assert ds.num_queries == 1 and ds.positives[0].tolist() == [0, 1]


@pytest.mark.parametrize(
    "case, match",
    [
        ("missing_field", "no field 'utmQ'"),
        ("missing_image", "names a missing image"),
        ("utm_size", "utmDb has 6 values, expected 2×4"),
        ("corrupt", "not a readable MATLAB file"),
        ("no_split", "no .mat file for split 'train'"),
        ("no_struct", "no variable 'dbStruct'"),
    ],
)
def test_malformed_mat_files_are_named(tmp_path, case, match):
    root = tmp_path / "p"
    mat = make_pitts(root, drop=("utmQ",) if case == "missing_field" else (), write_images=case != "missing_image")
    if case == "utm_size":
        mat = make_pitts(root, db_utm=np.zeros((3, 2)))
        # 4 file names but 3 coordinates: rewrite dbImageFns with 4 names
        data = scipy.io.loadmat(str(mat))
        s = {k: data["dbStruct"][0, 0][k] for k in data["dbStruct"].dtype.names}
        s["dbImageFns"] = cell([f"x{i}.jpg" for i in range(4)])
        scipy.io.savemat(str(mat), {"dbStruct": s})
    elif case == "corrupt":
        mat.write_bytes(b"MATLAB 5.0 MAT-file, but then garbage" + bytes(200))
    elif case == "no_struct":
        scipy.io.savemat(str(mat), {"something": np.zeros(3)})
    split = "train" if case == "no_split" else "test"
    with pytest.raises(DatasetError, match=match) as e:
        load_dataset(root, format="pitts", split=split)
    where = str(root / "datasets") if case == "no_split" else str(mat)
    assert where in str(e.value) and "\n" not in str(e.value)
