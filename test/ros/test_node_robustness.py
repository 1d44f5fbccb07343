"""Nothing a camera or a damaged map sends stops the node's loop closure silently.

Over real DDS: a 69-byte PNG claiming 40000×30000 pixels (a decompression bomb) sent as a
CompressedImage is skipped before decoding and the next good frame is answered; when such
frames repeat, /diagnostics says ERROR with the cause, and ~/reset clears it.

In process (the node's own conversion and detector path, no DDS needed to feed it): a map with a
damaged keyframe row fails the frames that hit that row, and only them; a few hundred random and
mutated frames (raw and compressed) leave a node that still answers a good frame.
"""

from __future__ import annotations

import array
import dataclasses
import shutil
import sqlite3
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from ros_helpers import TEST_IMAGE_SIZE, NodeProcess, spin_until, write_params

pytestmark = pytest.mark.ros

IMAGE_TOPIC = "/robust_test/image_raw/compressed"
RESULT_TOPIC = "/structvpr/loop_closures"


def png_claiming(width: int, height: int) -> bytes:
    """A 69-byte PNG whose header claims width×height RGB pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(4))) + chunk(b"IEND", b"")


def _compressed(stamp_sec: int, data: bytes, fmt: str = "png"):
    from sensor_msgs.msg import CompressedImage

    msg = CompressedImage()
    msg.header.stamp.sec = stamp_sec
    msg.header.frame_id = "robust_cam"
    msg.format = fmt
    msg.data = array.array("B", data)
    return msg


def _good_frame(corridor_map, stamp_sec: int, index: int = 40):
    from std_msgs.msg import Header

    from structvpr_core.images import read_image
    from structvpr_ros.image_conversion import bgr_to_compressed

    header = Header(frame_id="robust_cam")
    header.stamp.sec = stamp_sec
    return bgr_to_compressed(read_image(corridor_map["queries"][index]), header)


# ---- over real DDS -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def robust_node(ros_node, corridor_map, tmp_path_factory):
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage

    from structvpr_msgs.msg import LoopClosureCandidates

    tmp = tmp_path_factory.mktemp("robust_node")
    params = {
        "image_topic": IMAGE_TOPIC,
        "compressed": True,
        "map_path": str(corridor_map["path"]),
        "device": "cpu",
        "cpu_threads": 1,
        "image_width": TEST_IMAGE_SIZE[0],
        "image_height": TEST_IMAGE_SIZE[1],
        "diagnostics_period_s": 0.3,
    }
    answers: dict = {}
    diag: dict = {}

    def on_diag(msg):
        for status in msg.status:
            if status.name.startswith("/structvpr"):
                diag.update(level=status.level, message=status.message, values={k.key: k.value for k in status.values})

    sub = ros_node.create_subscription(
        LoopClosureCandidates, RESULT_TOPIC, lambda m: answers.__setitem__(m.header.stamp.sec, m), 50
    )
    diag_sub = ros_node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    pub = ros_node.create_publisher(
        CompressedImage, IMAGE_TOPIC, QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    )
    node = NodeProcess(write_params(tmp / "params.yaml", params), tmp / "node.log")
    try:
        node.wait_ready(ros_node, IMAGE_TOPIC)
        assert spin_until(ros_node, lambda: pub.get_subscription_count() > 0, 10)
        yield {"node": node, "pub": pub, "answers": answers, "diag": diag}
    finally:
        code = node.stop()
        ros_node.destroy_publisher(pub)
        ros_node.destroy_subscription(sub)
        ros_node.destroy_subscription(diag_sub)
    assert code == 0, node.output()[-2000:]


def _send_until_logged(ros_node, rn, msg, needle: str) -> None:
    """Publish ``msg`` until the node's log shows ``needle`` (a fresh match may miss a message)."""
    for _ in range(5):
        rn["pub"].publish(msg)
        if spin_until(ros_node, lambda: needle in rn["node"].output(), 5):
            return
    raise AssertionError(f"node never logged {needle!r}:\n{rn['node'].output()[-2000:]}")


def _answered(ros_node, rn, msg) -> bool:
    stamp = msg.header.stamp.sec
    for _ in range(5):
        rn["pub"].publish(msg)
        if spin_until(ros_node, lambda: stamp in rn["answers"], 5):
            return True
    return False


