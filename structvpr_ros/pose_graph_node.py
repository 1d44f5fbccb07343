"""The ``structvpr_pose_graph`` node: an example SLAM back end closing loops with structvpr's candidates.

Odometry and loop-closure candidates in, a corrected trajectory out. The structvpr node must run
in mapping mode (every keyframe it publishes gets a map id, ``query_id``), with ``verify: true``
and a ``camera_info_topic`` so that candidates carry inliers and the relative rotation.

Per LoopClosureCandidates message (one per keyframe), in ``_add_keyframe``:

1. the keyframe's odometry pose: the odometry interpolated at the image stamp (messages wait in
   a queue until odometry reaches their stamp);
2. a pose-graph variable keyed by the keyframe's map id, linked to the previous keyframe by an
   odometry factor;
3. the best candidate that passes ``min_score`` / ``min_inliers`` / ``require_verified`` and
   whose keyframe is in the graph (``pose_graph.select_loop``) becomes a loop-closure factor:
   co-location with the verified rotation, under a robust (Cauchy or Huber) noise model; see
   ``pose_graph`` for why;
4. iSAM2 update, then the corrected path and the loop edges are published.

Topics:   sub  <odom_topic> (nav_msgs/Odometry), <candidates_topic> (structvpr_msgs/LoopClosureCandidates)
          pub  ~/path (nav_msgs/Path, corrected keyframe poses in map_frame),
               ~/loop_edges (visualization_msgs/MarkerArray: green = trusted, red = down-weighted
               by the robust kernel), /diagnostics (counts and update times)
Run:      structvpr_pose_graph --ros-args --params-file config/pose_graph.yaml
All parameters are read-only (they shape the graph from its first keyframe).
"""

from __future__ import annotations

import dataclasses
import sys
from collections import deque
from dataclasses import dataclass

import numpy as np
import rclpy
from rclpy.node import Node

from structvpr_core.errors import ConfigError
from structvpr_core.geometry import Pose, interpolate_pose, quat_to_matrix

from .candidates_msg import pose_from_msg, pose_to_msg, sec_to_stamp, stamp_to_sec
from .entry import own_arguments, parameter_help, run_with_rclpy
from .params import typed_parameters
from .pose_graph import DOWNWEIGHTED, PoseGraph, PoseGraphConfig, loop_measurement, select_loop, to_pose3

NODE_NAME = "structvpr_pose_graph"


@dataclass(frozen=True)
class NodeSettings:
    """The node's own parameters (the graph's are ``PoseGraphConfig``'s)."""

    odom_topic: str = "/odom"
    candidates_topic: str = "/structvpr/loop_closures"
    map_frame: str = "map"
    odometry_buffer_s: float = 60.0
    diagnostics_period_s: float = 1.0

    def validate(self) -> None:
        for key in ("odom_topic", "candidates_topic", "map_frame"):
            value = getattr(self, key)
            if not value.strip() or " " in value:
                raise ConfigError(f"{key}: must be a topic or frame name, got {value!r}")
        for key in ("odometry_buffer_s", "diagnostics_period_s"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"{key}: must be > 0, got {getattr(self, key)!r}")


DESCRIPTIONS = {
    "odom_topic": "nav_msgs/Odometry of the robot (its pose in the odometry frame).",
    "candidates_topic": "structvpr_msgs/LoopClosureCandidates of the structvpr node (mapping mode).",
    "map_frame": "frame_id of the published path and loop edges.",
    "odometry_buffer_s": "How much odometry history is kept to interpolate keyframe poses (seconds).",
    "diagnostics_period_s": "Period of /diagnostics messages in seconds.",
    "odometry_sigma_m_per_m": "Odometry factor: translation sigma per metre travelled between keyframes.",
    "odometry_sigma_deg_per_m": "Odometry factor: rotation sigma (degrees) per metre travelled.",
    "odometry_min_sigma_m": "Odometry factor: least translation sigma (metres).",
    "odometry_min_sigma_deg": "Odometry factor: least rotation sigma (degrees).",
    "loop_sigma_m": "Loop closure: translation sigma of the co-location constraint (how far apart two views "
    "of one place may be).",
    "loop_sigma_deg_verified": "Loop closure: rotation sigma when the candidate carries the verified rotation.",
    "loop_sigma_deg_unverified": "Loop closure: rotation sigma without it (same heading assumed).",
    "robust_kernel": "Robust noise model of loop closures: cauchy or huber.",
    "robust_k": "Robust kernel parameter, in sigmas of the whole 6-d residual.",
    "min_score": "Candidates with a lower descriptor similarity are not used.",
    "min_inliers": "Verified candidates with fewer inliers are not used.",
    "require_verified": "Use only geometrically verified candidates (inliers >= 0).",
    "camera_in_base": "The camera's optical frame in the robot's base frame: [x, y, z, qx, qy, qz, qw].",
    "loop_iterations": "Extra iSAM2 iterations after a loop closure.",
}
_SETTINGS = tuple(f.name for f in dataclasses.fields(NodeSettings))
_GRAPH = tuple(f.name for f in dataclasses.fields(PoseGraphConfig))


