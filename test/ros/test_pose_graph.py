"""The pose-graph back end: how a candidate becomes a constraint, the graph (no ROS), and the
node over real DDS fed by recorded candidates (a synthetic loop with drifting odometry).

ATE is evo's (structvpr_ros.slam_eval). All trajectories here are SYNTHETIC.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time

import numpy as np
import pytest
from ros_helpers import REPO, spin_until, write_params
from slam_helpers import camera_rotation, false_closures, recorded_closures

from structvpr_core.data.synthetic_route import RouteConfig, camera_matrix, make_route, render_frame, yaw_of
from structvpr_core.errors import ConfigError
from structvpr_ros.pose_graph import (
    DOWNWEIGHTED,
    OPTICAL_CAMERA_IN_BASE,
    PoseGraph,
    PoseGraphConfig,
    loop_measurement,
    select_loop,
    to_pose3,
)
from structvpr_ros.slam_eval import ate_rmse

gtsam = pytest.importorskip("gtsam")

# A short loop: 4 streets of 20 m, two laps, a keyframe every 2 m (80 keyframes).
SHORT = RouteConfig(street_length_m=20.0, laps=2, odom_yaw_bias_deg_per_m=0.2)


@pytest.fixture(scope="module")
def short_route():
    return make_route(SHORT)


def _ate(frames, poses) -> float:
    stamps = [f.stamp for f in frames]
    return ate_rmse(stamps, [f.pose for f in frames], stamps, poses)


def _optimise(frames, closures, config: PoseGraphConfig | None = None):
    """Feed the graph as the node does: keyframe by keyframe, a closure with its query, update each time."""
    graph = PoseGraph(config or PoseGraphConfig())
    by_query = {q: (k, R) for k, q, R in closures}
    for f in frames:
        graph.add_keyframe(f.index + 1, f.stamp, to_pose3(f.odometry))
        if f.index in by_query:
            k, R = by_query[f.index]
            graph.add_loop(k + 1, f.index + 1, loop_measurement(R), verified_rotation=R is not None)
        graph.update()
    return graph, [p for _, _, p in graph.poses()]


# ---- the constraint --------------------------------------------------------------------------


def test_loop_measurement_is_co_location_with_the_verified_rotation():
    # Unverified: the two bases coincide, same heading.
    m = loop_measurement(None)
    assert np.allclose(m.translation(), 0) and np.allclose(m.rotation().matrix(), np.eye(3))
    # A query camera turned left by 10 degrees: in the optical frame (y down) that is -10 degrees
    # about y; in the base frame (z up) +10 degrees of yaw. Translation stays 0 (no scale).
    theta = math.radians(10)
    m = loop_measurement(gtsam.Rot3.Ry(-theta).matrix())
    assert m.rotation().yaw() == pytest.approx(theta)
    assert m.rotation().roll() == pytest.approx(0, abs=1e-12) and m.rotation().pitch() == pytest.approx(0, abs=1e-12)
    assert np.allclose(m.translation(), 0)
    # A camera mounted 0.5 m ahead of the base: the *cameras* are co-located, so the bases are not.
    mounted = (0.5, 0.0, 1.2, *OPTICAL_CAMERA_IN_BASE[3:])
    m = loop_measurement(gtsam.Rot3.Ry(-theta).matrix(), mounted)
    camera = gtsam.Pose3(gtsam.Rot3.Quaternion(0.5, -0.5, 0.5, -0.5), gtsam.Point3(0.5, 0.0, 1.2))
    assert np.allclose(m.compose(camera).translation(), camera.translation())
    assert np.linalg.norm(m.translation()) == pytest.approx(2 * 0.5 * math.sin(theta / 2))


def test_verified_rotation_of_a_revisit_matches_the_truth():
    """Real verification of two rendered views of one place (first and second lap): the rotation
    it measures, turned into a constraint, has the true relative heading within a few degrees."""
    from structvpr_core.verify import GeometricVerifier

    cfg = RouteConfig(street_length_m=20.0)
    frames = make_route(cfg)
    first = [f for f in frames if f.lap == 0]
    verifier = GeometricVerifier()
    checked = 0
    for q in [f for f in frames if f.lap == 1 and f.street == 1][2:6]:
        k = min(first, key=lambda f: math.dist(f.pose.position, q.pose.position))
        r = verifier.verify(render_frame(q, cfg), render_frame(k, cfg), K=camera_matrix(cfg))
        if r.inliers < 20 or r.R is None:
            continue
        measured = loop_measurement(r.R).rotation().yaw()
        truth = math.remainder(yaw_of(q.pose) - yaw_of(k.pose), 2 * math.pi)
        assert math.degrees(abs(math.remainder(measured - truth, 2 * math.pi))) < 3.0
        # and the helper that makes the recorded candidates uses the same convention
        assert loop_measurement(camera_rotation(k, q)).rotation().yaw() == pytest.approx(truth, abs=1e-9)
        checked += 1
    assert checked >= 2


def test_which_candidate_becomes_a_loop_closure():
    from types import SimpleNamespace as C

    cfg = PoseGraphConfig(min_score=0.5, min_inliers=20)
    known = {1, 2, 3}
    cands = [C(map_id=9, score=0.9, inliers=80), C(map_id=2, score=0.9, inliers=10), C(map_id=3, score=0.6, inliers=25)]
    assert select_loop(cands, 7, cfg, known).map_id == 3  # 9 is not in the graph, 2 has too few inliers
    assert select_loop([C(map_id=2, score=0.4, inliers=90)], 7, cfg, known) is None
    assert select_loop([C(map_id=2, score=0.9, inliers=-1)], 7, cfg, known) is None  # unverified
    loose = PoseGraphConfig(require_verified=False)
    assert select_loop([C(map_id=2, score=0.9, inliers=-1)], 7, loose, known).map_id == 2
    assert select_loop([C(map_id=7, score=0.9, inliers=50)], 7, cfg, {7}) is None  # itself


@pytest.mark.parametrize(
    "field, value", [("loop_sigma_m", 0.0), ("robust_kernel", "tukey"), ("camera_in_base", (0.0, 0.0, 0.0))]
)
def test_bad_configuration_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        PoseGraphConfig(**{field: value}).validate()


# ---- the graph, no ROS -----------------------------------------------------------------------


def test_loop_closures_reduce_the_trajectory_error(short_route):
    closures = recorded_closures(short_route)
    assert len(closures) >= 30
    graph, corrected = _optimise(short_route, closures)
    odometry = _ate(short_route, [f.odometry for f in short_route])
    after = _ate(short_route, corrected)
    assert odometry > 1.5  # the drift is real
    assert after < 0.4 * odometry, (odometry, after)
    assert all(e.weight > 0.25 for e in graph.loop_edges())  # true closures keep their weight


def test_false_closures_are_absorbed_by_the_robust_kernel_not_by_plain_least_squares(short_route):
    planted = false_closures(short_route, 10)  # 10 confident lies beside ~30 true closures
    assert len(planted) == 10
    lied = {q for _, q in planted}
    clean = [c for c in recorded_closures(short_route) if c[1] not in lied]
    closures = clean + [(k, q, camera_rotation(short_route[k], short_route[q])) for k, q in planted]
    _, corrected_clean = _optimise(short_route, clean)
    graph, corrected = _optimise(short_route, closures)
    odometry = _ate(short_route, [f.odometry for f in short_route])
    robust = _ate(short_route, corrected)
    assert robust < _ate(short_route, corrected_clean) + 0.1 < odometry
    weights = {(e.keyframe - 1, e.query - 1): e.weight for e in graph.loop_edges()}
    assert all(weights[pair] < DOWNWEIGHTED for pair in planted), weights
    assert sum(w < DOWNWEIGHTED for w in weights.values()) == len(planted)  # and no true one
    # Without the robust kernel (a Cauchy this wide is least squares) the same closures distort it.
    _, plain = _optimise(short_route, closures, PoseGraphConfig(robust_k=1e6))
    assert _ate(short_route, plain) > 2 * robust


# ---- the node over DDS -----------------------------------------------------------------------

ODOM = "/pg_test/odom"
CANDIDATES = "/pg_test/loop_closures"
PATH = "/structvpr_pose_graph/path"
EDGES = "/structvpr_pose_graph/loop_edges"
T0 = 1_700_000_000.0


class _GraphNode:
    def __init__(self, tmp_path):
        params = write_params(tmp_path / "pg.yaml", {"odom_topic": ODOM, "candidates_topic": CANDIDATES})
        self.log = tmp_path / "pose_graph.log"
        cmd = [sys.executable, "-m", "structvpr_ros.pose_graph_node", "--ros-args", "--params-file", str(params)]
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, cwd=str(REPO))

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _candidates_msg(frame, closure):
    from structvpr_core.geometry import matrix_to_quat
    from structvpr_msgs.msg import LoopClosureCandidates, PlaceCandidate
    from structvpr_ros.candidates_msg import sec_to_stamp

    msg = LoopClosureCandidates(query_id=frame.index + 1)
    msg.header.stamp, msg.header.frame_id = sec_to_stamp(T0 + frame.stamp), "camera_optical"
    if closure is not None:
        k, R = closure
        c = PlaceCandidate(map_id=k + 1, score=0.93, inliers=60, has_relative=True, has_pose=False)
        c.map_stamp = sec_to_stamp(T0 + k * SHORT.frame_period_s)
        q = c.relative.rotation
        q.x, q.y, q.z, q.w = (float(v) for v in matrix_to_quat(R))
        c.relative.translation.z = 1.0  # unit length: the node must not use it
        msg.candidates = [c]
    return msg


def _feed(ros_node, frames, closures, tmp_path):
    """Run the node, publish odometry + candidates for every keyframe, return (path, markers, output)."""
    from nav_msgs.msg import Odometry, Path
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from visualization_msgs.msg import MarkerArray

    from structvpr_msgs.msg import LoopClosureCandidates
    from structvpr_ros.candidates_msg import pose_to_msg, sec_to_stamp

    got = {}
    subs = [
        ros_node.create_subscription(Path, PATH, lambda m: got.__setitem__("path", m), 10),
        ros_node.create_subscription(MarkerArray, EDGES, lambda m: got.__setitem__("edges", m), 10),
    ]
    odom_pub = ros_node.create_publisher(Odometry, ODOM, 200)
    cand_pub = ros_node.create_publisher(
        LoopClosureCandidates, CANDIDATES, QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
    )
    node = _GraphNode(tmp_path)
    try:
        ready = spin_until(
            ros_node,
            lambda: (
                (cand_pub.get_subscription_count() > 0 and odom_pub.get_subscription_count() > 0)
                or node.proc.poll() is not None
            ),
            30,
        )
        assert ready and node.proc.poll() is None, node.output()
        spin_until(ros_node, lambda: False, 0.3)
        by_query = {q: (k, R) for k, q, R in closures}
        for f in frames:
            odom = Odometry()
            odom.header.stamp, odom.header.frame_id = sec_to_stamp(T0 + f.stamp), "odom"
            odom.pose.pose = pose_to_msg(f.odometry)
            odom_pub.publish(odom)
            cand_pub.publish(_candidates_msg(f, by_query.get(f.index)))
            spin_until(ros_node, lambda: False, 0.005)
        done = spin_until(ros_node, lambda: "path" in got and len(got["path"].poses) == len(frames), 20)
        assert done, node.output()[-2000:]
        # The loop edges of the same (last) update: the marker carries the path's header.
        same = spin_until(ros_node, lambda: "edges" in got and got["edges"].markers[0].header == got["path"].header, 10)
        assert same, node.output()[-2000:]
    finally:
        code = node.stop()
        for s in subs:
            ros_node.destroy_subscription(s)
        ros_node.destroy_publisher(odom_pub)
        ros_node.destroy_publisher(cand_pub)
    assert code == 0, node.output()[-2000:]  # SIGTERM ends it cleanly
    return got["path"], got["edges"], node.output()


def _path_poses(path):
    from structvpr_core.geometry import Pose

    return [
        Pose(
            (p.pose.position.x, p.pose.position.y, p.pose.position.z),
            (p.pose.orientation.x, p.pose.orientation.y, p.pose.orientation.z, p.pose.orientation.w),
        )
        for p in path.poses
    ]


def _red_edges(markers, path):
    """The loop edges drawn red (down-weighted), as (keyframe index, query index) pairs."""
    (marker,) = markers.markers
    index = {(p.pose.position.x, p.pose.position.y): i for i, p in enumerate(path.poses)}
    red = set()
    for a, b, colour in zip(marker.points[::2], marker.points[1::2], marker.colors[::2], strict=True):
        if colour.r > colour.g:
            red.add((index[(a.x, a.y)], index[(b.x, b.y)]))
    return red, len(marker.points) // 2


@pytest.mark.ros
def test_node_reduces_the_trajectory_error_of_a_short_loop(ros_node, short_route, tmp_path):
    closures = recorded_closures(short_route)
    t = time.monotonic()
    path, markers, output = _feed(ros_node, short_route, closures, tmp_path)
    stamps = [T0 + f.stamp for f in short_route]
    from structvpr_ros.candidates_msg import stamp_to_sec

    assert [stamp_to_sec(p.header.stamp) for p in path.poses] == pytest.approx(stamps)
    assert path.header.frame_id == "map"
    before = ate_rmse(stamps, [f.pose for f in short_route], stamps, [f.odometry for f in short_route])
    after = ate_rmse(stamps, [f.pose for f in short_route], stamps, _path_poses(path))
    print(f"short loop over DDS: ATE odometry {before:.2f} m -> corrected {after:.2f} m ({time.monotonic() - t:.1f} s)")
    assert after < 0.4 * before
    red, edges = _red_edges(markers, path)
    assert edges == len(closures) and not red
    assert output.count("loop closure: keyframe") == len(closures)


@pytest.mark.ros
def test_node_absorbs_a_planted_false_loop_closure(ros_node, short_route, tmp_path):
    (planted,) = false_closures(short_route, 1)
    k, q = planted
    closures = [c for c in recorded_closures(short_route) if c[1] != q]
    closures.append((k, q, camera_rotation(short_route[k], short_route[q])))  # a confident, verified-looking lie
    path, markers, _ = _feed(ros_node, short_route, closures, tmp_path)
    stamps = [T0 + f.stamp for f in short_route]
    before = ate_rmse(stamps, [f.pose for f in short_route], stamps, [f.odometry for f in short_route])
    after = ate_rmse(stamps, [f.pose for f in short_route], stamps, _path_poses(path))
    _, clean = _optimise(short_route, [c for c in closures if c[1] != q])
    print(f"with a false closure over DDS: ATE odometry {before:.2f} m -> corrected {after:.2f} m")
    assert after < _ate(short_route, clean) + 0.2 < before  # the lie does not blow the trajectory up
    red, _ = _red_edges(markers, path)
    assert red == {planted}  # and it is the one edge drawn as down-weighted