def test_decompression_bomb_is_skipped_and_the_next_frame_answered(robust_node, ros_node, corridor_map):
    rn = robust_node
    bomb = _compressed(3001, png_claiming(40000, 30000))
    assert len(bomb.data) == 69
    _send_until_logged(ros_node, rn, bomb, "(stamp 3001.000")
    out = rn["node"].output()
    assert "skipping malformed image (stamp 3001.000, frame 'robust_cam')" in out
    assert "header claims 40000×30000 pixels" in out and "Traceback" not in out
    assert 3001 not in rn["answers"]
    assert _answered(ros_node, rn, _good_frame(corridor_map, 3002)), out[-2000:]
    assert len(rn["answers"][3002].candidates) == 5
    assert rn["node"].proc.poll() is None


def test_repeating_failures_are_an_error_in_diagnostics_until_reset(robust_node, ros_node, corridor_map):
    from diagnostic_msgs.msg import DiagnosticStatus
    from std_srvs.srv import Trigger

    rn = robust_node
    for stamp in (3101, 3102, 3103):
        _send_until_logged(ros_node, rn, _compressed(stamp, png_claiming(40000, 30000)), f"(stamp {stamp}.000")
    diag = rn["diag"]
    assert spin_until(ros_node, lambda: diag.get("level") == DiagnosticStatus.ERROR, 5), diag
    assert diag["message"].startswith("malformed frames: ") and "header claims 40000×30000" in diag["message"]
    assert "40000×30000" in diag["values"]["last_failure"]
    assert int(diag["values"]["frames_malformed"]) >= 3

    client = ros_node.create_client(Trigger, "/structvpr/reset")
    try:
        assert client.wait_for_service(timeout_sec=10)
        future = client.call_async(Trigger.Request())
        assert spin_until(ros_node, future.done, 10) and future.result().success
    finally:
        ros_node.destroy_client(client)
    assert spin_until(ros_node, lambda: diag.get("level") != DiagnosticStatus.ERROR, 5), diag
    assert _answered(ros_node, rn, _good_frame(corridor_map, 3104))


# ---- in process: the node's frame path fed directly ----------------------------------------------


def _in_process_node(map_path, namespace: str, **extra):
    """A VprNode in this process (rclpy is initialised by the ros_node fixture); nothing feeds its
    subscription, so frames reach it only through ``_handle``, the worker's per-frame call."""
    from rclpy.parameter import Parameter

    from structvpr_ros.vpr_node import VprNode

    values = {
        "image_topic": f"/{namespace}/image_raw",
        "map_path": str(map_path),
        "device": "cpu",
        "cpu_threads": 1,
        "image_width": TEST_IMAGE_SIZE[0],
        "image_height": TEST_IMAGE_SIZE[1],
        **extra,
    }
    return VprNode(namespace=namespace, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])


def _collect(ros_node, node) -> tuple[dict, object]:
    """The answers ``node`` publishes, by stamp, once the subscription is matched."""
    from structvpr_msgs.msg import LoopClosureCandidates

    topic = node._pub.topic_name
    got: dict = {}
    sub = ros_node.create_subscription(
        LoopClosureCandidates, topic, lambda m: got.__setitem__(m.header.stamp.sec, m), 50
    )
    assert spin_until(ros_node, lambda: node._pub.get_subscription_count() > 0, 10)
    return got, sub


def _damage_row(db_file, kid: int) -> None:
    """Invalid UTF-8 in keyframe ``kid``'s source text: reading that row raises in sqlite3."""
    conn = sqlite3.connect(str(db_file))
    with conn:
        conn.execute("UPDATE keyframes SET source = CAST(X'fffe41' AS TEXT) WHERE id = ?", (kid,))
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()


