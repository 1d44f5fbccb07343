"""Camera poses: position + unit quaternion (x, y, z, w, the ROS order), and their interpolation.

Poses from a bag arrive at their own rate; images get a pose by interpolating the two
neighbouring poses (linear in position, spherical-linear in orientation).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Pose:
    """A pose in the map frame. ``orientation`` is a unit quaternion (x, y, z, w)."""

    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    orientation: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0)

    def __post_init__(self):
        # Normalise types so that equality after a save/load round trip is exact.
        object.__setattr__(self, "position", tuple(float(v) for v in self.position))
        object.__setattr__(self, "orientation", tuple(float(v) for v in self.orientation))
        if len(self.position) != 3 or len(self.orientation) != 4:
            raise ValueError("Pose needs 3 position values and 4 quaternion values (x, y, z, w)")

    def to_dict(self) -> dict:
        return {"position": list(self.position), "orientation": list(self.orientation)}

    @classmethod
    def from_dict(cls, d: dict) -> Pose:
        return cls(tuple(d["position"]), tuple(d.get("orientation", (0.0, 0.0, 0.0, 1.0))))

    def distance_to(self, other: Pose) -> float:
        return float(math.dist(self.position, other.position))


def quat_normalize(q: Sequence[float]) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n == 0.0:
        return np.array([0.0, 0.0, 0.0, 1.0])
    return q / n


def quat_to_matrix(q: Sequence[float]) -> np.ndarray:
    """3×3 rotation matrix of quaternion (x, y, z, w)."""
    x, y, z, w = quat_normalize(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quat(R: np.ndarray) -> np.ndarray:
    """Quaternion (x, y, z, w) with w >= 0 of a 3×3 rotation matrix (Shepperd's method)."""
    R = np.asarray(R, dtype=np.float64)
    tr = np.trace(R)
    if tr > 0:
        s = math.sqrt(tr + 1.0) * 2
        q = [(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, 0.25 * s]
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = math.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2]) * 2
        q = [0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s, (R[2, 1] - R[1, 2]) / s]
    elif R[1, 1] > R[2, 2]:
        s = math.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2]) * 2
        q = [(R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s, (R[0, 2] - R[2, 0]) / s]
    else:
        s = math.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1]) * 2
        q = [(R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s, (R[1, 0] - R[0, 1]) / s]
    q = quat_normalize(q)
    return -q if q[3] < 0 else q


def quat_slerp(q0: Sequence[float], q1: Sequence[float], t: float) -> np.ndarray:
    """Spherical linear interpolation between unit quaternions (shortest arc)."""
    a, b = quat_normalize(q0), quat_normalize(q1)
    dot = float(np.dot(a, b))
    if dot < 0.0:  # q and -q are the same rotation; take the short way round
        b, dot = -b, -dot
    if dot > 0.9995:  # nearly parallel: linear interpolation is exact enough and stable
        return quat_normalize(a + t * (b - a))
    theta = math.acos(min(1.0, dot))
    s = math.sin(theta)
    return (math.sin((1 - t) * theta) * a + math.sin(t * theta) * b) / s


def interpolate_pose(
    stamps: Sequence[float], poses: Sequence[Pose], t: float, max_gap_s: float | None = None
) -> Pose | None:
    """Pose at time ``t`` from time-sorted ``(stamps, poses)``.

    Returns None outside the covered interval, or when the two neighbours are more than
    ``max_gap_s`` apart (a dropout in the pose stream should not invent a pose).
    """
    if not stamps:
        return None
    i = bisect.bisect_left(stamps, t)
    if i < len(stamps) and stamps[i] == t:
        return poses[i]
    if i == 0 or i == len(stamps):
        return None
    t0, t1 = stamps[i - 1], stamps[i]
    if max_gap_s is not None and t1 - t0 > max_gap_s:
        return None
    a = (t - t0) / (t1 - t0)
    p0, p1 = poses[i - 1], poses[i]
    pos = tuple(float(x0 + a * (x1 - x0)) for x0, x1 in zip(p0.position, p1.position, strict=True))
    return Pose(pos, tuple(quat_slerp(p0.orientation, p1.orientation, a)))
