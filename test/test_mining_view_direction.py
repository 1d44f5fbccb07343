"""Training positives that must also face the query's way (mining.max_view_angle_deg, MSLS compass angles).

The dataset is a small synthetic MSLS-like set written in the official layout (blank images, both
CSVs) and read by the real loader, so the headings go through the same path as real MSLS.
"""

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from structvpr_core.data import load_dataset
from structvpr_core.errors import ConfigError, DatasetError
from structvpr_core.training.config import MiningConfig, load_train_config
from structvpr_core.training.mining import build_pairs, select_tuples, view_angle_deg


def write_side(folder: Path, rows) -> None:
    """rows: (key, easting, northing, ca); ca None writes an empty compass cell."""
    (folder / "images").mkdir(parents=True)
    post = [",key,easting,northing,unique_cluster,control_panel,night,view_direction"]
    raw = [",key,lon,lat,ca,captured_at,pano"]
    for i, (key, e, n, ca) in enumerate(rows):
        assert cv2.imwrite(str(folder / "images" / f"{key}.jpg"), np.zeros((8, 8, 3), np.uint8))
        post.append(f"{i},{key},{e},{n},0,False,False,Forward")
        raw.append(f"{i},{key},12.5,55.6,{'' if ca is None else ca},1500000000000,False")
    (folder / "postprocessed.csv").write_text("\n".join(post) + "\n")
    (folder / "raw.csv").write_text("\n".join(raw) + "\n")


@pytest.fixture()
def msls(tmp_path):
    """Query q0 at the origin looking at 350 degrees; q1 alone with an image facing away."""
    city = tmp_path / "synthetic_msls" / "train_val" / "london"
    write_side(
        city / "database",
        [
            ("d_same", 2.0, 0.0, 0.0),  # 10 degrees off the query
            ("d_opposite", 1.0, 0.0, 170.0),  # co-located, facing the other way (180 degrees off)
            ("d_wrap", 3.0, 0.0, 10.0),  # 350 vs 10: 20 degrees, across north
            ("d_unknown", 4.0, 0.0, None),  # no compass angle: kept
            ("d_far", 100.0, 0.0, 350.0),  # a negative
            ("d_far2", 200.0, 0.0, 90.0),  # a negative
            ("e_away", 1000.0, 0.0, 90.0),  # near q1 but facing away from it
        ],
    )
    write_side(city / "query", [("q0", 0.0, 0.0, 350.0), ("q1", 1000.0, 2.0, 270.0)])
    return tmp_path / "synthetic_msls"


def pairs_for(root, max_angle, positives="ground_truth"):
    cfg = MiningConfig(positives=positives, max_view_angle_deg=max_angle)
    ds = load_dataset(root, "msls", split="train", pos_dist_m=cfg.positive_m)  # as training/run.py loads it
    return build_pairs(ds, cfg)


def names(root, idx):
    ds = load_dataset(root, "msls", split="train")
    return [ds.database[i].stem for i in idx]


def test_wrapped_angle_difference():
    np.testing.assert_allclose(
        view_angle_deg([350, 10, 0, 90, 359, 45], [10, 350, 180, 270, 1, 45]), [20, 20, 180, 180, 2, 0]
    )
    assert np.isnan(view_angle_deg(np.nan, 10.0))


@pytest.mark.parametrize("mode", ["ground_truth", "radius"])
def test_opposite_facing_image_is_a_positive_only_without_the_filter(msls, mode):
    without = pairs_for(msls, None, mode)
    assert names(msls, without.positives[0]) == ["d_same", "d_opposite", "d_wrap", "d_unknown"]
    np.testing.assert_array_equal(without.usable, [0, 1])

    with_filter = pairs_for(msls, 40.0, mode)
    assert names(msls, with_filter.positives[0]) == ["d_same", "d_wrap", "d_unknown"]
    # q1's only close image faces away: q1 has no positive and is not trained on
    np.testing.assert_array_equal(with_filter.usable, [0])
    assert len(with_filter.positives[1]) == 0
    # the dropped image is not a negative either (it is 1 m away and may still show the place)
    assert "d_opposite" in names(msls, with_filter.near[0])
    q, p = with_filter.pair_arrays()
    assert q.tolist() == [0, 0, 0] and names(msls, p) == ["d_same", "d_wrap", "d_unknown"]


