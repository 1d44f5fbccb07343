"""SLME: label maps → weighted cluster channels, for both taxonomies and every mode."""

import numpy as np
import pytest
import torch

from structvpr_core.config import from_dict
from structvpr_core.errors import ConfigError
from structvpr_core.slme import (
    SLMEConfig,
    channel_names,
    channel_weights,
    encode_label_map,
    load_taxonomy,
    num_channels,
)

C6 = ["vegetation", "dynamic", "sky", "ground", "buildings", "other"]
ADE = {
    "wall": 1,
    "building": 2,
    "sky": 3,
    "floor": 4,
    "tree": 5,
    "road": 7,
    "grass": 10,
    "person": 13,
    "car": 21,
    "chair": 20,
    "bicycle": 128,
    "flag": 150,
}
CITY = {
    "road": 0,
    "sidewalk": 1,
    "building": 2,
    "pole": 5,
    "vegetation": 8,
    "terrain": 9,
    "sky": 10,
    "person": 11,
    "car": 13,
    "bicycle": 18,
}


def pixel(label_id, cfg):
    """(channel, value) of a single-pixel map, or None when the pixel encodes to all zeros."""
    t = encode_label_map(np.array([[label_id]], dtype=np.int64), cfg, size=None)
    assert t.dtype == torch.float32 and t.shape == (num_channels(cfg), 1, 1)
    nz = torch.nonzero(t[:, 0, 0]).flatten().tolist()
    assert len(nz) <= 1, "one-hot: at most one channel per pixel"
    return (nz[0], float(t[nz[0], 0, 0])) if nz else None


def test_taxonomy_files_match_the_official_class_lists():
    ade = load_taxonomy("ade20k")
    assert ade.class_ids == tuple(range(1, 151)) and ade.ignore_ids == (0,)
    for name, i in ADE.items():
        assert ade.class_names[i - 1].split(";")[0] == name
    city = load_taxonomy("cityscapes")
    assert city.class_ids == tuple(range(19)) and city.ignore_ids == (255,)
    assert list(city.class_names) == [
        "road",
        "sidewalk",
        "building",
        "wall",
        "fence",
        "pole",
        "traffic light",
        "traffic sign",
        "vegetation",
        "terrain",
        "sky",
        "person",
        "rider",
        "car",
        "truck",
        "bus",
        "train",
        "motorcycle",
        "bicycle",
    ]
    # every one of the six clusters is used by ADE20K
    assert set(ade.class_clusters) == set(C6)


@pytest.mark.parametrize(
    "taxonomy,ids,expected",
    [
        (
            "ade20k",
            ADE,
            {
                "tree": "vegetation",
                "grass": "vegetation",
                "person": "dynamic",
                "car": "dynamic",
                "bicycle": "dynamic",
                "sky": "sky",
                "floor": "ground",
                "road": "ground",
                "wall": "buildings",
                "building": "buildings",
                "chair": "other",
                "flag": "other",
            },
        ),
        (
            "cityscapes",
            CITY,
            {
                "vegetation": "vegetation",
                "terrain": "vegetation",
                "person": "dynamic",
                "car": "dynamic",
                "bicycle": "dynamic",
                "sky": "sky",
                "road": "ground",
                "sidewalk": "ground",
                "building": "buildings",
                "pole": "other",
            },
        ),
    ],
)
def test_c6_prior_uniform_opposite(taxonomy, ids, expected):
    prior = {"vegetation": 0.5, "dynamic": 0.5, "sky": 1.0, "ground": 1.0, "buildings": 2.0, "other": 2.0}
    opposite = {"vegetation": 2.0, "dynamic": 2.0, "sky": 1.0, "ground": 1.0, "buildings": 0.5, "other": 0.5}
    for name, cluster in expected.items():
        ch = C6.index(cluster)
        assert pixel(ids[name], SLMEConfig(taxonomy, 6, "prior")) == (ch, prior[cluster]), name
        assert pixel(ids[name], SLMEConfig(taxonomy, 6, "uniform")) == (ch, 1.0), name
        assert pixel(ids[name], SLMEConfig(taxonomy, 6, "opposite")) == (ch, opposite[cluster]), name


def test_weights_in_channel_order():
    assert channel_names(SLMEConfig()) == C6
    assert channel_weights(SLMEConfig()).tolist() == [0.5, 0.5, 1, 1, 2, 2]
    assert channel_weights(SLMEConfig(weighting="opposite")).tolist() == [2, 2, 1, 1, 0.5, 0.5]
    assert channel_weights(SLMEConfig(clusters=3)).tolist() == [1, 0.5, 2]
    assert channel_weights(SLMEConfig(clusters=3, weighting="opposite")).tolist() == [1, 2, 0.5]


