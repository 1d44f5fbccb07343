"""Recall@N and precision-recall against hand-built cases and brute-force numpy; the descriptor cache."""

import os
import shutil

import numpy as np
import pytest

from structvpr_core.data import load_dataset
from structvpr_core.errors import DatasetError
from structvpr_core.evaluate import (
    cache_key,
    evaluate,
    format_result,
    precision_recall,
    recall_at_n,
    recall_from_predictions,
    search,
)
from structvpr_core.extractor import Extractor


def brute_force_recall(db, q, positives, ns):
    db = db / np.linalg.norm(db, axis=1, keepdims=True)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    ranking = np.argsort(-(q @ db.T), axis=1)
    evaluated = [i for i, p in enumerate(positives) if len(p)]
    return {n: np.mean([np.intersect1d(ranking[i, :n], positives[i]).size > 0 for i in evaluated]) for n in ns}


def test_recall_matches_a_brute_force_numpy_computation():
    rng = np.random.default_rng(0)
    db = rng.normal(size=(300, 24)).astype(np.float32) * rng.uniform(0.5, 3, (300, 1))  # unnormalised on purpose
    q = rng.normal(size=(80, 24)).astype(np.float32)
    positives = [np.sort(rng.choice(300, size=rng.integers(0, 6), replace=False)) for _ in range(80)]
    ns = (1, 5, 10, 20, 50)
    got = recall_at_n(db, q, positives, ns)
    expected = brute_force_recall(db, q, positives, ns)
    assert got.keys() == expected.keys()
    for n in ns:
        assert got[n] == pytest.approx(expected[n])
    assert got[1] < got[50]  # not degenerate


def test_hand_built_recall():
    angles = np.radians([0, 20, 40, 60, 80])
    db = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    # query near 0° (its positive is the 60° item: rank 4), near 80° (positive 80°: rank 1),
    # near 35° (positives 20° and 0°: ranks 2 and 3), and one query with no positive at all
    q = np.stack([np.cos(np.radians([1, 79, 35, 50])), np.sin(np.radians([1, 79, 35, 50]))], axis=1)
    positives = [np.array([3]), np.array([4]), np.array([0, 1]), np.array([], dtype=np.int64)]
    r = recall_at_n(db, q, positives, ns=(1, 2, 3, 4, 100))
    assert r == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 3: pytest.approx(2 / 3), 4: 1.0, 100: 1.0}
    scores, idx = search(db, q, 2)
    assert idx[0].tolist() == [0, 1] and scores[1, 0] == pytest.approx(np.cos(np.radians(1)), abs=1e-6)
    with pytest.raises(DatasetError, match="no query has a positive"):
        recall_from_predictions(idx, [np.array([], dtype=np.int64)] * 4)


def brute_force_pr(scores, correct, n_pos):
    points = [(0.0, 1.0)]
    for t in sorted(set(scores), reverse=True):
        accepted = scores >= t
        tp, fp = (accepted & correct).sum(), (accepted & ~correct).sum()
        points.append((tp / n_pos, tp / (tp + fp)))
    return points


def test_precision_recall_hand_built_and_brute_force():
    pr = precision_recall(np.array([0.9, 0.8, 0.7, 0.6]), np.array([True, True, False, True]), 4)
    assert pr["recall"] == pytest.approx([0, 0.25, 0.5, 0.5, 0.75])
    assert pr["precision"] == pytest.approx([1, 1, 1, 2 / 3, 0.75])
    assert pr["recall_at_100_precision"] == pytest.approx(0.5)
    assert pr["auc"] == pytest.approx(0.5 + 0.25 * (2 / 3 + 0.75) / 2)
    # equal scores are accepted together: a wrong match tied with the best kills 100 % precision
    tied = precision_recall(np.array([0.9, 0.9, 0.5]), np.array([True, False, True]), 2)
    assert tied["recall_at_100_precision"] == 0.0 and len(tied["recall"]) == 3
    rng = np.random.default_rng(4)
    scores = np.round(rng.uniform(size=200), 2)  # many ties
    correct = rng.random(200) < 0.6
    n_pos = 180  # some queries have a true match that their best match missed
    pr = precision_recall(scores, correct, n_pos)
    expected = brute_force_pr(scores, correct, n_pos)
    # approx compares arrays element-wise (pytest >= 9 refuses nested lists of tuples)
    assert np.array(list(zip(pr["recall"], pr["precision"], strict=True))) == pytest.approx(np.array(expected))
    best = max([r for r, p in expected if p == 1.0] + [0.0])
    assert pr["recall_at_100_precision"] == pytest.approx(best)