def test_threshold_is_inclusive_and_wraps_around_north(msls):
    assert names(msls, pairs_for(msls, 20.0).positives[0]) == ["d_same", "d_wrap", "d_unknown"]
    assert names(msls, pairs_for(msls, 15.0).positives[0]) == ["d_same", "d_unknown"]
    assert names(msls, pairs_for(msls, 180.0).positives[0]) == ["d_same", "d_opposite", "d_wrap", "d_unknown"]


def test_dropped_positive_never_becomes_a_hard_negative(msls):
    pairs = pairs_for(msls, 40.0)
    ds = load_dataset(msls, "msls", split="train")
    # descriptors (synthetic, 2-D) that make the opposite-facing image the query's most similar one
    sims = {
        "d_same": 0.5,
        "d_opposite": 0.99,
        "d_wrap": 0.6,
        "d_unknown": 0.4,
        "d_far": 0.3,
        "d_far2": 0.2,
        "e_away": 0.1,
    }
    s = np.array([sims[p.stem] for p in ds.database])
    db = np.stack([s, np.sqrt(1 - s**2)], axis=1).astype(np.float32)
    tuples = select_tuples(np.array([[1.0, 0.0]], np.float32), db, np.arange(len(s)), np.array([0]), pairs, k=2)
    assert names(msls, tuples[0, 1:]) == ["d_wrap", "d_far", "d_far2"]  # best facing positive, far negatives


def test_no_facing_positive_at_all_is_a_named_error(msls):
    cfg = MiningConfig(positives="radius", max_view_angle_deg=40.0)
    ds = load_dataset(msls, "msls", split="train")
    ds.db_heading = np.full(ds.num_database, 170.0)  # every database image now faces away from both queries
    with pytest.raises(DatasetError, match=r"facing within 40.0 degrees") as e:
        build_pairs(ds, cfg)
    assert str(msls) in str(e.value)


@pytest.mark.parametrize("value", [0, -10, 180.5, 360, ".nan"])
def test_out_of_range_threshold_is_a_config_error(tmp_path, value):
    path = tmp_path / "t.yaml"
    path.write_text(f"mining:\n  max_view_angle_deg: {value}\n")
    with pytest.raises(ConfigError, match="max_view_angle_deg") as e:
        load_train_config(path)
    assert "t.yaml" in str(e.value) and "\n" not in str(e.value)


def test_default_is_no_filter_and_msls_config_sets_40(repo_root, tmp_path):
    assert MiningConfig().max_view_angle_deg is None
    for name in ("train_pitts30k.yaml", "train_synthetic.yaml"):
        assert load_train_config(repo_root / "config" / name).mining.max_view_angle_deg is None
    assert load_train_config(repo_root / "config" / "train_msls.yaml").mining.max_view_angle_deg == 40.0
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({"mining": {"max_view_angle_deg": 180}}))
    assert load_train_config(path).mining.max_view_angle_deg == 180.0


def test_without_coordinates_the_dropped_positive_is_still_not_a_negative(tmp_path):
    from structvpr_core.data.dataset import PlaceDataset

    # constructed: ground-truth positives and headings only (no coordinates to find "near" images by)
    ds = PlaceDataset(
        name="constructed",
        root=tmp_path,
        database=[tmp_path / f"d{i}" for i in range(4)],
        queries=[tmp_path / "q0"],
        positives=[np.array([0, 1])],
        db_coords=None,
        q_coords=None,
        db_heading=np.array([0.0, 180.0, 0.0, 0.0]),
        q_heading=np.array([5.0]),
    )
    pairs = build_pairs(ds, MiningConfig(positives="ground_truth", max_view_angle_deg=40.0))
    assert pairs.positives[0].tolist() == [0] and pairs.near[0].tolist() == [0, 1]
