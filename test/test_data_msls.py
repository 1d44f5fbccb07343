"""MSLS in its official layout: train_val/<city>/{database,query}/{images/,postprocessed.csv,raw.csv}."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from structvpr_core.data import detect_format, load_dataset
from structvpr_core.data.msls import CITIES
from structvpr_core.errors import DatasetError


def write_side(folder: Path, rows, panos=()):
    """rows: (key, easting, northing[, ca]); writes the images and both CSVs as MSLS ships them.

    ca is the compass angle in degrees (90 when not given; None writes an empty cell).
    """
    (folder / "images").mkdir(parents=True, exist_ok=True)
    post = [",key,easting,northing,unique_cluster,control_panel,night,view_direction"]
    raw = [",key,lon,lat,ca,captured_at,pano"]
    for i, (key, e, n, *ca) in enumerate(rows):
        ca = ca[0] if ca else 90.0
        assert cv2.imwrite(str(folder / "images" / f"{key}.jpg"), np.zeros((8, 8, 3), np.uint8))
        post.append(f"{i},{key},{e},{n},0,False,False,Forward")
        raw.append(f"{i},{key},12.5,55.6,{'' if ca is None else ca},1500000000000,{key in panos}")
    (folder / "postprocessed.csv").write_text("\n".join(post) + "\n")
    (folder / "raw.csv").write_text("\n".join(raw) + "\n")


def make_city(base: Path, city: str, db, q, panos=()):
    write_side(base / "train_val" / city / "database", db, panos)
    write_side(base / "train_val" / city / "query", q, panos)


@pytest.fixture()
def msls(tmp_path):
    root = tmp_path / "msls"
    # Both cities use the same UTM numbers (different zones): positives must never cross cities.
    make_city(
        root,
        "cph",
        [("c_d0", 350000.0, 6180000.0), ("c_d1", 350020.0, 6180000.0), ("c_pano", 350001.0, 6180000.0)],
        [("c_q0", 350005.0, 6180000.0), ("c_q1", 351000.0, 6180000.0)],
        panos=("c_pano",),
    )
    make_city(root, "sf", [("s_d0", 350000.0, 6180000.0)], [("s_q0", 350010.0, 6180000.0)])
    make_city(root, "london", [("l_d0", 0.0, 0.0)], [("l_q0", 3.0, 4.0)])
    return root


def test_val_cities_positives_within_each_city_and_no_panoramas(msls):
    assert detect_format(msls) == "msls"
    ds = load_dataset(msls)  # split test -> the official val cities (test cities have no coordinates)
    assert ds.split == "val" and ds.meta["cities"] == ["cph", "sf"]
    assert [p.stem for p in ds.database] == ["c_d0", "c_d1", "s_d0"]  # the panorama is gone
    assert [p.stem for p in ds.queries] == ["c_q0", "c_q1", "s_q0"]
    assert [p.tolist() for p in ds.positives] == [[0, 1], [], [2]]
    assert ds.database[2] == msls / "train_val" / "sf" / "database" / "images" / "s_d0.jpg"
    # radius queries on the stored coordinates never pair cities either
    assert [p.tolist() for p in ds.within(30.0)] == [[0, 1], [], [2]]
    with_panos = load_dataset(msls, format="msls", exclude_panos=False)
    assert with_panos.num_database == 4 and with_panos.positives[0].tolist() == [0, 1, 2]


def test_train_split_uses_the_official_training_cities(msls):
    assert "london" in CITIES["train"] and CITIES["val"] == ["cph", "sf"]
    ds = load_dataset(msls, split="train")
    assert ds.meta["cities"] == ["london"] and ds.positives[0].tolist() == [0]
    assert load_dataset(msls / "train_val", format="msls", cities=["sf"]).num_queries == 1


def test_compass_angles_are_read_per_image_and_nan_when_missing(tmp_path):
    root = tmp_path / "m"
    # query q0 and database image d_back are 1 m apart but face opposite ways; d_none has no angle
    make_city(
        root,
        "cph",
        [
            ("d_fwd", 0.0, 0.0, 10.0),
            ("d_back", 1.0, 0.0, 190.5),
            ("d_none", 2.0, 0.0, None),
            ("d_pano", 0.0, 1.0, 45.0),
            ("d_wrap", 3.0, 0.0, 370.0),
        ],
        [("q0", 0.0, 0.0, 5.0)],
        panos=("d_pano",),
    )
    make_city(root, "sf", [("s_d0", 0.0, 0.0, 270.0)], [("s_q0", 0.0, 0.0, 359.0)])
    ds = load_dataset(root, format="msls")
    assert [p.stem for p in ds.database] == ["d_fwd", "d_back", "d_none", "d_wrap", "s_d0"]
    np.testing.assert_array_equal(ds.db_heading, [10.0, 190.5, np.nan, 10.0, 270.0])  # 370 wraps to 10
    np.testing.assert_array_equal(ds.q_heading, [5.0, 359.0])
    # evaluation positives stay distance-only: the image facing backwards is still a positive at 25 m
    assert ds.positives[0].tolist() == [0, 1, 2, 3]
    # without raw.csv every angle is unknown (and no panorama can be excluded)
    (root / "train_val" / "sf" / "query" / "raw.csv").unlink()
    (root / "train_val" / "cph" / "database" / "raw.csv").unlink()
    bare = load_dataset(root, format="msls")
    assert bare.num_database == 6 and np.isnan(bare.db_heading[:5]).all() and bare.db_heading[5] == 270.0
    np.testing.assert_array_equal(bare.q_heading, [5.0, np.nan])


def test_formats_without_compass_have_no_headings(tmp_path):
    # the community folder format carries UTM in file names but no view direction
    for side, name in (
        ("database", "@585000.00@4477000.00@17@T@d0@.jpg"),
        ("queries", "@585001.00@4477000.00@17@T@q0@.jpg"),
    ):
        (tmp_path / side).mkdir()
        assert cv2.imwrite(str(tmp_path / side / name), np.zeros((8, 8, 3), np.uint8))
    ds = load_dataset(tmp_path, format="folder")
    assert ds.positives[0].tolist() == [0] and ds.db_heading is None and ds.q_heading is None


@pytest.mark.parametrize(
    "case, match",
    [
        ("bad_heading", "compass angle 'ca' is not a number"),
        ("no_city", "none of the val cities present"),
        ("named_city_missing", "city folder missing"),
        ("no_column", "missing column 'northing'"),
        ("bad_number", "easting/northing are not numbers"),
        ("missing_image", "names a missing image"),
        ("no_csv", "postprocessed.csv: missing"),
    ],
)
def test_malformed_msls_inputs_are_named(tmp_path, case, match):
    root = tmp_path / "m"
    make_city(root, "cph", [("d0", 1.0, 2.0)], [("q0", 1.0, 2.0)])
    post = root / "train_val" / "cph" / "query" / "postprocessed.csv"
    culprit = post
    kwargs = {}
    if case == "bad_heading":
        culprit = post.with_name("raw.csv")
        culprit.write_text(",key,lon,lat,ca,captured_at,pano\n0,q0,12.5,55.6,north,0,False\n")
    elif case == "no_city":
        (root / "train_val" / "cph").rename(root / "train_val" / "nowhere")
        culprit = root / "train_val"
    elif case == "named_city_missing":
        kwargs = {"cities": ["cph", "paris"]}
        culprit = root / "train_val" / "paris"
    elif case == "no_column":
        post.write_text(",key,easting\n0,q0,1.0\n")
    elif case == "bad_number":
        post.write_text(",key,easting,northing\n0,q0,abc,2.0\n")
    elif case == "missing_image":
        (root / "train_val" / "cph" / "query" / "images" / "q0.jpg").unlink()
    elif case == "no_csv":
        post.unlink()
    with pytest.raises(DatasetError, match=match) as e:
        load_dataset(root, format="msls", **kwargs)
    assert str(culprit) in str(e.value) and "\n" not in str(e.value)
