"""The recent poses of the robot, shared by the pose callback and the worker thread (ROS-free)."""

from __future__ import annotations

import threading
from collections import deque

from structvpr_core.geometry import Pose, interpolate_pose


class PoseBuffer:
    """A bounded, thread-safe history of (stamp, Pose), newest last, and the pose at an image's stamp."""

    def __init__(self, maxlen: int = 2000):
        self._poses: deque = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def add(self, t: float, pose: Pose) -> None:
        with self._lock:
            if self._poses and t < self._poses[-1][0]:
                self._poses.clear()  # time went backwards (bag restarted): forget old poses
            self._poses.append((t, pose))

    def clear(self) -> None:
        with self._lock:
            self._poses.clear()

    def __len__(self) -> int:
        return len(self._poses)

    def at(self, t: float, max_gap_s: float) -> Pose | None:
        """The pose at ``t``, interpolated between poses at most ``max_gap_s`` apart; also the newest
        pose when ``t`` is newer than it by at most ``max_gap_s``; else None."""
        with self._lock:
            if not self._poses:
                return None
            stamps = [s for s, _ in self._poses]
            poses = [q for _, q in self._poses]
        pose = interpolate_pose(stamps, poses, t, max_gap_s=max_gap_s)
        if pose is None and stamps[-1] < t <= stamps[-1] + max_gap_s:
            pose = poses[-1]  # the image is newer than the newest pose, but not by much
        return pose
