"""Parts of structvpr_ros that need no DDS: the frame slot, statistics, parameters, message
conversion, the launch file. Message tests need the generated Python message classes only.
"""

from __future__ import annotations

import ast
import dataclasses
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from ros_helpers import CORRIDOR, REPO

from structvpr_core.errors import ConfigError, ImageError
from structvpr_ros.latest_slot import LatestSlot
from structvpr_ros.params import DESCRIPTIONS, LIVE_PARAMETERS, NodeParams, params_from_dict, with_changes
from structvpr_ros.stats import NodeStats

# ---- the one-slot buffer -------------------------------------------------------------------


def test_slot_keeps_only_the_newest_and_counts_drops():
    slot = LatestSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True
    assert slot.put(3) is True
    assert slot.take(timeout=0) == 3
    assert slot.take(timeout=0.01) is None
    assert (slot.received, slot.dropped) == (3, 2)


def test_slot_close_wakes_a_waiting_consumer():
    slot = LatestSlot()
    got = []
    t = threading.Thread(target=lambda: got.append(slot.take(timeout=10)))
    t.start()
    time.sleep(0.05)
    slot.close()
    t.join(timeout=2)
    assert not t.is_alive() and got == [None]


def test_slow_consumer_gets_newest_frames_and_every_frame_is_accounted_for():
    slot = LatestSlot()
    taken = []

    def consume():
        while True:
            item = slot.take(timeout=1)
            if item is None:
                return
            taken.append(item)
            time.sleep(0.002)  # "processing" slower than the producer

    t = threading.Thread(target=consume)
    t.start()
    for i in range(2000):
        slot.put(i)
    t.join(timeout=10)
    assert taken == sorted(taken) and taken[-1] == 1999  # in order, and the last frame is served
    assert slot.received == 2000
    assert slot.dropped + len(taken) == 2000
    assert slot.dropped > 0


# ---- statistics ----------------------------------------------------------------------------


def test_stats_rates_and_percentiles():
    now = [100.0]
    stats = NodeStats(window=10, clock=lambda: now[0])
    for _ in range(20):
        stats.on_received()
    for v in range(1, 21):  # only the last 10 stay in the window: 11..20
        stats.on_processed(float(v), 1.0, 0.0, 2.0 * v)
    stats.on_malformed()
    now[0] += 2.0
    s = stats.snapshot()
    assert s["input_rate_hz"] == pytest.approx(10.0)
    assert s["processing_rate_hz"] == pytest.approx(10.0)
    assert s["extract_ms_p50"] == pytest.approx(15.5)
    assert s["end_to_end_ms_p95"] == pytest.approx(np.percentile([2.0 * v for v in range(11, 21)], 95))
    assert s["malformed"] == 1 and s["processed"] == 20
    now[0] += 1.0
    assert stats.snapshot()["input_rate_hz"] == 0.0  # rates are per period


# ---- parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, name",
    [
        ({"top_k": 0}, "top_k"),
        ({"top_k": "five"}, "top_k"),
        ({"min_score": 1.5}, "min_score"),
        ({"mode": "slam"}, "mode"),
        ({"device": "tpu"}, "device"),
        ({"backend": "openvino-int4"}, "backend"),
        ({"image_height": 8}, "image_height"),
        ({"qos_depth": 0}, "qos_depth"),
        ({"qos_reliability": "maybe"}, "qos_reliability"),
        ({"compressed": "yes"}, "compressed"),
        ({"diagnostics_period_s": 0}, "diagnostics_period_s"),
        ({"image_topic": ""}, "image_topic"),
        ({"map_path": ""}, "map_path"),
        ({"checkpoint": "/no/such/model.pt"}, "checkpoint"),
        ({"query_checkpoint": "/no/such/student.pt"}, "query_checkpoint"),
    ],
)
def test_bad_parameters_are_named(tmp_path, values, name):
    given = {"map_path": str(tmp_path), **values}
    with pytest.raises(ConfigError, match=f"parameter '{name}'"):
        params_from_dict(given)


def test_query_checkpoint_is_for_localization_only(tmp_path):
    """A query encoder only queries its teacher's map: mapping would add its descriptors to the map."""
    student = tmp_path / "student.pt"
    student.write_bytes(b"checked when the model loads")
    assert params_from_dict({"map_path": str(tmp_path), "query_checkpoint": str(student)}).query_checkpoint
    with pytest.raises(ConfigError, match="parameter 'query_checkpoint': a query encoder only queries a map"):
        params_from_dict({"map_path": str(tmp_path), "query_checkpoint": str(student), "mode": "mapping"})


def test_unknown_parameter_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="unknown parameter 'top_kk'"):
        params_from_dict({"map_path": str(tmp_path), "top_kk": 3})


