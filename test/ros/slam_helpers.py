"""Loop closures of a synthetic route from its ground truth, as a verifying front end would give them.

``recorded_closures`` pairs every keyframe of the second lap with the nearest keyframe of the
first (within ``max_distance_m``) and the relative rotation of the two cameras (the truth plus
a little noise, as geometric verification measures it: about a degree); ``false_closures``
picks pairs of keyframes far apart, the kind of closure a repetitive scene produces.
"""

from __future__ import annotations

import math

import numpy as np

from structvpr_core.data.synthetic_route import RouteFrame
from structvpr_ros.pose_graph import OPTICAL_CAMERA_IN_BASE, _pose3_from_list, to_pose3


def camera_rotation(keyframe: RouteFrame, query: RouteFrame, noise_deg: float = 0.0, rng=None) -> np.ndarray:
    """Rotation of the query camera in the keyframe camera's frame (PlaceCandidate.relative's convention)."""
    import gtsam

    camera = _pose3_from_list(OPTICAL_CAMERA_IN_BASE)
    between = camera.inverse().compose(to_pose3(keyframe.pose).between(to_pose3(query.pose))).compose(camera)
    R = between.rotation().matrix()
    if noise_deg and rng is not None:
        R = gtsam.Rot3.Expmap(rng.normal(0, math.radians(noise_deg), 3)).matrix() @ R
    return R


def recorded_closures(frames: list[RouteFrame], max_distance_m: float = 3.0, seed: int = 0):
    """[(keyframe index, query index, camera rotation)] for every later-lap frame near a first-lap one."""
    rng = np.random.default_rng(seed)
    first = [f for f in frames if f.lap == 0]
    xy = np.array([f.pose.position[:2] for f in first])
    out = []
    for q in frames:
        if q.lap == 0:
            continue
        d = np.linalg.norm(xy - np.array(q.pose.position[:2]), axis=1)
        j = int(np.argmin(d))
        if d[j] <= max_distance_m:
            out.append((first[j].index, q.index, camera_rotation(first[j], q, 1.0, rng)))
    return out


def false_closures(frames: list[RouteFrame], count: int, min_distance_m: float = 20.0):
    """``count`` (keyframe index, query index) pairs of later-lap queries and first-lap keyframes far apart."""
    first = [f for f in frames if f.lap == 0]
    later = [f for f in frames if f.lap > 0]
    out = []
    for q in later[len(later) // 4 :: max(1, len(later) // (2 * count))]:
        far = [k for k in first if math.dist(k.pose.position, q.pose.position) >= min_distance_m]
        if far:
            out.append((far[len(far) // 2].index, q.index))
        if len(out) == count:
            break
    return out
