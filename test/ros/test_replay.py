"""structvpr_replay over real DDS: a rosbag2 written with rosbags is replayed with its stamps,
and an image folder as CompressedImage; the test process receives the frames.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
from ros_helpers import CORRIDOR, corridor_files, run_replay, spin_until

pytestmark = pytest.mark.ros


def _write_bag(path, frames, topic, stamps):
    """A sqlite3 rosbag2 holding ``frames`` as sensor_msgs/Image bgr8 (written by rosbags)."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    Image, Header, Time = (
        ts.types["sensor_msgs/msg/Image"],
        ts.types["std_msgs/msg/Header"],
        ts.types["builtin_interfaces/msg/Time"],
    )
    with Writer(path, version=8) as writer:
        conn = writer.add_connection(topic, Image.__msgtype__, typestore=ts)
        for img, t in zip(frames, stamps, strict=True):
            sec = int(t)
            msg = Image(
                header=Header(stamp=Time(sec=sec, nanosec=round((t - sec) * 1e9)), frame_id="bag_cam"),
                height=img.shape[0],
                width=img.shape[1],
                encoding="bgr8",
                is_bigendian=0,
                step=img.shape[1] * 3,
                data=img.reshape(-1),
            )
            writer.write(conn, int(t * 1e9), ts.serialize_cdr(msg, Image.__msgtype__))


def _collect(ros_node, msg_type, topic):
    from rclpy.qos import qos_profile_sensor_data

    got = []
    sub = ros_node.create_subscription(msg_type, topic, got.append, qos_profile_sensor_data)
    return got, sub


def test_bag_is_replayed_with_its_stamps_and_frame_id(ros_node, tmp_path):
    from sensor_msgs.msg import Image

    from structvpr_core.images import read_image
    from structvpr_ros.image_conversion import image_to_bgr

    frames = [read_image(p) for p in corridor_files("ref")[:5]]
    stamps = [1000.0 + 0.1 * i for i in range(5)]
    _write_bag(tmp_path / "bag", frames, "/recorded/image", stamps)
    got, sub = _collect(ros_node, Image, "/replay_test/bag_image")
    try:
        rep = run_replay(
            [
                "--bag",
                str(tmp_path / "bag"),
                "--bag-topic",
                "/recorded/image",
                "--topic",
                "/replay_test/bag_image",
                "--stamps-out",
                str(tmp_path / "s.csv"),
            ],
            node=ros_node,
        )
        assert rep.returncode == 0, rep.stderr
        spin_until(ros_node, lambda: len(got) >= 5, 5)
    finally:
        ros_node.destroy_subscription(sub)
    assert len(got) == 5
    assert [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in got] == pytest.approx(stamps, abs=1e-6)
    assert all(m.header.frame_id == "bag_cam" for m in got)
    for m, f in zip(got, frames, strict=True):
        assert np.array_equal(image_to_bgr(m), f)
    with open(tmp_path / "s.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["source"].rsplit("@", 1)[0] for r in rows] == ["bag#/recorded/image"] * 5


def test_folder_as_compressed_images_at_a_rate(ros_node, tmp_path):
    from sensor_msgs.msg import CompressedImage

    from structvpr_ros.image_conversion import compressed_to_bgr

    got, sub = _collect(ros_node, CompressedImage, "/replay_test/compressed")
    try:
        rep = run_replay(
            [
                "--images",
                str(CORRIDOR / "query"),
                "--compressed",
                "--topic",
                "/replay_test/compressed",
                "--rate",
                "20",
                "--count",
                "6",
                "--frame-id",
                "cam_c",
            ],
            node=ros_node,
        )
        assert rep.returncode == 0, rep.stderr
        spin_until(ros_node, lambda: len(got) >= 6, 5)
    finally:
        ros_node.destroy_subscription(sub)
    assert len(got) == 6
    assert all(m.format == "jpeg" and m.header.frame_id == "cam_c" for m in got)
    assert compressed_to_bgr(got[0]).shape == (120, 160, 3)
    t = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in got]
    assert 5 * 0.05 * 0.8 < t[-1] - t[0] < 5 * 0.05 * 3  # paced at ~20 Hz, stamped at publication


def test_replay_errors_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    for args, needle in (
        (["--images", str(tmp_path / "missing")], "missing"),
        (["--images", str(tmp_path / "empty")], "no images"),
        (["--bag", str(tmp_path / "nobag"), "--bag-topic", "/i"], "no such bag"),
        (["--images", str(CORRIDOR / "query"), "--size", "big"], "--size"),
    ):
        rep = run_replay(args)  # no subscriber wait: the input is checked first
        assert rep.returncode == 1, rep.stderr
        assert rep.stderr.startswith("structvpr_replay: error:") and needle in rep.stderr
        assert "Traceback" not in rep.stderr
    rep = run_replay(["--bag", str(tmp_path / "nobag")])
    assert rep.returncode == 2 and "--bag-topic" in rep.stderr


def test_full_size_frames_reach_a_best_effort_subscriber(ros_node):
    """640x480 bgr8 (921 KB) between processes, sensor-data QoS: with the shipped Fast DDS
    profile every frame arrives (with Fast DDS defaults, 0 of 20 did on this machine)."""
    from sensor_msgs.msg import Image

    got, sub = _collect(ros_node, Image, "/replay_test/full_size")
    try:
        rep = run_replay(
            [
                "--images",
                str(CORRIDOR / "query"),
                "--topic",
                "/replay_test/full_size",
                "--rate",
                "10",
                "--count",
                "10",
                "--size",
                "640x480",
            ],
            node=ros_node,
        )
        assert rep.returncode == 0, rep.stderr
        spin_until(ros_node, lambda: len(got) >= 10, 5)
    finally:
        ros_node.destroy_subscription(sub)
    assert len(got) == 10
    assert all((m.width, m.height, len(m.data)) == (640, 480, 640 * 480 * 3) for m in got)