def test_mapping_mode_may_start_without_a_map_but_localization_may_not(tmp_path):
    p = params_from_dict({"map_path": str(tmp_path / "new_map"), "mode": "mapping", "min_score": 0})
    assert p.min_score == 0.0 and isinstance(p.min_score, float)  # ROS gives integers for "0"
    assert p.detector_config().mode == "mapping"
    with pytest.raises(ConfigError, match="parameter 'map_path'"):
        params_from_dict({"map_path": str(tmp_path / "new_map")})


def test_detector_parameters_follow_the_core(tmp_path):
    """One rule and one default per detector setting: DetectorConfig's, named as a parameter."""
    from structvpr_core.loopclosure import DetectorConfig

    defaults = NodeParams().detector_config()
    assert defaults == DetectorConfig()
    with pytest.raises(ConfigError, match=r"parameter 'keyframe_max_similarity': must be in \(-1, 1\]"):
        params_from_dict({"map_path": str(tmp_path), "keyframe_max_similarity": -1.0})
    assert LIVE_PARAMETERS == {
        "top_k",
        "min_score",
        "verify",
        "min_inliers",
        "temporal_exclusion_s",
        "keyframe_min_interval_s",
        "keyframe_min_distance_m",
        "keyframe_max_similarity",
        "label_rescore",
    }
    assert LIVE_PARAMETERS <= set(DetectorConfig.RUNTIME_FIELDS)


def test_changes_at_run_time_are_checked_like_at_start(tmp_path):
    p = params_from_dict({"map_path": str(tmp_path)})
    q = with_changes(p, {"top_k": 10, "min_score": 1, "verify": True})
    assert (q.top_k, q.min_score, q.verify) == (10, 1.0, True) and isinstance(q.min_score, float)
    assert p.top_k == 5  # a new value: the worker thread keeps the one it read for its frame
    for changes, name in (
        ({"top_k": 0}, "top_k"),
        ({"min_score": 2.0}, "min_score"),
        ({"top_k": "ten"}, "top_k"),
        ({"min_inliers": None}, "min_inliers"),
    ):  # None: a client "unsetting" it
        with pytest.raises(ConfigError, match=f"parameter '{name}'"):
            with_changes(p, changes)
    with pytest.raises(ConfigError, match="parameter 'map_path': read-only"):
        with_changes(p, {"map_path": str(tmp_path / "other")})
    (tmp_path / "gone").mkdir()
    p = params_from_dict({"map_path": str(tmp_path / "gone")})
    (tmp_path / "gone").rmdir()
    assert with_changes(p, {"top_k": 3}).top_k == 3  # the files are checked at start only


def test_shipped_params_file_is_complete_and_valid(tmp_path):
    """config/vpr_node.yaml holds every parameter with its default (only map_path to fill)."""
    import yaml

    values = yaml.safe_load((REPO / "config" / "vpr_node.yaml").read_text())["/**"]["ros__parameters"]
    fields = {f.name for f in dataclasses.fields(NodeParams)}
    assert set(values) == fields == set(DESCRIPTIONS)
    defaults = dataclasses.asdict(NodeParams())
    assert {k: v for k, v in values.items() if k != "map_path"} == {
        k: v for k, v in defaults.items() if k != "map_path"
    }
    text = (REPO / "config" / "vpr_node.yaml").read_text()
    for name in fields:  # every parameter documented by a comment in its section
        assert f"\n    {name}:" in text
    params_from_dict({**values, "map_path": str(tmp_path)})


# ---- image messages --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def frame():
    from structvpr_core.images import read_image

    return read_image(CORRIDOR / "query" / "0000010.jpg")  # real 160x120 colour frame