def test_damaged_keyframe_row_fails_only_the_frames_that_hit_it(ros_node, corridor_map, tmp_path):
    import json

    from structvpr_core.mapdb import MapDatabase

    # An old-format map (no checksums) with the top candidate of query 40 damaged: loading does
    # not read that row, the first query that ranks it does.
    damaged = tmp_path / "damaged_map"
    shutil.copytree(corridor_map["path"], damaged)
    mapdb = MapDatabase.load(damaged)
    source = corridor_map["expected_sources"][40][0]
    kid = next(k.id for k in mapdb.keyframes() if k.source == source)
    far = next(q for q, row in enumerate(corridor_map["expected_sources"]) if source not in row)
    mapdb.close()
    _damage_row(damaged / "keyframes.sqlite", kid)
    manifest = json.loads((damaged / "manifest.json").read_text())
    manifest.pop("sha256")  # as a map saved before checksums: the damage is found when the row is read
    manifest.pop("manifest_sha256")
    (damaged / "manifest.json").write_text(json.dumps(manifest))

    node = _in_process_node(damaged, "damaged", compressed=True)
    got, sub = _collect(ros_node, node)
    try:
        for stamp in (1, 2, 3):
            node._handle((_good_frame(corridor_map, stamp, 40), time.monotonic()))
        node._handle((_good_frame(corridor_map, 4, far), time.monotonic()))
        stats = node._stats.snapshot()
        assert spin_until(ros_node, lambda: 4 in got, 10), (stats, node._failures.last)
        assert stats["failed"] == 3 and stats["processed"] == 1
        level, message = node._failures.status()
        assert level == "error" and f"keyframe {kid}" in message, message
        assert not any(s in got for s in (1, 2, 3))
        assert node._worker.is_alive()
    finally:
        ros_node.destroy_subscription(sub)
        node.destroy_node()


def _mutations(rng, good_raw, good_jpeg: bytes, good_png: bytes):
    """(compressed?, message fields) for random and mutated frames."""
    from structvpr_core.image_msgs import ENCODINGS

    encodings = [*ENCODINGS, "bayer_rggb8", "yuv422", "", "BGR8", "32FC1", "\x00"]
    raw_fields = dict(
        encoding=good_raw.encoding, height=good_raw.height, width=good_raw.width, step=good_raw.step, is_bigendian=0
    )
    raw_data = bytes(good_raw.data)
    for i in range(320):
        kind = i % 8
        if kind == 0:  # a random raw message
            h, w = int(rng.integers(0, 600)), int(rng.integers(0, 800))
            fields = dict(
                encoding=str(rng.choice(encodings)),
                height=h,
                width=w,
                step=int(rng.integers(0, 4 * w + 16)),
                is_bigendian=int(rng.integers(0, 2)),
            )
            yield False, fields, rng.bytes(int(rng.integers(0, 300_000)))
        elif kind == 1:  # the good raw frame with one field wrong
            fields = dict(raw_fields)
            key = str(rng.choice(["encoding", "height", "width", "step", "is_bigendian"]))
            fields[key] = (
                str(rng.choice(encodings))
                if key == "encoding"
                else int(rng.choice([0, 1, 2**31 - 1, fields[key] + 1, fields[key] * 7, 100_000]))
            )
            yield False, fields, raw_data
        elif kind == 2:  # the good raw frame, its data cut or extended
            cut = int(rng.integers(0, len(raw_data) + 5000))
            yield False, dict(raw_fields), (raw_data + rng.bytes(5000))[:cut]
        elif kind == 3:  # random bytes as a compressed image
            yield (
                True,
                dict(format=str(rng.choice(["jpeg", "png", "rgb8; jpeg compressed bgr8", "", "tiff"]))),
                rng.bytes(int(rng.integers(0, 50_000))),
            )
        else:  # a good jpeg/png with bytes flipped, cut, or its header's size changed
            base = bytearray(good_jpeg if kind % 2 else good_png)
            op = int(rng.integers(0, 4))
            if op == 0:
                for pos in rng.integers(0, len(base), int(rng.integers(1, 40))):
                    base[pos] = int(rng.integers(0, 256))
            elif op == 1:
                base = base[: int(rng.integers(0, len(base)))]
            elif op == 2 and not kind % 2:  # PNG IHDR width/height (the CRC left stale or not)
                base[16:24] = struct.pack(">II", int(rng.integers(0, 2**31)), int(rng.integers(0, 2**31)))
            else:  # JPEG: whatever sits where a frame header may be
                for pos in range(2, min(len(base), 200), int(rng.integers(3, 17))):
                    base[pos] = int(rng.integers(0, 256))
            yield True, dict(format="jpeg" if kind % 2 else "png"), bytes(base)