def declare_and_read(node) -> tuple[NodeSettings, PoseGraphConfig]:
    """Declare every parameter (read-only) and return the validated values; ConfigError names a bad one."""
    from rcl_interfaces.msg import ParameterDescriptor

    defaults = {**dataclasses.asdict(NodeSettings()), **dataclasses.asdict(PoseGraphConfig())}
    values = {}
    for name, default in defaults.items():
        descriptor = ParameterDescriptor(description=DESCRIPTIONS[name], dynamic_typing=True, read_only=True)
        default = list(default) if isinstance(default, tuple) else default
        values[name] = node.declare_parameter(name, default, descriptor).value
    settings = typed_parameters(NodeSettings, {k: values[k] for k in _SETTINGS})
    config = typed_parameters(PoseGraphConfig, {k: values[k] for k in _GRAPH})
    return settings, config


class PoseGraphNode(Node):
    def __init__(self, **node_kwargs) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self.settings, config = declare_and_read(self)  # ConfigError -> the node refuses to start
        self.graph = PoseGraph(config)
        self._odometry: deque = deque()  # (stamp, Pose), oldest first
        self._waiting: deque = deque()  # candidate messages waiting for odometry to reach their stamp
        self._counts = {"keyframes": 0, "loops_accepted": 0, "queries_rejected": 0}
        self._update_ms: list[float] = []
        self._loop_update_ms: list[float] = []
        self._warned_localization = False

        from diagnostic_msgs.msg import DiagnosticArray
        from nav_msgs.msg import Odometry, Path
        from visualization_msgs.msg import MarkerArray

        from structvpr_msgs.msg import LoopClosureCandidates

        s = self.settings
        self._path_pub = self.create_publisher(Path, "~/path", 10)
        self._edges_pub = self.create_publisher(MarkerArray, "~/loop_edges", 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(Odometry, s.odom_topic, self._on_odometry, 200)
        self.create_subscription(LoopClosureCandidates, s.candidates_topic, self._on_candidates, 100)
        self.create_timer(s.diagnostics_period_s, self._publish_diagnostics)
        self.get_logger().info(
            f"ready: {self.resolve_topic_name(s.odom_topic)} + {self.resolve_topic_name(s.candidates_topic)} "
            f"-> {self._path_pub.topic_name}, {self._edges_pub.topic_name}"
        )

    # ---- input ------------------------------------------------------------------------------

    def _on_odometry(self, msg) -> None:
        t = stamp_to_sec(msg.header.stamp)
        if self._odometry and t < self._odometry[-1][0]:
            self._odometry.clear()  # time went backwards (a bag restarted)
        self._odometry.append((t, pose_from_msg(msg.pose.pose)))
        while self._odometry[0][0] < t - self.settings.odometry_buffer_s:
            self._odometry.popleft()
        self._process_waiting()

    def _on_candidates(self, msg) -> None:
        if msg.query_id == 0:  # localization mode: the frame is not a keyframe of this session's map
            if not self._warned_localization:
                self.get_logger().warning("candidates without query_id: run the structvpr node in mapping mode")
                self._warned_localization = True
            return
        self._waiting.append(msg)
        self._process_waiting()

    def _process_waiting(self) -> None:
        while self._waiting and self._odometry:
            msg = self._waiting[0]
            t = stamp_to_sec(msg.header.stamp)
            if t > self._odometry[-1][0]:
                return  # odometry has not reached this keyframe yet
            self._waiting.popleft()
            stamps = [s for s, _ in self._odometry]
            pose = interpolate_pose(stamps, [p for _, p in self._odometry], t)
            if pose is None:
                self.get_logger().warning(f"no odometry around keyframe {msg.query_id} at {t:.3f}: skipped")
                continue
            self._add_keyframe(msg, t, pose)

    # ---- the graph --------------------------------------------------------------------------

    def _add_keyframe(self, msg, stamp: float, odometry: Pose) -> None:
        graph = self.graph
        key = int(msg.query_id)
        if key in graph:  # the structvpr node restarted on a map it had not saved: ids repeat
            self.get_logger().warning(f"keyframe {key} is already in the graph: skipped (restart both nodes)")
            return
        graph.add_keyframe(key, stamp, to_pose3(odometry))
        self._counts["keyframes"] += 1
        loop = select_loop(msg.candidates, key, graph.config, graph)
        if loop is not None:
            rotation = quat_to_matrix(_quat(loop.relative.rotation)) if loop.has_relative else None
            measured = loop_measurement(rotation, graph.config.camera_in_base)
            graph.add_loop(int(loop.map_id), key, measured, verified_rotation=rotation is not None)
            self._counts["loops_accepted"] += 1
        elif msg.candidates:
            self._counts["queries_rejected"] += 1
        ms = graph.update()
        (self._loop_update_ms if loop is not None else self._update_ms).append(ms)
        if loop is not None:
            self.get_logger().info(
                f"loop closure: keyframe {key} ~ {loop.map_id} (score {loop.score:.2f}, inliers {loop.inliers}), "
                f"update {ms:.1f} ms"
            )
        self._publish(msg.header.stamp)

    # ---- output -----------------------------------------------------------------------------

    def _publish(self, stamp) -> None:
        from geometry_msgs.msg import Point, PoseStamped
        from nav_msgs.msg import Path
        from std_msgs.msg import ColorRGBA
        from visualization_msgs.msg import Marker, MarkerArray

        frame = self.settings.map_frame
        path = Path()
        path.header.frame_id, path.header.stamp = frame, stamp
        positions = {}
        for key, t, pose in self.graph.poses():
            ps = PoseStamped()
            ps.header.frame_id, ps.header.stamp = frame, sec_to_stamp(t)
            ps.pose = pose_to_msg(pose)
            path.poses.append(ps)
            positions[key] = pose.position
        self._path_pub.publish(path)

        edges = Marker()
        edges.header = path.header
        edges.ns, edges.id = "loop_closures", 0
        edges.type, edges.action = Marker.LINE_LIST, Marker.ADD
        edges.pose.orientation.w = 1.0
        edges.scale.x = 0.15
        edges.color = ColorRGBA(r=0.1, g=0.8, b=0.2, a=1.0)
        trusted, downweighted = ColorRGBA(r=0.1, g=0.8, b=0.2, a=1.0), ColorRGBA(r=0.9, g=0.1, b=0.1, a=1.0)
        for edge in self.graph.loop_edges():
            colour = trusted if edge.weight >= DOWNWEIGHTED else downweighted
            for key in (edge.keyframe, edge.query):
                x, y, z = positions[key]
                edges.points.append(Point(x=x, y=y, z=z))
                edges.colors.append(colour)
        self._edges_pub.publish(MarkerArray(markers=[edges]))

    def _publish_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        edges = self.graph.loop_edges()
        values = {
            **self._counts,
            "loops_downweighted": sum(e.weight < DOWNWEIGHTED for e in edges),
            "waiting_for_odometry": len(self._waiting),
        }
        for name, times in (("update_ms", self._update_ms), ("loop_update_ms", self._loop_update_ms)):
            if times:
                values[f"{name}_p50"] = f"{np.percentile(times, 50):.2f}"
                values[f"{name}_max"] = f"{max(times):.2f}"
        status = DiagnosticStatus(
            name=f"{self.get_fully_qualified_name()}: pose graph",
            level=DiagnosticStatus.OK,
            message=f"{self._counts['keyframes']} keyframes, {self._counts['loops_accepted']} loop closures",
        )
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)


def _quat(q) -> tuple[float, float, float, float]:
    return (q.x, q.y, q.z, q.w)


def print_help() -> None:
    defaults = {**dataclasses.asdict(NodeSettings()), **dataclasses.asdict(PoseGraphConfig())}
    described = {name: (defaults[name], text) for name, text in DESCRIPTIONS.items()}
    print(parameter_help(__doc__, "config/pose_graph.yaml", described))


def _run_node() -> None:
    node = PoseGraphNode()
    try:
        rclpy.spin(node)
    finally:
        node.destroy_node()


def main(args: list[str] | None = None) -> int:
    argv = sys.argv[1:] if args is None else list(args)
    own = own_arguments(argv)
    if "-h" in own or "--help" in own:
        print_help()
        return 0
    return run_with_rclpy(NODE_NAME, args, _run_node)


if __name__ == "__main__":
    sys.exit(main())
