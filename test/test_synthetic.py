"""The synthetic structured-scene generator: determinism, layout, label maps aligned with images."""

import hashlib
import json

import numpy as np
import pytest

from structvpr_core.data import load_dataset
from structvpr_core.data.labelmaps import LabelMapTree, read_label_map
from structvpr_core.data.synthetic import generate, split_of, synthetic_path
from structvpr_core.data.synthetic_props import ADE
from structvpr_core.data.synthetic_render import Camera, Condition, pack, render
from structvpr_core.data.synthetic_world import add_traffic, make_world
from structvpr_core.errors import DatasetError
from structvpr_core.images import read_image
from structvpr_core.slme import load_taxonomy

PLACES = 6
SIZE = (160, 120)


def tree_digest(root):
    """Hash of every file (path and bytes) except the manifest, which records the run time."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "manifest.json":
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("gen") / "streets-synthetic", PLACES, seed=5, size=SIZE, progress=False)


def test_same_seed_same_bytes_other_seed_other_images(synthetic, tmp_path):
    again = generate(tmp_path / "again-synthetic", PLACES, seed=5, size=SIZE, progress=False)
    assert tree_digest(again) == tree_digest(synthetic)
    other = generate(tmp_path / "other-synthetic", PLACES, seed=6, size=SIZE, progress=False)
    assert tree_digest(other) != tree_digest(synthetic)


def test_output_is_always_labelled_synthetic_and_never_clobbered(tmp_path):
    assert synthetic_path(tmp_path / "bench") == tmp_path / "bench-synthetic"
    out = generate(tmp_path / "bench", 3, seed=0, size=(64, 48), db_views=1, query_views=1, progress=False)
    assert out == tmp_path / "bench-synthetic" and (out / "SYNTHETIC.md").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["synthetic"] is True and manifest["taxonomy"] == "ade20k"
    with pytest.raises(DatasetError, match="already exists"):
        generate(tmp_path / "bench", 3, seed=0, size=(64, 48), progress=False)
    generate(tmp_path / "bench", 3, seed=1, size=(64, 48), db_views=1, query_views=1, overwrite=True, progress=False)
    assert json.loads((out / "manifest.json").read_text())["seed"] == 1
    stranger = tmp_path / "mine-synthetic"
    (stranger / "keep.txt").parent.mkdir()
    (stranger / "keep.txt").write_text("not generated here")
    with pytest.raises(DatasetError, match="not a synthetic set made here"):
        generate(stranger, 3, seed=0, overwrite=True, progress=False)
    assert (stranger / "keep.txt").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_splits_load_and_positives_are_exactly_the_views_of_the_same_place(synthetic):
    assert [split_of(i, PLACES) for i in range(PLACES)] == ["train"] * 4 + ["val"] + ["test"]
    seen_places = set()
    for split in ("train", "val", "test"):
        ds = load_dataset(synthetic, split=split)
        assert ds.format == "folder" and ds.synthetic
        assert ds.num_database == ds.num_queries  # 2 database and 2 query views per place

        def place(p):
            return p.name.split("@")[4]

        for qi, q in enumerate(ds.queries):
            same = [i for i, d in enumerate(ds.database) if place(d) == place(q)]
            assert ds.positives[qi].tolist() == same and len(same) == 2
            assert "day-summer@" not in q.name  # every query changed appearance
        # also close enough for the 10 m "non-trivial" training positives
        assert all(len(p) == 2 for p in ds.within(10.0))
        seen_places |= {place(p) for p in ds.database}
    assert len(seen_places) == PLACES


def test_label_maps_mirror_the_images_with_their_size_and_known_ids(synthetic):
    tree = LabelMapTree(synthetic / "labelmaps", synthetic, taxonomy="ade20k")
    images = sorted(synthetic.glob("*/*/*.jpg"))
    assert len(images) == PLACES * 4
    tree.check(images)
    present = set()
    for img in images:
        label = tree.read(img, size=SIZE)
        present |= set(np.unique(label).tolist())
    assert {ADE["sky"], ADE["building"], ADE["road"], ADE["sidewalk"]} <= present
    assert read_image(images[0]).shape[:2] == read_label_map(tree.path_for(images[0])).shape


def test_class_ids_fall_in_the_intended_slme_clusters():
    tax = load_taxonomy("ade20k")
    cluster = dict(zip(tax.class_ids, tax.class_clusters, strict=True))
    intended = {
        "sky": "sky",
        "road": "ground",
        "sidewalk": "ground",
        "building": "buildings",
        "house": "buildings",
        "fence": "buildings",
        "tree": "vegetation",
        "grass": "vegetation",
        "plant": "vegetation",
        "car": "dynamic",
        "bus": "dynamic",
        "person": "dynamic",
        "signboard": "other",
        "streetlight": "other",
    }
    assert set(intended) == set(ADE)
    for name, group in intended.items():
        assert cluster[ADE[name]] == group, name


def _render(place_seed, cond, size=(320, 240)):
    world = make_world(np.random.default_rng(place_seed))
    rng = np.random.default_rng(place_seed + 1)
    groups = world.groups + add_traffic(world, rng)
    cam = Camera(x=0.5, z=0.0, yaw=0.05, height=1.7, f=0.85 * size[0], cx=size[0] / 2, cy=size[1] * 0.5)
    return render(pack(groups), cam, cond, size, rng)


def test_label_edges_coincide_with_image_edges():
    """Noise-free render: where the label changes the colour changes too, and not 2 px off."""
    image, label = _render(11, Condition(light="day", season="summer", noise=0.0))
    img = image.astype(np.int32)

    def agreement(shift):
        m, w = 3, label.shape[1]
        lab_edge = label[:, m : w - m - 1] != label[:, m + 1 : w - m]
        col_edge = np.abs(img[:, m + shift : w - m - 1 + shift] - img[:, m + 1 + shift : w - m + shift]).sum(2) > 6
        return (lab_edge & col_edge).sum() / lab_edge.sum()

    assert agreement(0) > 0.9
    assert agreement(2) < agreement(0) - 0.3 and agreement(-2) < agreement(0) - 0.3


def test_appearance_changes_but_structure_stays():
    day_img, day_lab = _render(21, Condition(light="day", season="summer", noise=0.0))
    night_img, night_lab = _render(21, Condition(light="night", season="summer", noise=0.0))
    assert np.array_equal(day_lab, night_lab)  # light changes nothing structural
    assert night_img.mean() < 0.5 * day_img.mean()
    sky = day_lab == ADE["sky"]
    assert (day_img[sky][:, 0] > day_img[sky][:, 2]).mean() > 0.95  # a blue day sky where the label says sky
    _winter_img, winter_lab = _render(21, Condition(light="day", season="winter", noise=0.0))
    # leaves fall in winter: fewer tree pixels, and the label map says so too
    assert (winter_lab == ADE["tree"]).sum() < 0.6 * (day_lab == ADE["tree"]).sum()
    static = np.isin(day_lab, [ADE["building"], ADE["road"]]) & np.isin(winter_lab, [ADE["building"], ADE["road"]])
    assert static.mean() > 0.3