@pytest.mark.parametrize("taxonomy,ids", [("ade20k", ADE), ("cityscapes", CITY)])
def test_c3_groups(taxonomy, ids):
    cfg = SLMEConfig(taxonomy, clusters=3)
    assert channel_names(cfg) == ["sky_ground", "dynamic", "static"]
    assert pixel(ids["sky"], cfg) == (0, 1.0)
    assert pixel(ids["road"], cfg) == (0, 1.0)
    assert pixel(ids["person"], cfg) == (1, 0.5)
    assert pixel(ids["building"], cfg) == (2, 2.0)
    assert pixel(ids["vegetation" if taxonomy == "cityscapes" else "tree"], cfg) == (2, 2.0)
    assert pixel(ids["sky"], SLMEConfig(taxonomy, 3, "uniform")) == (0, 1.0)


@pytest.mark.parametrize("taxonomy,ids,n,first", [("ade20k", ADE, 150, 1), ("cityscapes", CITY, 19, 0)])
def test_no_clustering_one_channel_per_class(taxonomy, ids, n, first):
    cfg = SLMEConfig(taxonomy, clusters=0)
    assert num_channels(cfg) == n
    assert pixel(ids["sky"], cfg) == (ids["sky"] - first, 1.0)
    assert pixel(ids["person"], cfg) == (ids["person"] - first, 0.5)  # prior of its C=6 cluster
    assert pixel(ids["building"], cfg) == (ids["building"] - first, 2.0)
    assert pixel(ids["person"], SLMEConfig(taxonomy, 0, "uniform")) == (ids["person"] - first, 1.0)
    assert pixel(ids["person"], SLMEConfig(taxonomy, 0, "opposite")) == (ids["person"] - first, 2.0)


@pytest.mark.parametrize("taxonomy,ignored", [("ade20k", [0, 151, 255, 1000, -1]), ("cityscapes", [255, 19, 254, -3])])
def test_unlabelled_and_unknown_ids_are_all_zero(taxonomy, ignored):
    for clusters in (6, 3, 0):
        for i in ignored:
            assert pixel(i, SLMEConfig(taxonomy, clusters)) is None, (clusters, i)


def test_zero_based_maps_with_id_offset():
    cfg = SLMEConfig(id_offset=1)
    assert pixel(0, cfg) == (C6.index("buildings"), 2.0)  # 0 = wall in 0-based maps
    assert pixel(2, cfg) == (C6.index("sky"), 1.0)
    assert pixel(255, cfg) is None


def test_custom_weights_override():
    cfg = SLMEConfig(weights=[1, 2, 3, 4, 5, 6])
    assert pixel(ADE["sky"], cfg) == (2, 3.0)
    assert pixel(ADE["wall"], cfg) == (4, 5.0)


def test_nearest_neighbour_resize_keeps_ids_exact():
    # A synthetic 2×2 map: sky, tree / road, car, enlarged to 8×6 (W×H) and shrunk from 40×40.
    lm = np.array([[3, 5], [7, 21]], dtype=np.uint8)
    t = encode_label_map(lm, SLMEConfig(), size=(8, 6))
    assert t.shape == (6, 6, 8)
    assert (t[C6.index("sky"), :3, :4] == 1.0).all() and (t[C6.index("vegetation"), :3, 4:] == 0.5).all()
    assert (t[C6.index("ground"), 3:, :4] == 1.0).all() and (t[C6.index("dynamic"), 3:, 4:] == 0.5).all()
    assert ((t > 0).sum(0) == 1).all()
    big = np.kron(lm, np.ones((20, 20), dtype=np.uint8))
    small = encode_label_map(big, SLMEConfig(), size=(2, 2))
    assert torch.equal(small, encode_label_map(lm, SLMEConfig(), size=None))
    # no interpolated values: only the weights themselves appear
    t = encode_label_map(np.random.default_rng(0).integers(0, 151, (37, 53)).astype(np.uint16), SLMEConfig())
    assert t.shape == (6, 480, 640) and set(torch.unique(t).tolist()) <= {0.0, 0.5, 1.0, 2.0}


def test_config_validation():
    with pytest.raises(ConfigError, match="clusters"):
        SLMEConfig(clusters=4).validate()
    with pytest.raises(ConfigError, match="taxonomy"):
        SLMEConfig(taxonomy="coco").validate()
    with pytest.raises(ConfigError, match="weighting"):
        SLMEConfig(weighting="reverse").validate()
    with pytest.raises(ConfigError, match="expected 6 values"):
        SLMEConfig(weights=[1, 2]).validate()
    with pytest.raises(ConfigError, match="non-negative"):
        SLMEConfig(weights=[1, 1, 1, 1, 1, -1]).validate()
    with pytest.raises(ConfigError, match="slme: clusters"):
        from_dict(SLMEConfig, {"clusters": 5}, where="slme")
    with pytest.raises(ConfigError, match="integer class ids"):
        encode_label_map(np.zeros((4, 4), np.float32), SLMEConfig())
    assert from_dict(SLMEConfig, {"taxonomy": "cityscapes", "clusters": 0, "weighting": "uniform"}).clusters == 0