def test_fuzzed_frames_leave_a_node_that_answers_a_good_frame(ros_node, corridor_map):
    import cv2
    from sensor_msgs.msg import CompressedImage, Image

    from structvpr_core.images import read_image
    from structvpr_ros.image_conversion import bgr_to_image

    node = _in_process_node(corridor_map["path"], "fuzz", max_image_pixels=4_000_000)
    got, sub = _collect(ros_node, node)
    raw_params = node.params
    compressed_params = dataclasses.replace(raw_params, compressed=True)  # the same node's compressed path
    try:
        bgr = read_image(corridor_map["queries"][40])
        good_raw = bgr_to_image(bgr)
        good_jpeg = cv2.imencode(".jpg", bgr)[1].tobytes()
        good_png = cv2.imencode(".png", bgr)[1].tobytes()
        rng = np.random.default_rng(11)
        n = 0
        started = time.perf_counter()
        for compressed, fields, data in _mutations(rng, good_raw, good_jpeg, good_png):
            msg = CompressedImage() if compressed else Image()
            for key, value in fields.items():
                setattr(msg, key, value)
            msg.data = array.array("B", data)
            msg.header.stamp.sec = 10_000 + n
            node.params = compressed_params if compressed else raw_params
            node._handle((msg, time.monotonic()))
            n += 1
        seconds = time.perf_counter() - started
        stats = node._stats.snapshot()
        print(
            f"fuzz: {n} frames in {seconds:.1f} s: {stats['malformed']} malformed, {stats['failed']} failed, "
            f"{stats['processed']} answered, {stats['skipped']} skipped"
        )
        assert stats["malformed"] + stats["failed"] + stats["processed"] + stats["skipped"] == n
        assert stats["malformed"] >= n // 2  # most of them are not images at all
        assert node._worker.is_alive()

        for params, msg in ((raw_params, bgr_to_image(bgr)), (compressed_params, None)):
            node.params = params
            if msg is None:
                msg = CompressedImage(format="jpeg", data=array.array("B", good_jpeg))
            msg.header.stamp.sec = 99_000 + int(params.compressed)
            node._handle((msg, time.monotonic()))
        assert spin_until(ros_node, lambda: {99_000, 99_001} <= set(got), 10), node._failures.last
        assert [c.source for c in got[99_000].candidates] == corridor_map["expected_sources"][40]
        assert len(got[99_001].candidates) == 5
    finally:
        ros_node.destroy_subscription(sub)
        node.destroy_node()


# ---- mapping sessions are not lost ---------------------------------------------------------------
# chmod does not stop root: a regular file where the map's directory should be stops everyone, and a
# read-only tmpfs (mounted in a user + mount namespace) is the real thing where the kernel allows it.


def _mapping_params(tmp_path, map_path, **extra) -> dict:
    return {
        "image_topic": "/mapping_fail/image_raw",
        "map_path": str(map_path),
        "device": "cpu",
        "cpu_threads": 1,
        "image_width": TEST_IMAGE_SIZE[0],
        "image_height": TEST_IMAGE_SIZE[1],
        "mode": "mapping",
        "temporal_exclusion_s": 1.0,
        **extra,
    }


def _run_node_to_exit(params_file, prefix: list[str] = (), timeout: float = 60.0):
    import subprocess
    import sys

    from ros_helpers import REPO

    cmd = [*prefix, sys.executable, "-m", "structvpr_ros.vpr_node", "--ros-args", "--params-file", str(params_file)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(REPO))


def test_mapping_refuses_to_start_where_the_map_cannot_be_saved(tmp_path):
    blocker = tmp_path / "maps"
    blocker.write_text("a file where the map directory's parent should be")
    params = write_params(tmp_path / "p.yaml", _mapping_params(tmp_path, blocker / "session"))
    t0 = time.monotonic()
    r = _run_node_to_exit(params)
    assert r.returncode == 1, r.stderr
    assert f"{blocker / 'session'}: the map cannot be saved there ({blocker} is a file, not a directory)" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("structvpr_node: error: ")
    assert time.monotonic() - t0 < 30  # refused before the model is loaded