def test_image_round_trip_and_row_padding(frame):
    pytest.importorskip("sensor_msgs.msg")
    from structvpr_ros.image_conversion import bgr_to_image, image_to_bgr

    msg = bgr_to_image(frame)
    assert (msg.encoding, msg.width, msg.height, msg.step) == ("bgr8", 160, 120, 480)
    assert np.array_equal(image_to_bgr(msg), frame)
    # rgb8 with 16 bytes of padding per row, as some drivers send
    padded = np.zeros((120, 480 + 16), np.uint8)
    padded[:, :480] = frame[:, :, ::-1].reshape(120, 480)
    rgb = SimpleNamespace(encoding="rgb8", height=120, width=160, step=496, is_bigendian=0, data=padded.tobytes())
    assert np.array_equal(image_to_bgr(rgb), frame)
    # mono16 big-endian
    grey = np.arange(120 * 160, dtype=np.uint16).reshape(120, 160) * 3
    m16 = SimpleNamespace(
        encoding="mono16", height=120, width=160, step=320, is_bigendian=1, data=grey.astype(">u2").tobytes()
    )
    out = image_to_bgr(m16)
    assert out.shape == (120, 160, 3)
    assert np.array_equal(out[:, :, 0], (grey.astype(np.uint32) * 255 // 65535).astype(np.uint8))


@pytest.mark.parametrize(
    "fields, needle",
    [
        ({"encoding": "bgr9"}, "bgr9"),
        ({"data": bytes(100)}, "bytes"),
        ({"height": 0, "width": 0, "step": 0, "data": b""}, "zero size"),
        ({"step": 100}, "step"),
    ],
)
def test_malformed_image_messages_raise_image_error(fields, needle):
    msg = SimpleNamespace(encoding="bgr8", height=120, width=160, step=480, is_bigendian=0, data=bytes(120 * 480))
    for k, v in fields.items():
        setattr(msg, k, v)
    from structvpr_ros.image_conversion import image_to_bgr

    with pytest.raises(ImageError, match=needle):
        image_to_bgr(msg)


def test_compressed_round_trip(frame):
    pytest.importorskip("sensor_msgs.msg")
    from structvpr_ros.image_conversion import bgr_to_compressed, compressed_to_bgr

    png = bgr_to_compressed(frame, fmt="png")
    assert png.format == "png" and np.array_equal(compressed_to_bgr(png), frame)
    jpg = bgr_to_compressed(frame, fmt="jpeg", quality=95)
    assert len(jpg.data) < frame.nbytes
    assert np.abs(compressed_to_bgr(jpg).astype(int) - frame).mean() < 4.0
    with pytest.raises(ImageError):
        compressed_to_bgr(SimpleNamespace(format="jpeg", data=b"not a jpeg"))


# ---- result messages -------------------------------------------------------------------------


def test_detection_to_message():
    pytest.importorskip("structvpr_msgs.msg")
    from std_msgs.msg import Header

    from structvpr_core.geometry import Pose
    from structvpr_core.loopclosure import Candidate, Detection
    from structvpr_ros.candidates_msg import detection_to_msg, sec_to_stamp, stamp_to_sec

    angle = 0.3
    R = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    det = Detection(
        True,
        7,
        [
            Candidate(3, 0.91, 12.25, Pose((1, 2, 3), (0, 0, 0, 1)), "ref/3.jpg", 40, R, np.array([1.0, 0, 0])),
            Candidate(5, 0.80, None, None, "ref/5.jpg"),
        ],
        11.0,
        0.5,
        3.0,
    )
    header = Header(frame_id="cam")
    header.stamp = sec_to_stamp(1700000000.123456789)
    msg = detection_to_msg(det, header)
    assert msg.header.frame_id == "cam" and msg.query_id == 7
    assert stamp_to_sec(msg.header.stamp) == pytest.approx(1700000000.123456789, abs=1e-6)
    a, b = msg.candidates
    assert (a.map_id, a.inliers, a.has_pose, a.has_relative, a.source) == (3, 40, True, True, "ref/3.jpg")
    assert stamp_to_sec(a.map_stamp) == 12.25
    assert a.map_pose.position.z == 3.0
    q = a.relative.rotation
    assert (q.z, q.w) == pytest.approx((np.sin(angle / 2), np.cos(angle / 2)))
    assert a.relative.translation.x == 1.0
    assert (b.inliers, b.has_pose, b.has_relative) == (-1, False, False)
    assert b.map_stamp.sec == 0 and b.map_stamp.nanosec == 0
    assert (msg.extract_ms, msg.search_ms, msg.verify_ms) == (11.0, 0.5, 3.0)
    t = sec_to_stamp(5.9999999999)  # rounds into the next second, not to nanosec = 1e9
    assert (t.sec, t.nanosec) == (6, 0)


# ---- launch file -----------------------------------------------------------------------------

LAUNCH_FILE = REPO / "launch" / "vpr.launch.py"


def test_launch_file_declares_its_arguments():
    tree = ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))
    compile(tree, str(LAUNCH_FILE), "exec")
    declared = [
        call.args[0].value
        for call in ast.walk(tree)
        if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "DeclareLaunchArgument"
    ]
    assert declared == ["params_file", "map", "checkpoint", "query_checkpoint", "image_topic", "namespace"]
    funcs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in funcs
    text = LAUNCH_FILE.read_text()
    for needle in (
        "get_package_share_directory",
        "FASTDDS_DEFAULT_PROFILES_FILE",
        "fastdds_profile.xml",
        "vpr_node.yaml",
    ):
        assert needle in text
    # The node's executable and name, whatever the quoting: read from the Node(...) call's keywords.
    node_kwargs = {
        kw.arg: kw.value.value
        for call in ast.walk(tree)
        if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "Node"
        for kw in call.keywords
        if isinstance(kw.value, ast.Constant)
    }
    assert node_kwargs.get("executable") == "structvpr_node" and node_kwargs.get("name") == "structvpr"