@pytest.fixture(scope="module")
def extractor(one_torch_thread):
    return Extractor(device="cpu", image_size=(160, 120))


@pytest.fixture()
def small_geo_set(tmp_path, corridor):
    """10 real Corridor frames as a folder-format set: reference frame i at i×30 m, query i at i×30 + 4 m."""
    root = tmp_path / "corridor-folder"
    for sub in ("database", "queries"):
        (root / sub).mkdir(parents=True)
    for k, i in enumerate(range(0, 100, 10)):
        shutil.copy(
            corridor / "ref" / f"{i:07d}.jpg", root / "database" / f"@{500000 + 30 * k:.1f}@4000000.0@ref{i}@.jpg"
        )
        shutil.copy(
            corridor / "query" / f"{i:07d}.jpg", root / "queries" / f"@{500004 + 30 * k:.1f}@4000000.0@q{i}@.jpg"
        )
    return load_dataset(root)


def test_evaluate_agrees_with_independent_embeddings_and_caches(small_geo_set, extractor, tmp_path):
    ds = small_geo_set
    assert all(len(p) == 1 for p in ds.positives)
    cache = tmp_path / "cache"
    first = evaluate(ds, extractor, (1, 5), cache_dir=cache, progress=False)
    db = extractor.embed_paths(ds.database, progress=False)
    q = extractor.embed_paths(ds.queries, progress=False)
    assert first["recall"] == {
        str(n): pytest.approx(v) for n, v in brute_force_recall(db, q, ds.positives, (1, 5)).items()
    }
    assert first["descriptors_cached"] is False and first["descriptor_dim"] == 448 and first["pr"] is None
    assert first["num_queries"] == 10 and first["synthetic"] is False
    # One entry per image list: the database's and the queries'.
    files = {f.stem for f in (cache / "descriptors").glob("*.npz")}
    db_key, q_key = cache_key(ds.database, extractor.fingerprint), cache_key(ds.queries, extractor.fingerprint)
    assert files == {db_key, q_key}
    with np.load(cache / "descriptors" / f"{db_key}.npz") as stored:
        np.testing.assert_allclose(stored["descriptors"], db, atol=1e-5)
    second = evaluate(ds, extractor, (1, 5), cache_dir=cache, progress=False)
    assert second["descriptors_cached"] is True and second["recall"] == first["recall"]
    # a changed image invalidates the entry; a damaged entry is recomputed, not trusted
    st = os.stat(ds.queries[0])
    os.utime(ds.queries[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert evaluate(ds, extractor, (1,), cache_dir=cache, progress=False)["descriptors_cached"] is False
    for f in (cache / "descriptors").glob("*.npz"):
        f.write_bytes(b"damaged")
    assert evaluate(ds, extractor, (1,), cache_dir=cache, progress=False)["descriptors_cached"] is False
    assert "R@1" in format_result(first) and "SYNTHETIC" not in format_result(first)


def test_save_matches_marks_each_query(small_geo_set, extractor, tmp_path):
    out = tmp_path / "matches"
    result = evaluate(small_geo_set, extractor, (1,), use_cache=False, progress=False, save_matches=out)
    files = sorted(out.glob("*.jpg"))
    assert len(files) == 10
    n_ok = sum("_ok_" in f.name for f in files)
    assert n_ok == round(result["recall"]["1"] * 10)
