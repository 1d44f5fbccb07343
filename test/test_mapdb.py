"""MapDatabase: round trip, crash safety, refusal of foreign/corrupted maps, index agreement.

Descriptors here are synthetic (random unit vectors, labelled so); faiss and SQLite are real.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import time

import numpy as np
import pytest

from structvpr_core.errors import MapError
from structvpr_core.geometry import Pose
from structvpr_core.mapdb import MapDatabase
from structvpr_core.mapdb import storage as mapdb_mod
from structvpr_core.verify import LocalFeatures

DIM = 32
FP = {"architecture": "synthetic-test", "weights_sha256": "ab" * 32, "input_size": [64, 48], "descriptor_dim": DIM}


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synthetic_desc(n, dim=DIM, seed=0):
    return unit(np.random.default_rng(seed).standard_normal((n, dim)))


def keyframes(n, session="s1", t0=0.0):
    return [
        {
            "stamp": t0 + i,
            "pose": Pose((i, 2.0 * i, 0.5), (0.0, 0.0, np.sin(i / 10), np.cos(i / 10))),
            "gps": (45.0 + i * 1e-5, 7.0) if i % 2 else None,
            "session": session,
            "source": f"img{i:04d}.jpg",
        }
        for i in range(n)
    ]


def features(i):
    rng = np.random.default_rng(i)
    return LocalFeatures(
        "sift",
        rng.uniform(0, 100, (20, 2)).astype(np.float32),
        rng.integers(0, 255, (20, 128), dtype=np.uint8),
        (100, 80),
        6.4,
    )


@pytest.fixture
def small_map(tmp_path):
    db = MapDatabase.create(FP, DIM, meta={"features": "sift"})
    x = synthetic_desc(60)
    ids = db.add(x, keyframes(60), local_features=[features(i) if i % 3 else None for i in range(60)])
    path = db.save(tmp_path / "map")
    return db, x, ids, path


def test_round_trip_ids_poses_scores_identical(small_map):
    db, x, ids, path = small_map
    assert ids == list(range(1, 61))
    before = db.search(x[:10], 5)
    loaded = MapDatabase.load(path, expected_fingerprint=FP)
    assert len(loaded) == 60 and loaded.dim == DIM and loaded.fingerprint == FP
    assert loaded.meta == {"features": "sift"}
    assert loaded.search(x[:10], 5) == before  # same ids, bit-identical scores
    assert [h[0][0] for h in before] == ids[:10]  # each vector finds itself first
    for kid in (1, 2, 37, 60):
        assert loaded.keyframe(kid) == db.keyframe(kid)
    kf = loaded.keyframe(2)
    assert kf.pose == keyframes(60)[1]["pose"] and kf.gps == (45.0 + 1e-5, 7.0) and kf.stamp == 1.0
    assert loaded.keyframe(1).gps is None
    f = loaded.local_features(2)
    assert f is not None and np.array_equal(f.descriptors, features(1).descriptors) and f.scale == 6.4
    assert loaded.local_features(4) is None  # keyframe index 3: stored without features
    assert loaded.num_with_features == 40


def test_incremental_add_after_load_and_resave(small_map):
    _, _x, _, path = small_map
    db = MapDatabase.load(path)
    y = synthetic_desc(5, seed=9)
    assert db.add(y, keyframes(5, session="s2", t0=100.0)) == [61, 62, 63, 64, 65]
    assert db.search(y[:1], 1)[0][0][0] == 61
    assert db.keyframe(63).session == "s2" and db.keyframe(10).session == "s1"
    db.save()  # in place: the old directory is swapped out
    again = MapDatabase.load(path)
    assert len(again) == 65 and again.keyframe(65).stamp == 104.0
    assert sorted(p.name for p in path.parent.iterdir()) == ["map"]  # no leftovers


def test_search_min_score_and_exclusions_match_brute_force(small_map):
    db, x, _, _ = small_map
    q = x[:3] + 0.1
    exact = [sorted(((i + 1, float(s)) for i, s in enumerate(x @ qq)), key=lambda t: -t[1]) for qq in q]
    res = db.search(q, 4, min_score=0.3)
    for r, e in zip(res, exact, strict=True):
        assert [i for i, _ in r] == [i for i, s in e if s >= 0.3][:4]
    # exclusion inside faiss (IDSelector) and by predicate give the filtered brute-force answer
    banned = {e[0][0] for e in exact} | {e[1][0] for e in exact}
    by_ids = db.search(q, 3, exclude_ids=sorted(banned))
    by_pred = db.search(q, 3, exclude=lambda kf: kf.id in banned)
    for a, b, e in zip(by_ids, by_pred, exact, strict=True):
        want = [i for i, _ in e if i not in banned][:3]
        assert [i for i, _ in a] == want and [i for i, _ in b] == want
    # temporal exclusion helper: ids of one session newer than a stamp
    assert db.recent_ids("s1", 55.0).tolist() == [57, 58, 59, 60]
    assert db.recent_ids("nope", 0.0).size == 0


def test_wrong_descriptor_dim_is_refused():
    db = MapDatabase.create(FP, DIM)
    with pytest.raises(MapError, match="32-d"):
        db.add(np.ones((2, 16), np.float32), [{}, {}])
    assert db.search(synthetic_desc(1), 3) == [[]]  # empty map: empty answer, no error


# -- crash safety ----------------------------------------------------------------------------


def _crash_on_call(monkeypatch, failing_calls):
    """os.replace inside mapdb raises on the given call numbers (simulating a crash there)."""
    real = os.replace
    calls = {"n": 0}

    def fake(src, dst):
        calls["n"] += 1
        if calls["n"] in failing_calls:
            raise OSError("simulated crash")
        return real(src, dst)

    monkeypatch.setattr(mapdb_mod.os, "replace", fake)


@pytest.mark.parametrize("fail_at", [{1}, {2}])
def test_crash_during_swap_leaves_old_map_loadable(small_map, monkeypatch, fail_at):
    _, x, _, path = small_map
    db = MapDatabase.load(path)
    db.add(synthetic_desc(3, seed=5), keyframes(3, session="s2"))
    _crash_on_call(monkeypatch, fail_at)  # 1: renaming old aside fails; 2: renaming new in fails
    with pytest.raises(MapError, match="could not move the saved map in place \\(simulated crash\\)"):
        db.save()
    monkeypatch.undo()
    old = MapDatabase.load(path)
    assert len(old) == 60 and old.search(x[:1], 1)[0][0][0] == 1


def test_crash_between_renames_is_recovered_on_load(small_map, monkeypatch):
    """Process dies after moving the old map aside and before moving the new one in."""
    _, _, _, path = small_map
    db = MapDatabase.load(path)
    db.add(synthetic_desc(3, seed=5), keyframes(3, session="s2"))
    _crash_on_call(monkeypatch, {2, 3})  # the new->target rename and the undo both "crash"
    with pytest.raises(MapError):
        db.save()
    monkeypatch.undo()
    assert not path.exists()
    assert (path.parent / "map.structvpr-new").is_dir() and (path.parent / "map.structvpr-old").is_dir()
    recovered = MapDatabase.load(path)  # the complete new map is put back in place
    assert path.is_dir() and len(recovered) == 63


def test_failure_while_writing_keeps_old_map_and_removes_the_partial_copy(small_map, monkeypatch):
    _, _, _, path = small_map
    db = MapDatabase.load(path)
    db.add(synthetic_desc(2, seed=3), keyframes(2))

    def broken_write(self, dest):
        dest.write_bytes(bytes(1000))  # part of the file written, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(MapDatabase, "_write_db", broken_write)
    with pytest.raises(MapError) as e:
        db.save()
    monkeypatch.undo()
    msg = str(e.value)
    assert msg.startswith(f"{path}: no space left to save the map (No space left on device); it needs about ")
    assert msg.endswith("free there; nothing was changed") and "\n" not in msg
    assert sorted(p.name for p in path.parent.iterdir()) == ["map"]  # the half-written copy is gone
    assert len(MapDatabase.load(path)) == 60
    db.save()
    assert len(MapDatabase.load(path)) == 62
    assert sorted(p.name for p in path.parent.iterdir()) == ["map"]


# -- refusing wrong or damaged maps ----------------------------------------------------------


def test_fingerprint_mismatch_says_expected_and_found(small_map):
    _, _, _, path = small_map
    other = dict(FP, weights_sha256="cd" * 32)
    with pytest.raises(MapError) as e:
        MapDatabase.load(path, expected_fingerprint=other)
    msg = str(e.value)
    assert "weights_sha256" in msg and "expected 'cdcd" in msg and "found 'abab" in msg and "\n" not in msg


def _edit_manifest(path, fn):
    m = json.loads((path / "manifest.json").read_text())
    fn(m)
    (path / "manifest.json").write_text(json.dumps(m))


def _truncate(f):
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])


def _garbage_same_size(f):
    f.write_bytes(np.random.default_rng(0).integers(0, 255, f.stat().st_size, dtype=np.uint8).tobytes())


def _foreign_sqlite(f):
    f.unlink()
    con = sqlite3.connect(f)
    con.execute("CREATE TABLE photos (name TEXT)")
    con.commit()
    con.close()


def _foreign_sqlite_manifest_size(path):
    _foreign_sqlite(path / "keyframes.sqlite")
    _edit_manifest(path, lambda m: m["files"].update({"keyframes.sqlite": (path / "keyframes.sqlite").stat().st_size}))


def _drop_row(path):
    f = path / "keyframes.sqlite"
    con = sqlite3.connect(f)
    con.execute("DELETE FROM keyframes WHERE id = 60")
    con.commit()
    con.execute("VACUUM")
    con.close()
    _edit_manifest(path, lambda m: m["files"].update({"keyframes.sqlite": f.stat().st_size}))


def _index_data_offset(f) -> int:
    """Where the float32 vectors of a saved IndexFlatIP start (its header: fourcc, d, ntotal, ...)."""
    import faiss

    n_bytes = faiss.read_index(str(f)).ntotal * DIM * 4
    return f.stat().st_size - n_bytes


def _garbage_keep_header(f):
    """Same-size garbage after the header (the case that loaded and scored 1e37)."""
    data = bytearray(f.read_bytes())
    start = _index_data_offset(f)
    data[start:] = np.random.default_rng(1).integers(0, 255, len(data) - start, dtype=np.uint8).tobytes()
    f.write_bytes(bytes(data))


def _zero_vectors(f, rows=(4, 5, 6)):
    data = bytearray(f.read_bytes())
    start = _index_data_offset(f)
    for r in rows:
        data[start + r * DIM * 4 : start + (r + 1) * DIM * 4] = bytes(DIM * 4)
    f.write_bytes(bytes(data))


def _unseal(path):
    """What a map saved before checksums looks like: no sha256, no manifest_sha256."""
    _edit_manifest(path, lambda m: (m.pop("sha256"), m.pop("manifest_sha256")))


# case: (damage, message for a map saved with checksums, message for an older map without them)
EDITED = "manifest.json: edited or damaged since the map was saved"
CORRUPTIONS = {
    "manifest missing": (lambda p: (p / "manifest.json").unlink(), "manifest.json: missing", None),
    "manifest not json": (lambda p: (p / "manifest.json").write_text("{not json"), "manifest.json: unreadable", None),
    "manifest foreign": (
        lambda p: (p / "manifest.json").write_text('{"format": "x"}'),
        "not a structvpr map manifest",
        None,
    ),
    "format version": (lambda p: _edit_manifest(p, lambda m: m.update(format_version=99)), "version 99", None),
    "manifest fields": (lambda p: _edit_manifest(p, lambda m: m.pop("counts")), "counts must be an object", None),
    "input size absurd": (
        lambda p: _edit_manifest(p, lambda m: m["fingerprint"].update(input_size=[100000, 100000])),
        r"fingerprint.input_size must be \[W, H\] with W and H in 1..8192, got \[100000, 100000\]",
        None,
    ),
    "input size edited": (
        lambda p: _edit_manifest(p, lambda m: m["fingerprint"].update(input_size=[640, 480])),
        EDITED,
        "loads",  # nothing can tell a plausible edit of an unsealed manifest
    ),
    "checkpoint not a path": (
        lambda p: _edit_manifest(p, lambda m: m["meta"].update(checkpoint=123)),
        "meta.checkpoint must be a file path or null, got 123",
        None,
    ),
    "features unknown": (
        lambda p: _edit_manifest(p, lambda m: m["meta"].update(features="surf")),
        'meta.features must be one of sift, orb, none, got "surf"',
        None,
    ),
    "dim a string": (
        lambda p: _edit_manifest(p, lambda m: m.update(descriptor_dim="32")),
        'descriptor_dim must be an integer in 1..65536, got "32"',
        None,
    ),
    "index missing": (lambda p: (p / "index.faiss").unlink(), "index.faiss: missing", None),
    "index truncated": (lambda p: _truncate(p / "index.faiss"), "index.faiss: size", None),
    "index garbage": (
        lambda p: _garbage_same_size(p / "index.faiss"),
        "index.faiss: checksum mismatch",
        "not a readable faiss index",
    ),
    "index garbage after header": (
        lambda p: _garbage_keep_header(p / "index.faiss"),
        "index.faiss: checksum mismatch",
        "index.faiss: descriptors that are not unit vectors",
    ),
    "zeroed vectors": (
        lambda p: _zero_vectors(p / "index.faiss"),
        "index.faiss: checksum mismatch",
        r"index.faiss: descriptors that are not unit vectors \(keyframes 5, 6, 7: norm 0, 0, 0, not 1\)",
    ),
    "db missing": (lambda p: (p / "keyframes.sqlite").unlink(), "keyframes.sqlite: missing", None),
    "db truncated": (lambda p: _truncate(p / "keyframes.sqlite"), "keyframes.sqlite: size", None),
    "db garbage": (
        lambda p: _garbage_same_size(p / "keyframes.sqlite"),
        "keyframes.sqlite: checksum mismatch",
        "not a keyframe database",
    ),
    "db row damaged": (
        lambda p: _damage_row(p, 7),
        "keyframes.sqlite: checksum mismatch",
        "loads",  # the row is read when a search names it: then a MapError naming it (test_node_robustness)
    ),
    "db foreign": (_foreign_sqlite_manifest_size, EDITED, "no keyframes table"),
    "db row missing": (_drop_row, EDITED, "holds 59 keyframes"),
    "count mismatch": (
        lambda p: _edit_manifest(p, lambda m: m["counts"].update(keyframes=61)),
        EDITED,
        "manifest says 61",
    ),
    "not a dir": (lambda p: (shutil.rmtree(p), p.write_text("x")), "not a directory", None),
    "absent": (lambda p: shutil.rmtree(p), "no such map directory", None),
}


@pytest.mark.parametrize("sealed", [True, False], ids=["with-checksums", "older-map"])
@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_damaged_map_gives_its_message_fast(small_map, case, sealed):
    _, _, _, path = small_map
    damage, expected_sealed, expected_old = CORRUPTIONS[case]
    expected = expected_sealed if sealed else (expected_old or expected_sealed)
    if not sealed:
        _unseal(path)
    damage(path)
    t = time.perf_counter()
    if expected == "loads":
        MapDatabase.load(path).close()
        return
    with pytest.raises(MapError, match=expected) as e:
        MapDatabase.load(path)
    assert time.perf_counter() - t < 5.0 and "\n" not in str(e.value)


def test_older_map_without_checksums_loads_with_a_warning(small_map, caplog):
    _, x, _, path = small_map
    _unseal(path)
    with caplog.at_level("WARNING", logger="structvpr"):
        db = MapDatabase.load(path)
    assert any("without checksums" in r.getMessage() and "map-info --verify" in r.getMessage() for r in caplog.records)
    assert db.search(x[:1], 1)[0][0][0] == 1
    db.close()


def test_saved_map_carries_checksums_of_its_files(small_map):
    import hashlib

    _, _, _, path = small_map
    m = json.loads((path / "manifest.json").read_text())
    for name in ("index.faiss", "keyframes.sqlite"):
        assert m["sha256"][name] == hashlib.sha256((path / name).read_bytes()).hexdigest()
    assert len(m["manifest_sha256"]) == 64


def test_descriptors_that_are_not_unit_vectors_are_refused_on_add():
    db = MapDatabase.create(FP, DIM)
    x = synthetic_desc(5)
    x[2] = 0.0
    x[4] *= 3.0
    with pytest.raises(
        MapError, match=r"map.add: descriptors that are not unit vectors \(keyframes 3, 5: norm 0, 3, not 1\)"
    ):
        db.add(x, keyframes(5))
    assert len(db) == 0
    nan = synthetic_desc(1)
    nan[0, 0] = np.nan
    with pytest.raises(MapError, match="NaN"):
        db.add(nan, keyframes(1))


# -- index types -----------------------------------------------------------------------------


def test_ivfpq_collects_exactly_until_trained_and_round_trips(tmp_path):
    x = synthetic_desc(3000, seed=1)
    db = MapDatabase.create(FP, DIM, "ivfpq", {"auto_train_at": 2000, "nlist": 16, "pq_m": 8})
    db.add(x[:1000], [{}] * 1000)
    assert not db.trained and db.search(x[:1], 1)[0][0][0] == 1  # exact while untrained
    db.save(tmp_path / "untrained")
    assert not MapDatabase.load(tmp_path / "untrained").trained
    db.add(x[1000:], [{}] * 2000)  # crosses auto_train_at
    assert db.trained and len(db) == 3000
    path = db.save(tmp_path / "trained")
    loaded = MapDatabase.load(path)
    assert loaded.trained and loaded.index_params["nprobe"] == db.index_params["nprobe"]
    assert loaded.search(x[:20], 3) == db.search(x[:20], 3)


def test_ivfflat_exact_until_trained_and_round_trip_keeps_nprobe(tmp_path):
    x = synthetic_desc(3000, seed=2)
    db = MapDatabase.create(FP, DIM, "ivfflat", {"auto_train_at": 2000})
    db.add(x[:1000], [{}] * 1000)
    assert not db.trained and db.search(x[:1], 1)[0][0][0] == 1  # exact while untrained
    db.add(x[1000:], [{}] * 2000)  # crosses auto_train_at
    assert db.trained and db.index_params["nlist"] == 3000 // 39  # 4·sqrt(N) capped by 39/list
    assert db.index_params["nprobe"] == 16  # the documented default
    db.set_search_params(nprobe=5)
    path = db.save(tmp_path / "m")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["index"]["type"] == "ivfflat" and manifest["index"]["params"]["nprobe"] == 5
    loaded = MapDatabase.load(path)
    assert loaded.trained and loaded.index_params == db.index_params
    q = x[:40] + 0.05 * synthetic_desc(40, seed=3)
    assert loaded.search(q, 3) == db.search(q, 3)
    # nprobe = nlist visits every list: exact search, exact scores.
    loaded.set_search_params(nprobe=loaded.index_params["nlist"])
    exact = np.argsort(-(q @ x.T), axis=1)[:, :3] + 1
    assert [[i for i, _ in r] for r in loaded.search(q, 3)] == exact.tolist()


def test_set_search_params_validates():
    flat = MapDatabase.create(FP, DIM)
    with pytest.raises(MapError, match="flat index has no search parameter 'nprobe'"):
        flat.set_search_params(nprobe=8)
    ivf = MapDatabase.create(FP, DIM, "ivfflat")
    with pytest.raises(MapError, match="ef_search"):
        ivf.set_search_params(ef_search=64)
    for bad in (0, -3, 2.5, True, "8"):
        with pytest.raises(MapError, match="positive integer"):
            ivf.set_search_params(nprobe=bad)
    assert ivf.index_params["nprobe"] == 16  # unchanged by the refusals
    ivf.set_search_params(nprobe=np.int64(4))
    assert ivf.index_params["nprobe"] == 4
    hnsw = MapDatabase.create(FP, DIM, "hnsw")
    hnsw.set_search_params(ef_search=200)
    assert hnsw.index_params["ef_search"] == 200
    with pytest.raises(MapError, match="nprobe"):
        hnsw.set_search_params(nprobe=4)


def test_build_map_auto_index_is_ivfflat_from_50k():
    from structvpr_core import mapbuild

    assert mapbuild.AUTO_IVFFLAT_AT == 50_000
    assert mapbuild.auto_index(1) == "flat" and mapbuild.auto_index(49_999) == "flat"
    assert mapbuild.auto_index(50_000) == "ivfflat" and mapbuild.auto_index(10**6) == "ivfflat"


def test_too_few_vectors_to_train_ivfpq_is_a_clear_error():
    db = MapDatabase.create(FP, DIM, "ivfpq")
    db.add(synthetic_desc(10), [{}] * 10)
    with pytest.raises(MapError, match="at least 256"):
        db.train()


@pytest.fixture(scope="module")
def synthetic_100k():
    """10^5 synthetic 64-d descriptors in clusters (places) and 300 noisy revisits of some of them."""
    d, n = 64, 100_000
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((n // 100, d)).astype(np.float32)
    db = unit(centres[rng.integers(0, len(centres), n)] + 0.8 * rng.standard_normal((n, d)))
    src = rng.choice(n, 300, replace=False)
    q = unit(db[src] + 0.1 * rng.standard_normal((300, d)))
    exact = np.argmax(q @ db.T, axis=1) + 1
    return db, q, exact


# Measured on this synthetic set: flat 1.000, ivfpq 0.947, hnsw 0.980 (CPU: 3 s, 7 s single-thread),
# ivfflat with its defaults (nlist 4·sqrt(N) = 1264, nprobe 16) 1.000 (3.4 s: training + adding).
@pytest.mark.parametrize(
    "kind,params,floor",
    [
        ("flat", None, 1.0),
        ("ivfflat", None, 0.99),
        ("ivfpq", {"nlist": 256, "pq_m": 16, "nprobe": 16}, 0.85),
        ("hnsw", {"M": 16, "ef_construction": 40, "ef_search": 64}, 0.95),
    ],
)
def test_100k_synthetic_index_returns_exact_top1(synthetic_100k, kind, params, floor):
    db, q, exact = synthetic_100k
    fp = dict(FP, descriptor_dim=db.shape[1])
    m = MapDatabase.create(fp, db.shape[1], kind, params)
    m.add(db, [{}] * len(db))
    m.train()
    top1 = np.array([r[0][0] for r in m.search(q, 1)])
    agreement = float(np.mean(top1 == exact))
    assert agreement >= floor, f"{kind}: top-1 agreement with exact search {agreement:.3f} < {floor}"


# -- full check and repair -----------------------------------------------------------------------


def _damage_row(path, kid, column="source"):
    con = sqlite3.connect(path / "keyframes.sqlite")
    with con:
        kind = "TEXT" if column == "source" else "BLOB"
        con.execute(f"UPDATE keyframes SET {column} = CAST(X'fffe41' AS {kind}) WHERE id = ?", (kid,))
    con.close()


def test_verify_reads_everything_and_goes_on_after_a_problem(small_map):
    from structvpr_core.mapdb import verify_map

    _, _, _, path = small_map
    report = verify_map(path)
    assert report.ok and report.sealed, report.problems
    assert any("60 keyframe rows and 40 local-feature sets decode" in c for c in report.checked)
    assert any("flat index of 60 finite unit descriptors" in c for c in report.checked)

    _unseal(path)  # an older map: a damaged row loads, only the full check finds it
    _damage_row(path, 7)
    _damage_row(path, 8, column="features")
    _zero_vectors(path / "index.faiss", rows=(9,))
    report = verify_map(path)
    assert not report.ok and not report.sealed
    problems = "\n".join(report.problems)
    assert "keyframes.sqlite: 1 unreadable keyframe row(s): ids 7" in problems
    assert "keyframes.sqlite: 1 corrupted local-feature set(s): ids 8" in problems
    assert "index.faiss: descriptors that are not unit vectors (keyframe 10: norm 0, not 1)" in problems


def test_repair_seals_an_older_map_and_refuses_what_it_cannot_rebuild(small_map, caplog):
    from structvpr_core.mapdb import repair_map, verify_map

    _, _, _, path = small_map
    assert "nothing to repair" in repair_map(path)
    _unseal(path)
    assert "checksums added" in repair_map(path)
    with caplog.at_level("WARNING", logger="structvpr"):
        MapDatabase.load(path).close()
    assert not [r for r in caplog.records if "without checksums" in r.getMessage()]
    assert verify_map(path).sealed

    _edit_manifest(path, lambda m: m["fingerprint"].update(input_size=[128, 96]))
    with pytest.raises(MapError, match="--accept-edited-manifest"):
        repair_map(path)
    assert "re-sealed as edited" in repair_map(path, accept_edited_manifest=True)
    assert MapDatabase.load(path).fingerprint["input_size"] == [128, 96]

    _garbage_keep_header(path / "index.faiss")
    with pytest.raises(MapError, match=r"index\.faiss is damaged and the descriptors are stored nowhere else"):
        repair_map(path)


def test_a_damaged_row_of_an_older_map_is_a_map_error_naming_it(small_map):
    _, _, _, path = small_map
    _unseal(path)
    _damage_row(path, 7)
    db = MapDatabase.load(path)  # the row is not read on load
    with pytest.raises(MapError, match=r"keyframes\.sqlite: keyframe 7 is unreadable \(OperationalError: Could not"):
        db.keyframe(7)
    assert db.keyframe(8).source == "img0007.jpg"
    db.close()


# -- saving where it cannot be saved ---------------------------------------------------------------
# chmod does not stop root; a regular file where a directory should be stops everyone.


def test_an_unwritable_location_is_found_by_the_probe_and_by_save(small_map, tmp_path):
    from structvpr_core.mapdb.storage import check_writable

    db, _, _, _ = small_map
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the map's parent directory should be")
    target = blocker / "map"
    reason = rf"\({blocker} is a file, not a directory\)"
    with pytest.raises(MapError, match=rf"not_a_dir/map: the map cannot be saved there {reason}: choose a writable"):
        check_writable(target)
    with pytest.raises(MapError, match=rf"not_a_dir/map: cannot save the map there {reason}; nothing was changed") as e:
        db.save(target)
    assert "\n" not in str(e.value)
    check_writable(tmp_path / "fresh" / "deeper" / "map")  # missing parents are made, like save does
    assert not list((tmp_path / "fresh" / "deeper").iterdir())  # the probe is gone
    with pytest.raises(MapError, match=r"free in .*, saving this map needs about"):
        check_writable(tmp_path / "map2", needed_bytes=2**62)


def test_save_or_fallback_names_where_the_keyframes_went(small_map, tmp_path):
    from structvpr_core.mapdb.storage import fallback_locations

    db, _, _, _ = small_map
    blocker = tmp_path / "blocked"
    blocker.write_text("x")
    target = blocker / "map"
    first, cache = fallback_locations(target, "20250101-000000")
    assert first.name == "map.unsaved-20250101-000000" and first.parent == blocker
    assert cache.parent.name == "unsaved-maps" and cache.name == "map.unsaved-20250101-000000"
    saved, failures = db.save_or_fallback(target, [first, tmp_path / "elsewhere" / "map"])
    assert saved == tmp_path / "elsewhere" / "map" and len(failures) == 2
    assert len(MapDatabase.load(saved)) == 60
    with pytest.raises(MapError, match="could not be saved anywhere"):
        db.save_or_fallback(target, [first])
