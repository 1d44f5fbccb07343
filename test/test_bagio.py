"""Reading images and poses from real rosbag2 files (written here with rosbags' writer)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from structvpr_core.bagio import count_images, read_frames, read_poses
from structvpr_core.errors import DatasetError
from structvpr_core.geometry import Pose, interpolate_pose, matrix_to_quat, quat_slerp, quat_to_matrix

TS = get_typestore(Stores.ROS2_HUMBLE)
T = TS.types


def _header(t: float, frame="cam"):
    sec = int(t)
    return T["std_msgs/msg/Header"](
        stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=round((t - sec) * 1e9)), frame_id=frame
    )


def _pose_msg(p: Pose):
    P = T["geometry_msgs/msg/Pose"]
    return P(
        position=T["geometry_msgs/msg/Point"](x=p.position[0], y=p.position[1], z=p.position[2]),
        orientation=T["geometry_msgs/msg/Quaternion"](
            x=p.orientation[0], y=p.orientation[1], z=p.orientation[2], w=p.orientation[3]
        ),
    )


def write_bag(
    path: Path,
    images: list[tuple[float, np.ndarray]],
    poses: list[tuple[float, Pose]] = (),
    storage: str = "sqlite3",
    compressed: bool = False,
    pose_type: str = "PoseStamped",
    image_topic: str = "/cam/image",
    pose_topic: str = "/pose",
    pad: int = 4,
) -> Path:
    """A rosbag2 with BGR ``images`` (as rgb8 Image with padded rows, or jpeg CompressedImage) and poses."""
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as w:
        img_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
        ci = w.add_connection(image_topic, img_type, typestore=TS)
        pose_msgtype = "nav_msgs/msg/Odometry" if pose_type == "Odometry" else "geometry_msgs/msg/PoseStamped"
        cp = w.add_connection(pose_topic, pose_msgtype, typestore=TS) if poses else None
        events = [(t, "img", im) for t, im in images] + [(t, "pose", p) for t, p in poses]
        for t, kind, obj in sorted(events, key=lambda e: (e[0], e[1])):
            if kind == "img":
                if compressed:
                    _ok, buf = cv2.imencode(".png", obj)
                    msg = T[img_type](header=_header(t), format="png", data=buf.ravel())
                else:
                    h, wd = obj.shape[:2]
                    rows = np.concatenate([obj[:, :, ::-1].reshape(h, -1), np.zeros((h, pad), np.uint8)], axis=1)
                    msg = T[img_type](
                        header=_header(t),
                        height=h,
                        width=wd,
                        encoding="rgb8",
                        is_bigendian=0,
                        step=wd * 3 + pad,
                        data=rows.ravel(),
                    )
                w.write(ci, int(t * 1e9), TS.serialize_cdr(msg, img_type))
            else:
                if pose_type == "Odometry":
                    cov = T["geometry_msgs/msg/PoseWithCovariance"](pose=_pose_msg(obj), covariance=np.zeros(36))
                    tw = T["geometry_msgs/msg/TwistWithCovariance"](
                        twist=T["geometry_msgs/msg/Twist"](
                            linear=T["geometry_msgs/msg/Vector3"](x=0, y=0, z=0),
                            angular=T["geometry_msgs/msg/Vector3"](x=0, y=0, z=0),
                        ),
                        covariance=np.zeros(36),
                    )
                    msg = T[pose_msgtype](header=_header(t, "odom"), child_frame_id="base", pose=cov, twist=tw)
                else:
                    msg = T[pose_msgtype](header=_header(t, "map"), pose=_pose_msg(obj))
                w.write(cp, int(t * 1e9), TS.serialize_cdr(msg, pose_msgtype))
    return path


def frames(n=4, h=6, w=9):
    rng = np.random.default_rng(1)
    return [(10.0 + i, rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for i in range(n)]


def yaw_pose(x, yaw):
    return Pose((x, 0.0, 0.0), (0.0, 0.0, np.sin(yaw / 2), np.cos(yaw / 2)))


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
@pytest.mark.parametrize("pose_type", ["PoseStamped", "Odometry"])
def test_images_and_interpolated_poses(tmp_path, storage, pose_type):
    imgs = frames()  # stamps 10, 11, 12, 13
    poses = [(9.5, yaw_pose(0.0, 0.0)), (11.5, yaw_pose(2.0, np.pi / 2)), (12.5, yaw_pose(4.0, np.pi / 2))]
    bag = write_bag(tmp_path / "bag", imgs, poses, storage=storage, pose_type=pose_type)
    assert count_images(bag, "/cam/image") == 4
    out = list(read_frames(bag, "/cam/image", "/pose"))
    assert [f.stamp for f in out] == [10.0, 11.0, 12.0, 13.0]
    for f, (_, im) in zip(out, imgs, strict=True):
        assert np.array_equal(f.image, im)  # rgb8 with padded rows → exact BGR
    assert out[0].pose.position == pytest.approx((0.5, 0.0, 0.0))  # 1/4 of the way
    assert out[1].pose.position == pytest.approx((1.5, 0.0, 0.0))
    yaw = 2 * np.arctan2(out[1].pose.orientation[2], out[1].pose.orientation[3])
    assert yaw == pytest.approx(3 * np.pi / 8)  # slerp, 3/4 of the way to 90°
    assert out[2].pose.position == pytest.approx((3.0, 0.0, 0.0))
    assert out[3].pose is None  # after the last pose: none invented
    assert out[0].source.endswith("#/cam/image@10000000000") and out[0].frame_id == "cam"


def test_compressed_images(tmp_path):
    imgs = frames(2)
    bag = write_bag(tmp_path / "bag", imgs, compressed=True, storage="mcap")
    out = list(read_frames(bag, "/cam/image"))
    assert len(out) == 2 and all(
        np.array_equal(f.image, im) for f, (_, im) in zip(out, imgs, strict=True)
    )  # png: lossless
    assert out[0].pose is None


def test_missing_topic_wrong_type_and_missing_bag(tmp_path):
    bag = write_bag(tmp_path / "bag", frames(1), [(10.0, yaw_pose(0, 0))])
    with pytest.raises(DatasetError, match=r"no topic '/nope' \(topics: /cam/image, /pose\)"):
        list(read_frames(bag, "/nope"))
    with pytest.raises(DatasetError, match="has type geometry_msgs/msg/PoseStamped"):
        list(read_frames(bag, "/pose"))
    with pytest.raises(DatasetError, match="no such bag"):
        read_poses(tmp_path / "absent", "/pose")
    (tmp_path / "notabag").mkdir()
    with pytest.raises(DatasetError, match="cannot open"):
        read_poses(tmp_path / "notabag", "/pose")


def test_pose_gap_and_quaternion_helpers():
    stamps, poses = [0.0, 1.0, 5.0], [yaw_pose(0, 0), yaw_pose(1, 0), yaw_pose(5, 0)]
    assert interpolate_pose(stamps, poses, 3.0, max_gap_s=1.0) is None  # in a 4 s dropout
    assert interpolate_pose(stamps, poses, 3.0).position == pytest.approx((3.0, 0, 0))
    assert interpolate_pose(stamps, poses, 1.0) is poses[1]
    q = np.array([0.1, -0.3, 0.5, 0.8])
    q /= np.linalg.norm(q)
    R = quat_to_matrix(q)
    assert np.allclose(R @ R.T, np.eye(3)) and np.allclose(matrix_to_quat(R), q)
    # the shortest arc: q and -q are one rotation
    mid = quat_slerp((0, 0, 0, 1), -np.array([0, 0, np.sin(0.5), np.cos(0.5)]), 0.5)
    assert np.allclose(np.abs(mid), [0, 0, np.sin(0.25), np.cos(0.25)])