def test_mapping_refuses_to_start_on_a_read_only_filesystem(tmp_path):
    import subprocess

    if (
        shutil.which("unshare") is None
        or subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True).returncode
    ):
        pytest.skip("cannot mount a tmpfs here (unshare --user --mount is not permitted)")
    mount = tmp_path / "ro"
    mount.mkdir()
    params = write_params(tmp_path / "p.yaml", _mapping_params(tmp_path, mount / "session"))
    script = 'm="$1"; shift; mount -t tmpfs -o size=1m t "$m" && mount -o remount,ro "$m" && exec "$@"'
    r = _run_node_to_exit(
        params, ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", str(mount)]
    )
    assert r.returncode == 1, r.stderr
    assert "session: the map cannot be saved there (Read-only file system): choose a writable location" in r.stderr


def test_a_session_that_cannot_be_saved_goes_to_a_fallback_and_the_node_exits_1(ros_node, corridor_map, tmp_path):
    import os

    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header
    from std_srvs.srv import Trigger

    from structvpr_core.images import read_image
    from structvpr_core.mapdb import MapDatabase
    from structvpr_msgs.msg import LoopClosureCandidates
    from structvpr_ros.image_conversion import bgr_to_image

    maps = tmp_path / "maps"
    maps.mkdir()
    params = write_params(tmp_path / "p.yaml", _mapping_params(tmp_path, maps / "session"))
    # Its own namespace: the module's localisation node (also /structvpr) may still be running.
    node = NodeProcess(params, tmp_path / "node.log", ["-r", "__ns:=/mapfail"])
    pub = ros_node.create_publisher(
        Image, "/mapping_fail/image_raw", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    )
    answered: set[int] = set()
    sub = ros_node.create_subscription(
        LoopClosureCandidates, "/mapfail/structvpr/loop_closures", lambda m: answered.add(m.header.stamp.sec), 10
    )
    try:
        node.wait_ready(ros_node, "/mapping_fail/image_raw")
        assert spin_until(ros_node, lambda: pub.get_subscription_count() > 0, 10)
        # And the other direction: an answer sent before our subscriber is matched is lost (seen in CI).
        assert spin_until(ros_node, lambda: sub.get_publisher_count() > 0, 10)
        for i, q in enumerate((5, 30, 60, 90)):  # four places, seconds apart: four keyframes
            header = Header(frame_id="cam")
            header.stamp.sec = 100 + 10 * i
            pub.publish(bgr_to_image(read_image(corridor_map["queries"][q]), header))
            # One at a time, each until the node has answered it: on a loaded machine a frame sent
            # while the node is busy would replace the waiting one (that is the design).
            assert spin_until(ros_node, lambda sec=header.stamp.sec: sec in answered, 30), node.output()[-2000:]
        # The disk goes away under the running node: its map directory is now a file.
        os.rename(maps, tmp_path / "maps_gone")
        maps.write_text("not a directory any more")
        client = ros_node.create_client(Trigger, "/mapfail/structvpr/save_map")
        try:
            assert client.wait_for_service(timeout_sec=10)
            future = client.call_async(Trigger.Request())
            assert spin_until(ros_node, future.done, 20)
            answer = future.result()
        finally:
            ros_node.destroy_client(client)
        assert not answer.success and "save failed" in answer.message and "is a file, not a directory" in answer.message
    finally:
        code = node.stop()
        ros_node.destroy_publisher(pub)
        ros_node.destroy_subscription(sub)
    out = node.output()
    assert code == 1, out[-3000:]
    assert "[ERROR]" in out and "save failed:" in out  # ~/save_map's failure, at ERROR
    fallback = next(iter((Path(os.environ["STRUCTVPR_CACHE"]) / "unsaved-maps").glob("session.unsaved-*")))
    assert f"keyframes were saved to {fallback} instead: move it to {maps / 'session'}" in out
    assert f"structvpr_node: error: could not save the map to {maps / 'session'}" in out
    saved = MapDatabase.load(fallback)
    assert len(saved) == 4
    saved.close()
