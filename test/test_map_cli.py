"""build-map / query / map-info / eval-loop end to end: real Extractor (ImageNet MobileNetV2 at
the Corridor's native 160×120), real Corridor images, real faiss/SQLite/OpenCV."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_bagio import write_bag

from structvpr_core.cli import main
from structvpr_core.errors import ConfigError
from structvpr_core.extractor import Extractor
from structvpr_core.geometry import Pose
from structvpr_core.images import read_image
from structvpr_core.mapdb import MapDatabase

N = 24
SIZE = ["--size", "160", "120"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def route(corridor, tmp_path_factory):
    """The first N frames of both Corridor passes, a pose CSV, and a map built from the refs."""
    root = tmp_path_factory.mktemp("route")
    for side in ("ref", "query"):
        (root / side).mkdir()
        for p in sorted((corridor / side).glob("*.jpg"))[:N]:
            shutil.copy(p, root / side / p.name)
    rows = ["image,x,y,stamp"] + [
        f"{p.name},{i * 0.5},0,{100 + i}" for i, p in enumerate(sorted((root / "ref").iterdir()))
    ]
    (root / "poses.csv").write_text("\n".join(rows) + "\n")
    gt = ["query_index,matching_ref_indices"] + [
        f"{i}," + " ".join(str(j) for j in range(max(0, i - 2), min(N, i + 3))) for i in range(N)
    ]
    (root / "ground_truth.csv").write_text("\n".join(gt) + "\n")
    assert (
        main(
            [
                "build-map",
                "--images",
                str(root / "ref"),
                "--poses",
                str(root / "poses.csv"),
                "--out",
                str(root / "map"),
                *SIZE,
                "--no-progress",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    return root


def test_build_map_summary_and_map_info(route, capsys):
    code, out, _ = run(capsys, "map-info", route / "map")
    assert code == 0
    info = json.loads(out)
    assert info["counts"]["keyframes"] == N and info["counts"]["with_local_features"] == N
    assert info["fingerprint"]["input_size"] == [160, 120] and info["descriptor_dim"] == 448
    assert info["index"]["type"] == "flat" and info["meta"]["features"] == "sift"
    m = MapDatabase.load(route / "map")
    kf = m.keyframe(3)
    assert kf.pose == Pose((1.0, 0.0, 0.0)) and kf.stamp == 102.0 and kf.source.endswith("0000002.jpg")


def test_query_json_format_and_ranking(route, capsys):
    q = [route / "ref" / "0000005.jpg", route / "query" / "0000010.jpg"]
    code, out, _ = run(capsys, "query", "--map", route / "map", *q, "--top-k", "3", "--json", route / "q.json")
    assert code == 0 and "id 6  score 1.0000" in out
    res = json.loads((route / "q.json").read_text())
    assert [r["query"] for r in res] == [str(p) for p in q]
    for r in res:
        assert set(r) == {"query", "candidates"} and len(r["candidates"]) == 3
        for c in r["candidates"]:
            assert set(c) == {"map_id", "score", "source", "pose", "inliers"}
            assert c["inliers"] is None and set(c["pose"]) == {"position", "orientation"}
        scores = [c["score"] for c in r["candidates"]]
        assert scores == sorted(scores, reverse=True)
    assert res[0]["candidates"][0]["map_id"] == 6 and res[0]["candidates"][0]["score"] > 0.9999

    code, _, _ = run(capsys, "query", "--map", route / "map", q[1], "--verify", "--json", route / "v.json")
    cands = json.loads((route / "v.json").read_text())[0]["candidates"]
    assert code == 0 and all(isinstance(c["inliers"], int) for c in cands)
    assert [c["inliers"] for c in cands] == sorted((c["inliers"] for c in cands), reverse=True)


def test_eval_loop_matches_brute_force_retrieval(route, capsys):
    code, out, _ = run(
        capsys,
        "eval-loop",
        "--dataset",
        route,
        *SIZE,
        "--verify",
        "--verify-candidates",
        "5",
        "--json",
        route / "eval.json",
        "--no-progress",
        "--device",
        "cpu",
    )
    assert code == 0 and "verified" in out
    rep = json.loads((route / "eval.json").read_text())
    # Independent check of the retrieval numbers: exact search by hand with the same model.
    ex = Extractor(device="cpu", image_size=(160, 120))
    dr = ex.embed([read_image(p) for p in sorted((route / "ref").iterdir())])
    dq = ex.embed([read_image(p) for p in sorted((route / "query").iterdir())])
    ranks = np.argsort(-(dq @ dr.T), axis=1)
    for n in (1, 5):
        want = np.mean([any(abs(j - i) <= 2 for j in ranks[i, :n]) for i in range(N)])
        assert rep["retrieval"][f"recall@{n}"] == pytest.approx(want)
    for part in ("retrieval", "verified"):
        r = rep[part]
        assert 0 <= r["recall@1"] <= r["recall@5"] <= 1 and 0 <= r["pr_auc"] <= 1
        assert 0 <= r["recall_at_100_precision"] <= r["recall@1"]
    assert set(rep["timings_ms"]) == {"extract", "search", "verify"}
    assert rep["num_queries"] == N and rep["synthetic"] is False


def test_build_map_from_a_bag_with_poses(route, tmp_path, capsys):
    imgs = [(10.0 + t, read_image(p)) for t, p in enumerate(sorted((route / "ref").iterdir())[:8])]
    poses = [(9.5 + t, Pose((t - 0.5, 0.0, 0.0))) for t in range(9)]
    bag = write_bag(tmp_path / "bag", imgs, poses, storage="mcap")
    code, out, _ = run(
        capsys,
        "build-map",
        "--bag",
        bag,
        "--image-topic",
        "/cam/image",
        "--pose-topic",
        "/pose",
        "--min-interval",
        "1.5",
        "--features",
        "orb",
        "--out",
        tmp_path / "map",
        *SIZE,
        "--no-progress",
        "--device",
        "cpu",
    )
    assert code == 0 and "4 keyframes" in out
    m = MapDatabase.load(tmp_path / "map")
    assert [kf.stamp for kf in m.keyframes()] == [10.0, 12.0, 14.0, 16.0]
    assert [kf.pose.position[0] for kf in m.keyframes()] == pytest.approx([0.0, 2.0, 4.0, 6.0])
    assert m.local_features(1).kind == "orb" and m.keyframe(2).source.endswith("#/cam/image@12000000000")


def test_folder_format_names_give_positions(route, tmp_path, capsys):
    db = tmp_path / "ds" / "database"
    db.mkdir(parents=True)
    for i, p in enumerate(sorted((route / "ref").iterdir())[:3]):
        shutil.copy(p, db / f"@{500000 + 10 * i:.2f}@{4100000 + i:.2f}@17@T@45.{i}@7.5@@@@@@@@.jpg")
    code, _, _ = run(
        capsys,
        "build-map",
        "--images",
        tmp_path / "ds",
        "--out",
        tmp_path / "m",
        *SIZE,
        "--features",
        "none",
        "--no-progress",
        "--device",
        "cpu",
    )
    assert code == 0
    kfs = list(MapDatabase.load(tmp_path / "m").keyframes())
    assert [k.pose.position[:2] for k in kfs] == [(500000.0, 4100000.0), (500010.0, 4100001.0), (500020.0, 4100002.0)]
    assert kfs[1].gps == (45.1, 7.5)


def test_failures_are_one_line_errors(route, tmp_path, capsys):
    code, _, err = run(capsys, "query", "--map", tmp_path / "absent", route / "ref" / "0000001.jpg")
    assert code == 1 and err.strip().count("\n") == 0 and "no such map directory" in err
    code, _, err = run(capsys, "build-map", "--images", route / "ref", "--out", route / "map", *SIZE)
    assert code == 1 and "already exists" in err
    # A map whose fingerprint names other weights is refused by query.
    other = tmp_path / "other"
    shutil.copytree(route / "map", other)
    from structvpr_core.mapdb.integrity import seal

    manifest = json.loads((other / "manifest.json").read_text())
    manifest["fingerprint"]["weights_sha256"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(seal(manifest)))  # as that model's own map would be
    code, _, err = run(capsys, "query", "--map", other, route / "ref" / "0000001.jpg")
    assert code == 1 and "built with another model" in err and "weights_sha256" in err
    code, _, err = run(capsys, "build-map", "--bag", tmp_path, "--out", tmp_path / "x")
    assert code == 1 and "--image-topic" in err


@pytest.mark.parametrize("cmd", ["build-map", "query", "map-info", "eval-loop"])
def test_help_explains(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0 and "Example" in capsys.readouterr().out


def test_mapbuild_library_call_returns_the_map(route, tmp_path):
    """build_map as a script or a notebook calls it: a conf dict over the defaults, a Path back."""
    from structvpr_core import mapbuild

    conf = {
        "model": {"image_size": (160, 120), "device": "cpu"},
        "verification": {"features": "none"},
        "session": "nb",
        "progress": False,
    }
    out = mapbuild.main(conf, route / "ref", tmp_path / "m", poses=route / "poses.csv")
    assert out == tmp_path / "m"
    m = MapDatabase.load(out)
    assert len(m) == N and m.meta["features"] == "none" and m.index_type == "flat"
    assert m.keyframe(1).session == "nb" and m.keyframe(1).stamp == 100.0
    with pytest.raises(ConfigError, match=r"conf.model: unknown key 'sise'"):
        mapbuild.build_map(route / "ref", tmp_path / "m2", {"model": {"sise": (1, 1)}})
    with pytest.raises(ConfigError, match="index ivfpq needs at least 256 images"):
        mapbuild.build_map(route / "ref", tmp_path / "m3", {**conf, "index": "ivfpq"})


def test_thin_frames_keeps_what_the_keyframe_policy_keeps():
    from structvpr_core.mapsources import Frame, thin_frames

    frames = [Frame(lambda: None, {"stamp": 10.0 + 0.5 * i, "pose": Pose((0.5 * i, 0.0, 0.0))}) for i in range(9)]
    assert [f.keyframe["stamp"] for f in thin_frames(frames, min_interval_s=1.0)] == [10.0, 11.0, 12.0, 13.0, 14.0]
    assert [f.keyframe["stamp"] for f in thin_frames(frames, min_distance_m=1.5)] == [10.0, 11.5, 13.0]
    assert len(list(thin_frames(frames))) == 9


def test_map_info_verify_and_map_repair(route, tmp_path, capsys):
    m = tmp_path / "map"
    shutil.copytree(route / "map", m)
    code, out, _ = run(capsys, "map-info", "--verify", m)
    assert code == 0 and out.strip().splitlines()[-1].endswith("every check passes")
    assert all(line.startswith("ok   ") for line in out.strip().splitlines()[:-1])
    data = bytearray((m / "index.faiss").read_bytes())
    data[-64:] = bytes(64)  # part of the last descriptor zeroed
    (m / "index.faiss").write_bytes(bytes(data))
    code, out, _ = run(capsys, "map-info", "--verify", m)
    assert code == 1 and "BAD  " in out and "index.faiss: checksum mismatch" in out and "1 problem(s)" in out
    code, out, err = run(capsys, "map-repair", m)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "descriptors are stored nowhere else" in err
    code, _, err = run(capsys, "query", "--map", m, route / "ref" / "0000001.jpg")
    assert code == 1 and "index.faiss: checksum mismatch" in err and len(err.strip().splitlines()) == 1


# -- a full or read-only filesystem (a real tmpfs, mounted in a user + mount namespace) --------------


def _tmpfs_run(mount, size: str, argv: list[str], readonly: bool = False):
    """Run ``python -m structvpr_core.cli ARGV`` with a ``size`` tmpfs at ``mount`` (read-only on
    request), then list what is left there; (returncode, stdout, stderr, entries left)."""
    import os
    import subprocess
    import sys

    if (
        shutil.which("unshare") is None
        or subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True).returncode
    ):
        pytest.skip("cannot mount a tmpfs here (unshare --user --mount is not permitted)")
    remount = 'mount -o remount,ro "$m" && ' if readonly else ""
    script = (
        f'm="$1"; shift; mount -t tmpfs -o size={size} structvpr-test "$m" && {remount}'
        '"$@"; rc=$?; echo "LEFT:$(ls -A "$m" | tr "\\n" " ")"; exit $rc'
    )
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", str(mount), sys.executable,
         "-m", "structvpr_core.cli", *map(str, argv)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    out, _, left = r.stdout.rpartition("LEFT:")
    return r.returncode, out, r.stderr, left.split()


def test_build_map_on_a_full_disk_removes_its_partial_map_and_says_what_it_needed(route, tmp_path):
    mount = tmp_path / "small_disk"
    mount.mkdir()
    map_bytes = sum(f.stat().st_size for f in (route / "map").iterdir())
    size_kb = max(64, map_bytes // 2048)  # half the map: the save runs out of space part way
    argv = ["build-map", "--images", route / "ref", "--out", mount / "map", *SIZE, "--device", "cpu", "--no-progress"]
    code, _, err, left = _tmpfs_run(mount, f"{size_kb}k", argv)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith(f"structvpr build-map: error: {mount / 'map'}: no space left to save the map")
    assert "it needs about " in lines[0] and "free there; nothing was changed" in lines[0]
    assert left == [], f"left on the full disk: {left}"


def test_build_map_on_a_read_only_disk_is_one_line(route, tmp_path):
    mount = tmp_path / "ro_disk"
    mount.mkdir()
    argv = ["build-map", "--images", route / "ref", "--out", mount / "map", *SIZE, "--device", "cpu", "--no-progress"]
    code, _, err, left = _tmpfs_run(mount, "1m", argv, readonly=True)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert "map: the map cannot be saved there (Read-only file system): choose a writable location" in lines[0]
    assert left == []
