"""A keyframe pose graph closed by place-recognition candidates: GTSAM iSAM2, no ROS.

One variable per keyframe (its pose in the map frame, keyed by its structvpr map id), and
``BetweenFactorPose3`` factors of two kinds:

- **odometry**, between consecutive keyframes: the relative motion measured by odometry, with a
  noise that grows with the distance travelled (``odometry_sigma_*_per_m``);
- **loop closure**, between a map keyframe and the query keyframe that recognised it.

How a monocular candidate becomes a constraint (``loop_measurement``): the camera sees *that*
it is at a known place, not *how far* from it. Geometric verification gives the relative
rotation well (heading error 1.7 degrees median on the synthetic route's revisits) but only the
direction of the translation, and that direction is unreliable when the two views are a few
metres apart, the usual case for a revisit (21 degrees median error there, reversed for a
fifth). So the constraint says "the two cameras stand at the same spot" (translation 0,
``loop_sigma_m``: how far apart two views that recognise each other typically are) with the
verified rotation (``loop_sigma_deg_verified``), or with no rotation change and a wide sigma
when the candidate carries no relative pose (``loop_sigma_deg_unverified``: a forward-looking
camera recognises a place roughly facing the same way). Everything is expressed for the
robot's base frame: ``camera_in_base`` (the camera's optical frame in the base frame)
conjugates the camera-frame measurement.

Every loop-closure factor has a robust noise model (Cauchy by default, or Huber): a false
closure far from what odometry and the other closures say gets a small weight instead of
dragging the trajectory (``LoopEdge.weight`` reports it, 1 = fully trusted).

Incremental: ``add_keyframe`` / ``add_loop`` queue factors, ``update`` hands them to iSAM2
(a few more iterations after a loop closure, when the linearisation point moves most).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from structvpr_core.errors import ConfigError
from structvpr_core.geometry import Pose

# The usual optical frame of a camera looking along the base's +x (x right, y down, z forward),
# as (x, y, z, qx, qy, qz, qw): the static transform base -> camera_optical of most robots.
OPTICAL_CAMERA_IN_BASE = (0.0, 0.0, 0.0, -0.5, 0.5, -0.5, 0.5)
# A loop closure whose robust weight is below this counts (and is drawn) as down-weighted.
DOWNWEIGHTED = 0.25


@dataclass(frozen=True)
class PoseGraphConfig:
    # Odometry factors: sigma = max(floor, per_m * distance travelled between the keyframes).
    odometry_sigma_m_per_m: float = 0.05
    odometry_sigma_deg_per_m: float = 0.5
    odometry_min_sigma_m: float = 0.02
    odometry_min_sigma_deg: float = 0.2
    # Loop-closure factors (see the module docstring).
    loop_sigma_m: float = 3.0
    loop_sigma_deg_verified: float = 5.0
    loop_sigma_deg_unverified: float = 20.0
    robust_kernel: Literal["cauchy", "huber"] = "cauchy"
    robust_k: float = 1.5  # in sigmas of the whole 6-d residual
    # Which candidates become loop closures: the best one of a query that passes these.
    min_score: float = 0.0
    min_inliers: int = 20  # for verified candidates (inliers >= 0)
    require_verified: bool = True  # unverified candidates (inliers = -1) are not used
    camera_in_base: tuple[float, ...] = OPTICAL_CAMERA_IN_BASE
    loop_iterations: int = 3  # extra iSAM2 iterations after a loop closure

    def validate(self, name=str) -> None:
        def need(ok: bool, key: str, rule: str) -> None:
            if not ok:
                raise ConfigError(f"{name(key)}: {rule}, got {getattr(self, key)!r}")

        for key in (
            "odometry_sigma_m_per_m",
            "odometry_sigma_deg_per_m",
            "odometry_min_sigma_m",
            "odometry_min_sigma_deg",
            "loop_sigma_m",
            "loop_sigma_deg_verified",
            "loop_sigma_deg_unverified",
            "robust_k",
        ):
            v = getattr(self, key)
            need(math.isfinite(v) and v > 0, key, "must be a number > 0")
        need(self.robust_kernel in ("cauchy", "huber"), "robust_kernel", "expected 'cauchy' or 'huber'")
        need(-1.0 <= self.min_score <= 1.0, "min_score", "must be in [-1, 1]")
        need(self.min_inliers >= 0, "min_inliers", "must be >= 0")
        need(self.loop_iterations >= 0, "loop_iterations", "must be >= 0")
        q = np.asarray(self.camera_in_base[3:], dtype=float)
        need(
            len(self.camera_in_base) == 7 and bool(np.all(np.isfinite(self.camera_in_base))) and np.linalg.norm(q) > 0,
            "camera_in_base",
            "must be [x, y, z, qx, qy, qz, qw]",
        )

    def accepts(self, score: float, inliers: int) -> bool:
        """Does a candidate with this score and inliers (-1 = not verified) become a loop closure?"""
        if score < self.min_score:
            return False
        if inliers < 0:
            return not self.require_verified
        return inliers >= self.min_inliers


def select_loop(candidates, query_id: int, config: PoseGraphConfig, known):
    """The loop closure a query gives, or None: its best candidate (they come best first) that
    ``config.accepts`` and whose keyframe is ``in known`` (the graph; not the query itself).
    ``candidates`` are PlaceCandidate messages or anything with map_id, score and inliers."""
    for c in candidates:
        if config.accepts(c.score, c.inliers) and c.map_id != query_id and c.map_id in known:
            return c
    return None


@dataclass(frozen=True)
class LoopEdge:
    keyframe: int  # the map keyframe recognised
    query: int  # the keyframe that recognised it
    verified_rotation: bool
    weight: float  # the robust kernel's weight at the current estimate (1 = fully trusted)


def to_pose3(pose: Pose):
    """structvpr_core.geometry.Pose -> gtsam.Pose3."""
    import gtsam

    x, y, z, w = pose.orientation
    return gtsam.Pose3(gtsam.Rot3.Quaternion(w, x, y, z), gtsam.Point3(*pose.position))


def from_pose3(pose) -> Pose:
    """gtsam.Pose3 -> structvpr_core.geometry.Pose."""
    q = pose.rotation().toQuaternion()
    return Pose(tuple(pose.translation()), (q.x(), q.y(), q.z(), q.w()))


def _pose3_from_list(values) -> object:
    x, y, z, qx, qy, qz, qw = (float(v) for v in values)
    return to_pose3(Pose((x, y, z), (qx, qy, qz, qw)))


def loop_measurement(relative_rotation: np.ndarray | None, camera_in_base=OPTICAL_CAMERA_IN_BASE):
    """The loop-closure measurement between the keyframe's base (from) and the query's base (to).

    ``relative_rotation``: the verified rotation of the query camera in the keyframe camera's
    frame (``X_keyframe = R · X_query + t``, as in PlaceCandidate.relative), or None. The
    translation is 0 in the camera frame (co-location, module docstring); the unit-length
    translation direction is deliberately not used.
    """
    import gtsam

    R = np.eye(3) if relative_rotation is None else np.asarray(relative_rotation, dtype=float)
    between_cameras = gtsam.Pose3(gtsam.Rot3(R), gtsam.Point3(0.0, 0.0, 0.0))
    camera = _pose3_from_list(camera_in_base)
    return camera.compose(between_cameras).compose(camera.inverse())


class PoseGraph:
    """Keyframes + odometry + loop closures, optimised incrementally with iSAM2 (module docstring)."""

    def __init__(self, config: PoseGraphConfig = PoseGraphConfig()):
        import gtsam

        config.validate()
        self.config = config
        params = gtsam.ISAM2Params()
        params.setRelinearizeThreshold(0.01)
        params.relinearizeSkip = 1
        self._isam = gtsam.ISAM2(params)
        self._new_factors = gtsam.NonlinearFactorGraph()
        self._new_values = gtsam.Values()
        self._estimate = gtsam.Values()
        self._stamps: dict[int, float] = {}  # key -> stamp, in insertion order
        self._last: tuple[int, object] | None = None  # (key, odometry pose) of the newest keyframe
        self._loops: list[tuple[int, int, bool, object]] = []  # (keyframe, query, verified, factor)
        self._pending_loops = 0
        self._kernel = (
            gtsam.noiseModel.mEstimator.Cauchy.Create(config.robust_k)
            if config.robust_kernel == "cauchy"
            else gtsam.noiseModel.mEstimator.Huber.Create(config.robust_k)
        )

    def __len__(self) -> int:
        return len(self._stamps)

    def __contains__(self, key: int) -> bool:
        return key in self._stamps

    @staticmethod
    def _sigmas(rot_deg: float, trans_m: float) -> np.ndarray:
        # gtsam's Pose3 tangent order: rotation (rad) first, then translation (m).
        return np.array([math.radians(rot_deg)] * 3 + [trans_m] * 3)

    def add_keyframe(self, key: int, stamp: float, odometry) -> None:
        """A new keyframe with its odometry pose (gtsam.Pose3); chained to the previous keyframe by
        an odometry factor, the first one anchored where odometry puts it."""
        import gtsam

        if key in self._stamps:
            raise ValueError(f"keyframe {key} is already in the graph")
        cfg = self.config
        if self._last is None:
            prior = gtsam.noiseModel.Diagonal.Sigmas(self._sigmas(0.01, 0.001))
            self._new_factors.add(gtsam.PriorFactorPose3(key, odometry, prior))
            initial = odometry
        else:
            prev_key, prev_odometry = self._last
            delta = prev_odometry.between(odometry)
            dist = float(np.linalg.norm(delta.translation()))
            noise = gtsam.noiseModel.Diagonal.Sigmas(
                self._sigmas(
                    max(cfg.odometry_min_sigma_deg, cfg.odometry_sigma_deg_per_m * dist),
                    max(cfg.odometry_min_sigma_m, cfg.odometry_sigma_m_per_m * dist),
                )
            )
            self._new_factors.add(gtsam.BetweenFactorPose3(prev_key, key, delta, noise))
            # Start the new keyframe where the corrected trajectory continues, not at the raw odometry.
            base = (
                self._new_values.atPose3(prev_key)
                if self._new_values.exists(prev_key)
                else self._estimate.atPose3(prev_key)
            )
            initial = base.compose(delta)
        self._new_values.insert(key, initial)
        self._stamps[key] = float(stamp)
        self._last = (key, odometry)

    def add_loop(self, keyframe: int, query: int, measured, verified_rotation: bool) -> None:
        """A loop closure: ``measured`` (gtsam.Pose3, from ``loop_measurement``) is the query's base
        pose in the keyframe's base frame. Both keyframes must be in the graph."""
        import gtsam

        for key in (keyframe, query):
            if key not in self._stamps:
                raise KeyError(f"keyframe {key} is not in the graph")
        cfg = self.config
        rot = cfg.loop_sigma_deg_verified if verified_rotation else cfg.loop_sigma_deg_unverified
        base = gtsam.noiseModel.Diagonal.Sigmas(self._sigmas(rot, cfg.loop_sigma_m))
        factor = gtsam.BetweenFactorPose3(keyframe, query, measured, gtsam.noiseModel.Robust.Create(self._kernel, base))
        self._new_factors.add(factor)
        self._loops.append((keyframe, query, verified_rotation, factor))
        self._pending_loops += 1

    def update(self) -> float:
        """Optimise with the queued factors; returns the time it took (ms)."""
        import gtsam

        t0 = time.perf_counter()
        self._isam.update(self._new_factors, self._new_values)
        if self._pending_loops:
            for _ in range(self.config.loop_iterations):
                self._isam.update()
        self._estimate = self._isam.calculateEstimate()
        self._new_factors = gtsam.NonlinearFactorGraph()
        self._new_values = gtsam.Values()
        self._pending_loops = 0
        return (time.perf_counter() - t0) * 1e3

    def poses(self) -> list[tuple[int, float, Pose]]:
        """(key, stamp, optimised pose) of every keyframe in the last ``update``, in insertion order."""
        return [
            (key, stamp, from_pose3(self._estimate.atPose3(key)))
            for key, stamp in self._stamps.items()
            if self._estimate.exists(key)
        ]

    def loop_edges(self) -> list[LoopEdge]:
        """The loop closures added, with the robust kernel's weight at the current estimate."""
        edges = []
        for keyframe, query, verified, factor in self._loops:
            weight = 1.0
            if self._estimate.exists(keyframe) and self._estimate.exists(query):
                sigmas = factor.noiseModel().noise().sigmas()
                residual = float(np.linalg.norm(factor.unwhitenedError(self._estimate) / sigmas))
                weight = float(self._kernel.weight(residual))
            edges.append(LoopEdge(keyframe, query, verified, weight))
        return edges
