"""Reading camera images and poses from rosbag2 recordings (sqlite3 or mcap) with ``rosbags``.

No ROS installation is needed. Images may be ``sensor_msgs/Image`` or
``sensor_msgs/CompressedImage``; poses ``geometry_msgs/PoseStamped``,
``geometry_msgs/PoseWithCovarianceStamped`` or ``nav_msgs/Odometry``. Each image gets the pose
interpolated at its stamp (header stamp; the recording time when the header stamp is zero).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DatasetError, ImageError
from .geometry import Pose, interpolate_pose

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
POSE_TYPES = ("geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/PoseWithCovarianceStamped", "nav_msgs/msg/Odometry")


@dataclass
class BagFrame:
    stamp: float  # seconds
    image: np.ndarray  # H×W×3 uint8 BGR
    pose: Pose | None
    source: str  # "<bag>#<topic>@<stamp ns>": a reference to the frame in the bag
    frame_id: str = ""


def _open(bag: Path):
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    if not bag.exists():
        raise DatasetError(f"{bag}: no such bag")
    try:
        reader = AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_HUMBLE))
        reader.open()
    except Exception as e:  # rosbags raises several reader error types for unreadable bags
        raise DatasetError(f"{bag}: cannot open as a rosbag2 recording ({type(e).__name__}: {e})") from None
    return reader


def _connections(reader, bag: Path, topic: str, allowed: tuple[str, ...]):
    conns = [c for c in reader.connections if c.topic == topic]
    if not conns:
        topics = sorted({c.topic for c in reader.connections})
        raise DatasetError(f"{bag}: no topic {topic!r} (topics: {', '.join(topics) or 'none'})")
    bad = [c.msgtype for c in conns if c.msgtype not in allowed]
    if bad:
        raise DatasetError(f"{bag}: topic {topic} has type {bad[0]}, expected one of {', '.join(allowed)}")
    return conns


def _stamp(msg, bag_time_ns: int) -> float:
    header = getattr(msg, "header", None)
    if header is not None and (header.stamp.sec or header.stamp.nanosec):
        return header.stamp.sec + header.stamp.nanosec * 1e-9
    return bag_time_ns * 1e-9


def _pose_of(msg) -> Pose:
    p = msg.pose.pose if hasattr(msg.pose, "pose") else msg.pose  # Odometry / *WithCovariance
    return Pose(
        (p.position.x, p.position.y, p.position.z), (p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w)
    )


def read_poses(bag: str | Path, topic: str) -> tuple[list[float], list[Pose]]:
    """All poses of ``topic``, sorted by stamp."""
    bag = Path(bag)
    reader = _open(bag)
    try:
        conns = _connections(reader, bag, topic, POSE_TYPES)
        items = []
        for conn, t_ns, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            items.append((_stamp(msg, t_ns), _pose_of(msg)))
    finally:
        reader.close()
    items.sort(key=lambda it: it[0])
    return [s for s, _ in items], [p for _, p in items]


def count_images(bag: str | Path, topic: str) -> int:
    bag = Path(bag)
    reader = _open(bag)
    try:
        return sum(c.msgcount for c in _connections(reader, bag, topic, IMAGE_TYPES))
    finally:
        reader.close()


def _decode(msg, msgtype: str) -> np.ndarray:
    from .image_msgs import compressed_msg_to_bgr, image_msg_to_bgr

    if msgtype.endswith("CompressedImage"):
        return compressed_msg_to_bgr(msg.format, msg.data)
    return image_msg_to_bgr(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data)


def read_frames(
    bag: str | Path,
    image_topic: str,
    pose_topic: str | None = None,
    max_pose_gap_s: float | None = 2.0,
    skip_bad: bool = True,
) -> Iterator[BagFrame]:
    """Yield the images of ``image_topic`` in recording order, with interpolated poses.

    Poses are read first (a second pass over the bag, small messages). A frame outside the
    pose stream, or in a gap longer than ``max_pose_gap_s``, gets ``pose=None``. Undecodable
    images are skipped when ``skip_bad`` (a recording may hold a few broken frames), else
    raise ImageError.
    """
    bag = Path(bag)
    stamps, poses = read_poses(bag, pose_topic) if pose_topic else ([], [])
    reader = _open(bag)
    try:
        conns = _connections(reader, bag, image_topic, IMAGE_TYPES)
        for conn, t_ns, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            stamp = _stamp(msg, t_ns)
            try:
                image = _decode(msg, conn.msgtype)
            except ImageError as e:
                if not skip_bad:
                    raise ImageError(f"{bag}#{image_topic}@{t_ns}: {e}") from None
                continue
            pose = interpolate_pose(stamps, poses, stamp, max_pose_gap_s) if pose_topic else None
            yield BagFrame(
                stamp,
                image,
                pose,
                f"{bag.name}#{image_topic}@{round(stamp * 1e9)}",
                getattr(msg.header, "frame_id", ""),
            )
    finally:
        reader.close()
