"""A synthetic route that revisits places: ground-truth poses, drifting odometry, camera frames.

The route drives laps around a block of ``streets`` straight streets (a square for 4), turning
left at each corner. Street i is the synthetic place i of ``synthetic_world`` (the same street
for a given seed), seen along its +Z axis from ``s`` = 0 to ``street_length_m``. Every lap
revisits the same places: from another lane (``lap_lateral_m``), ``lap_shift_m`` further along
the street, with other traffic, noise and a small heading jitter, so that a loop-closure
detector has real work to do but the answer is known.

Frames (SYNTHETIC: label every number measured on them as synthetic):

- ``pose``: ground truth of the body frame in the world (x east, y north, z up, ROS REP 103);
  the camera's optical centre is at the body origin, looking along the body's +x;
- ``odometry``: the same route integrated from noisy relative motions (a scale error, a gyro bias
  and white noise per step) starting at the true first pose, so it drifts like wheel odometry;
- ``stamp``: seconds from the start, ``frame_period_s`` apart.

``render_frame`` draws the camera image of a frame (BGR uint8); ``camera_matrix`` is its K.
Deterministic for a given config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..geometry import Pose
from .synthetic_render import Camera, Condition, concat, pack, render
from .synthetic_world import add_traffic, make_world

CAMERA_HEIGHT_M = 1.8
FOCAL_FRACTION = 0.85  # focal length / image width, as in the synthetic benchmark


@dataclass(frozen=True)
class RouteConfig:
    streets: int = 4  # streets around the block (4: a square, left turns)
    street_length_m: float = 36.0  # <= 36: the synthetic streets place traffic ahead of the camera up to ~40 m
    step_m: float = 2.0  # distance between frames along a street
    laps: int = 2
    seed: int = 0
    size: tuple[int, int] = (320, 240)  # image (W, H)
    frame_period_s: float = 1.0
    lap_lateral_m: tuple[float, ...] = (-1.0, 0.8)  # lane per lap (camera X, metres right of the centre line)
    lap_shift_m: float = 1.0  # each lap starts this much further along the streets
    heading_jitter_deg: float = 3.0  # camera yaw noise per frame (ground truth follows it)
    # Odometry errors (per step of step_m): scale error of the distance, gyro bias per metre,
    # white noise of the distance, of the sideways slip and of the heading change.
    odom_scale_error: float = 0.03
    odom_yaw_bias_deg_per_m: float = 0.1
    odom_noise_m: float = 0.03
    odom_noise_deg: float = 0.3

    def validate(self) -> None:
        if self.streets < 2 or self.laps < 1:
            raise ValueError("a route needs at least 2 streets and 1 lap")
        if not 0 < self.step_m <= self.street_length_m <= 36.0:
            raise ValueError("need 0 < step_m <= street_length_m <= 36")
        if not self.lap_lateral_m:
            raise ValueError("lap_lateral_m needs at least one lane")


@dataclass(frozen=True)
class RouteFrame:
    index: int
    lap: int
    street: int
    s: float  # metres along the street
    stamp: float  # seconds since the start of the route
    pose: Pose  # ground truth (body in world)
    odometry: Pose  # drifting odometry estimate of the same pose
    camera: Camera
    condition: Condition


def _yaw_pose(x: float, y: float, yaw: float) -> Pose:
    return Pose((x, y, 0.0), (0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)))


def yaw_of(pose: Pose) -> float:
    """Heading (rotation about z) of a planar pose."""
    qx, qy, qz, qw = pose.orientation
    return math.atan2(2 * (qw * qz + qx * qy), 1 - 2 * (qy * qy + qz * qz))


def make_route(cfg: RouteConfig = RouteConfig()) -> list[RouteFrame]:
    """The frames of the route, in driving order."""
    cfg.validate()
    w, h = cfg.size
    rng = np.random.default_rng([cfg.seed, 1_000_003])
    turn = 2 * math.pi / cfg.streets  # a closed polygon: exterior angle per corner
    corners = [np.zeros(2)]
    for i in range(cfg.streets - 1):
        corners.append(corners[-1] + cfg.street_length_m * np.array([math.cos(i * turn), math.sin(i * turn)]))
    frames: list[RouteFrame] = []
    odom = None
    prev_truth = None
    for lap in range(cfg.laps):
        lateral = cfg.lap_lateral_m[lap % len(cfg.lap_lateral_m)]
        s0 = (lap * cfg.lap_shift_m) % cfg.step_m
        for street in range(cfg.streets):
            heading = street * turn
            fwd = np.array([math.cos(heading), math.sin(heading)])
            right = np.array([math.sin(heading), -math.cos(heading)])
            for s in np.arange(s0, cfg.street_length_m - 1e-9, cfg.step_m):
                cam_yaw = math.radians(float(rng.normal(0.0, cfg.heading_jitter_deg)))
                x, y = corners[street] + float(s) * fwd + lateral * right
                truth = (float(x), float(y), heading - cam_yaw)  # the renderer's yaw turns right
                odom = truth if odom is None else _odometry_step(odom, prev_truth, truth, cfg, rng)
                prev_truth = truth
                camera = Camera(
                    x=lateral,
                    z=float(s),
                    yaw=cam_yaw,
                    height=CAMERA_HEIGHT_M,
                    f=FOCAL_FRACTION * w,
                    cx=w / 2,
                    cy=h / 2,  # level camera: K below is exact
                )
                condition = Condition(light="day" if lap % 2 == 0 else "overcast", noise=float(rng.uniform(1, 3)))
                index = len(frames)
                frames.append(
                    RouteFrame(
                        index,
                        lap,
                        street,
                        float(s),
                        index * cfg.frame_period_s,
                        _yaw_pose(*truth),
                        _yaw_pose(*odom),
                        camera,
                        condition,
                    )
                )
    return frames


def _odometry_step(odom, prev_truth, truth, cfg: RouteConfig, rng) -> tuple[float, float, float]:
    """``odom`` moved by the true relative motion prev_truth -> truth, measured with errors."""
    dx, dy = truth[0] - prev_truth[0], truth[1] - prev_truth[1]
    c, s = math.cos(prev_truth[2]), math.sin(prev_truth[2])
    fwd, side = c * dx + s * dy, -s * dx + c * dy  # the motion in the previous body frame
    dyaw = math.remainder(truth[2] - prev_truth[2], 2 * math.pi)
    dist = math.hypot(fwd, side)
    fwd = fwd * (1 + cfg.odom_scale_error) + rng.normal(0, cfg.odom_noise_m)
    side = side * (1 + cfg.odom_scale_error) + rng.normal(0, cfg.odom_noise_m)
    dyaw += math.radians(cfg.odom_yaw_bias_deg_per_m * dist + rng.normal(0, cfg.odom_noise_deg))
    c, s = math.cos(odom[2]), math.sin(odom[2])
    return (odom[0] + c * fwd - s * side, odom[1] + s * fwd + c * side, odom[2] + dyaw)


_WORLDS: dict = {}


def _world(seed: int, street: int):
    key = (seed, street)
    if key not in _WORLDS:
        world = make_world(np.random.default_rng([seed, street, 0]))
        _WORLDS[key] = (world, pack(world.groups))
    return _WORLDS[key][0]


def render_frame(frame: RouteFrame, cfg: RouteConfig) -> np.ndarray:
    """The camera image of ``frame`` (BGR uint8, ``cfg.size``): its street, its traffic, its light."""
    _world(cfg.seed, frame.street)
    world, static = _WORLDS[(cfg.seed, frame.street)]
    rng = np.random.default_rng([cfg.seed, frame.street, frame.index, 7])
    traffic = add_traffic(world, rng, near_z=min(frame.camera.z, 30.0))
    packed = concat(static, pack(traffic)) if traffic else static
    image, _ = render(packed, frame.camera, frame.condition, cfg.size, rng)
    return image


def camera_matrix(cfg: RouteConfig) -> np.ndarray:
    """3×3 intrinsics of the route's camera."""
    w, h = cfg.size
    f = FOCAL_FRACTION * w
    return np.array([[f, 0.0, w / 2], [0.0, f, h / 2], [0.0, 0.0, 1.0]])