def test_launch_file_with_launch_ros():
    pytest.importorskip("launch_ros", reason="launch_ros is not installed (no registry ships it)")
    import importlib.util

    from ament_index_python.packages import PackageNotFoundError
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    from launch import LaunchContext

    spec = importlib.util.spec_from_file_location("vpr_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        description = module.generate_launch_description()
    except PackageNotFoundError:
        pytest.skip("structvpr_ros is not installed in the ament index of this environment")
    args = [e.name for e in description.entities if isinstance(e, DeclareLaunchArgument)]
    assert args == ["params_file", "map", "checkpoint", "query_checkpoint", "image_topic", "namespace"]
    context = LaunchContext()
    for name, value in (
        ("params_file", "p.yaml"),
        ("map", "/maps/a"),
        ("checkpoint", ""),
        ("query_checkpoint", ""),
        ("image_topic", ""),
        ("namespace", "robot"),
    ):
        context.launch_configurations[name] = value
    opaque = [e for e in description.entities if isinstance(e, OpaqueFunction)]
    (node,) = opaque[0].execute(context)
    assert node.node_executable == "structvpr_node"


def test_fastdds_profile_is_a_default_profile_with_large_shared_memory():
    import xml.etree.ElementTree as ET

    ns = {"d": "http://www.eprosima.com"}
    root = ET.parse(REPO / "config" / "fastdds_profile.xml").getroot()
    descriptors = {
        d.findtext("d:transport_id", namespaces=ns): d for d in root.iterfind(".//d:transport_descriptor", ns)
    }
    types = {tid: d.findtext("d:type", namespaces=ns) for tid, d in descriptors.items()}
    assert sorted(types.values()) == ["SHM", "UDPv4"]
    shm = next(d for d in descriptors.values() if d.findtext("d:type", namespaces=ns) == "SHM")
    assert int(shm.findtext("d:segment_size", namespaces=ns)) >= 1920 * 1080 * 4
    assert int(shm.findtext("d:maxMessageSize", namespaces=ns)) >= 1920 * 1080 * 4
    participant = root.find(".//d:participant", ns)
    assert participant.get("is_default_profile") == "true"
    assert participant.findtext(".//d:useBuiltinTransports", namespaces=ns) == "false"
    used = [e.text for e in participant.iterfind(".//d:userTransports/d:transport_id", ns)]
    assert sorted(used) == sorted(descriptors)


# ---- -p overrides as rcl types them ------------------------------------------------------------


@pytest.mark.parametrize(
    "text, value",
    [
        ("abc", "abc"),
        ("2.5", 2.5),
        ("1e3", 1000.0),
        ("7", 7),
        ("-7", -7),
        ("0x10", 16),
        ("010", 8),
        ("true", True),
        ("Off", False),
        ("maybe", "maybe"),
        ("'5'", "5"),
        ('"true"', "true"),
        (".inf", float("inf")),
        ("[1, 2]", [1, 2]),
        ("", ""),
    ],
)
def test_override_values_are_typed_like_rcl(text, value):
    from structvpr_ros.params import rcl_value

    got = rcl_value(text)
    assert got == value and type(got) is type(value)


def test_command_line_values_reads_ros_sections_and_node_prefixes():
    from structvpr_ros.params import command_line_values

    argv = ["prog", "-p", "top_k:=1", "--ros-args", "-p", "top_k:=abc", "--params-file", "f.yaml", "-r", "a:=b",
            "--param", "structvpr:verify:=maybe", "-p", "other_node:min_score:=2", "--", "-p", "mode:=x"]  # fmt: skip
    assert command_line_values(argv, {"structvpr", "/structvpr"}) == {"top_k": "abc", "verify": "maybe"}


def test_shutdown_race_in_spin_is_a_normal_end_and_other_runtime_errors_are_not():
    """A signal that shuts the context down while the executor builds its wait set makes spin raise
    rclpy's RCLError (a RuntimeError); run_with_rclpy must end with 0 then, and only then.
    In a fresh process: this one's rclpy context belongs to the other tests."""
    import subprocess
    import sys

    code = """
import rclpy
from structvpr_ros.entry import run_with_rclpy

def shutdown_then_fail():
    rclpy.shutdown()  # what the SIGINT/SIGTERM handler does
    raise RuntimeError("failed to initialize wait set: the given context is not valid")

def fail_while_running():
    raise RuntimeError("a real bug")

print("race", run_with_rclpy("test", [], shutdown_then_fail))
try:
    run_with_rclpy("test", [], fail_while_running)
except RuntimeError as e:
    print("bug", e)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:2] == ["race 0", "bug a real bug"], out.stdout + out.stderr[-2000:]
