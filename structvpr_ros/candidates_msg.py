"""Core results -> structvpr_msgs messages, and ROS time <-> float seconds."""

from __future__ import annotations

import math

import numpy as np

from structvpr_core.geometry import matrix_to_quat


def stamp_to_sec(stamp) -> float:
    """builtin_interfaces/Time -> float seconds."""
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def sec_to_stamp(t: float | None):
    """Float seconds -> builtin_interfaces/Time (zero time for None or a non-finite value)."""
    from builtin_interfaces.msg import Time

    if t is None or not math.isfinite(t) or t < 0:
        return Time()
    sec = math.floor(t)
    nanosec = round((t - sec) * 1e9)
    if nanosec >= 1_000_000_000:  # rounding up to the next second
        sec, nanosec = sec + 1, nanosec - 1_000_000_000
    return Time(sec=sec, nanosec=nanosec)


def pose_to_msg(pose):
    """structvpr_core.geometry.Pose -> geometry_msgs/Pose."""
    from geometry_msgs.msg import Pose as PoseMsg

    msg = PoseMsg()
    msg.position.x, msg.position.y, msg.position.z = (float(v) for v in pose.position)
    q = msg.orientation
    q.x, q.y, q.z, q.w = (float(v) for v in pose.orientation)
    return msg


def pose_from_msg(msg):
    """geometry_msgs/Pose -> structvpr_core.geometry.Pose (the inverse of ``pose_to_msg``)."""
    from structvpr_core.geometry import Pose

    p, q = msg.position, msg.orientation
    return Pose((p.x, p.y, p.z), (q.x, q.y, q.z, q.w))


def transform_to_msg(rotation: np.ndarray, translation: np.ndarray):
    """3×3 rotation + 3-vector -> geometry_msgs/Transform."""
    from geometry_msgs.msg import Transform

    msg = Transform()
    t = np.asarray(translation, dtype=np.float64).reshape(3)
    msg.translation.x, msg.translation.y, msg.translation.z = (float(v) for v in t)
    q = matrix_to_quat(rotation)
    msg.rotation.x, msg.rotation.y, msg.rotation.z, msg.rotation.w = (float(v) for v in q)
    return msg


def candidate_to_msg(cand):
    """structvpr_core.loopclosure.Candidate -> structvpr_msgs/PlaceCandidate."""
    from structvpr_msgs.msg import PlaceCandidate

    msg = PlaceCandidate()
    msg.map_id = int(cand.map_id)
    msg.map_stamp = sec_to_stamp(cand.stamp)
    msg.score = float(cand.score)
    msg.inliers = -1 if cand.inliers is None else int(cand.inliers)
    msg.has_pose = cand.pose is not None
    if cand.pose is not None:
        msg.map_pose = pose_to_msg(cand.pose)
    has_rel = cand.relative_rotation is not None and cand.relative_translation is not None
    msg.has_relative = has_rel
    if has_rel:
        msg.relative = transform_to_msg(cand.relative_rotation, cand.relative_translation)
    msg.source = str(cand.source or "")
    return msg


def detection_to_msg(det, header):
    """structvpr_core.loopclosure.Detection + the query's header -> LoopClosureCandidates."""
    from structvpr_msgs.msg import LoopClosureCandidates

    msg = LoopClosureCandidates()
    msg.header = header
    msg.query_id = int(det.query_id)
    msg.candidates = [candidate_to_msg(c) for c in det.candidates]
    msg.extract_ms = float(det.extract_ms)
    msg.search_ms = float(det.search_ms)
    msg.verify_ms = float(det.verify_ms)
    return msg
