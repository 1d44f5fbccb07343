"""The SLAM demo's plumbing over DDS: its topics, the two nodes as processes, and the driver node.

``slam_demo`` uses these to publish a route frame by frame and collect what the structvpr node
and the pose graph answer; the scoring of what came back is ``slam_score``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from structvpr_core.errors import StructVPRError

IMAGE_TOPIC = "/slam_demo/camera/image_raw"
CAMERA_INFO_TOPIC = "/slam_demo/camera/camera_info"
ODOM_TOPIC = "/slam_demo/odom"
CANDIDATES_TOPIC = "/structvpr/loop_closures"
DEBUG_IMAGE_TOPIC = "/structvpr/debug_image"
PATH_TOPIC = "/structvpr_pose_graph/path"
EDGES_TOPIC = "/structvpr_pose_graph/loop_edges"
DEBUG_IMAGES_KEPT = 3


def config_file(name: str) -> Path:
    """config/<name> of the source tree (editable install, symlink install), else the installed share/."""
    here = Path(__file__).resolve().parents[1] / "config" / name
    if here.is_file():
        return here
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("structvpr_ros")) / "config" / name


# ---- the two nodes as processes --------------------------------------------------------------


def prepare_env() -> None:
    """The shipped DDS profile, localhost-only discovery, and a domain of its own unless chosen."""
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(config_file("fastdds_profile.xml")))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(101 + os.getpid() % 100))


def start_nodes(args, out: Path) -> list[tuple[str, subprocess.Popen, Path]]:
    verify = "false" if args.no_verify else "true"
    commands = {
        "structvpr": [
            "structvpr_ros.vpr_node",
            "-p",
            f"map_path:={out / 'map'}",
            "-p",
            f"verify:={verify}",
            "-p",
            f"device:={args.device}",
        ],
        "pose_graph": ["structvpr_ros.pose_graph_node", "-p", f"require_verified:={verify}"],
    }
    procs = []
    for name, (module, *overrides) in commands.items():
        log = out / f"{name}.log"
        cmd = [sys.executable, "-m", module, "--ros-args", "--params-file", str(args.params_file), *overrides]
        procs.append((name, subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT), log))
    return procs


def stop_nodes(procs) -> None:
    for _, proc, _ in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for _, proc, _ in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def check_alive(procs) -> None:
    for name, proc, log in procs:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.is_file() else []
            raise StructVPRError(f"the {name} node stopped (exit {proc.returncode}): {' '.join(tail)} (log: {log})")


# ---- the driver node -------------------------------------------------------------------------


class Driver:
    """Publishes the route frame by frame and collects what the two nodes answer."""

    def __init__(self, node, K: np.ndarray, size: tuple[int, int]):
        from diagnostic_msgs.msg import DiagnosticArray
        from nav_msgs.msg import Odometry, Path
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image
        from visualization_msgs.msg import MarkerArray

        from structvpr_msgs.msg import LoopClosureCandidates

        self.node = node
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = node.create_publisher(Image, IMAGE_TOPIC, reliable)
        self.info_pub = node.create_publisher(CameraInfo, CAMERA_INFO_TOPIC, reliable)
        self.odom_pub = node.create_publisher(Odometry, ODOM_TOPIC, 50)
        self.answers: dict[float, object] = {}  # image stamp -> LoopClosureCandidates
        self.answer_wall: dict[float, float] = {}
        self.path = None
        self.edges = None
        self.graph_status: dict[str, str] = {}
        self.debug_images: dict[float, object] = {}
        self.want_debug: set[float] = set()
        node.create_subscription(LoopClosureCandidates, CANDIDATES_TOPIC, self._on_answer, 1000)
        node.create_subscription(Path, PATH_TOPIC, lambda m: setattr(self, "path", m), 10)
        node.create_subscription(MarkerArray, EDGES_TOPIC, lambda m: setattr(self, "edges", m), 10)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        node.create_subscription(Image, DEBUG_IMAGE_TOPIC, self._on_debug, 10)
        self.info = CameraInfo(width=size[0], height=size[1], distortion_model="plumb_bob")
        self.info.k = [float(v) for v in K.ravel()]
        self.info.p = [K[0, 0], 0.0, K[0, 2], 0.0, 0.0, K[1, 1], K[1, 2], 0.0, 0.0, 0.0, 1.0, 0.0]
        self.info.d = [0.0] * 5
        self.info.header.frame_id = "camera_optical"

    def _on_answer(self, msg) -> None:
        from .candidates_msg import stamp_to_sec

        t = round(stamp_to_sec(msg.header.stamp), 3)
        self.answers[t] = msg
        self.answer_wall[t] = time.monotonic()

    def _on_debug(self, msg) -> None:
        from .candidates_msg import stamp_to_sec

        t = round(stamp_to_sec(msg.header.stamp), 3)
        if t in self.want_debug and len(self.debug_images) < DEBUG_IMAGES_KEPT:
            self.debug_images[t] = msg

    def _on_diagnostics(self, msg) -> None:
        for s in msg.status:
            if s.name.endswith("pose graph"):
                self.graph_status = {kv.key: kv.value for kv in s.values}

    def spin_until(self, done, timeout: float, procs=()) -> bool:
        import rclpy

        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                return False
            check_alive(procs)
            rclpy.spin_once(self.node, timeout_sec=0.02)
        return True

    def publish(self, stamp: float, odometry, image_bgr) -> None:
        from nav_msgs.msg import Odometry

        from .candidates_msg import pose_to_msg, sec_to_stamp
        from .image_conversion import bgr_to_image

        ros_stamp = sec_to_stamp(stamp)
        odom = Odometry(child_frame_id="base_link")
        odom.header.stamp, odom.header.frame_id = ros_stamp, "odom"
        odom.pose.pose = pose_to_msg(odometry)
        self.odom_pub.publish(odom)
        self.info.header.stamp = ros_stamp
        self.info_pub.publish(self.info)
        image = bgr_to_image(image_bgr)
        image.header.stamp, image.header.frame_id = ros_stamp, "camera_optical"
        self.image_pub.publish(image)


def wait_ready(driver: Driver, procs, timeout: float) -> None:
    node = driver.node

    def ready() -> bool:
        return (
            node.count_subscribers(IMAGE_TOPIC) >= 1
            and node.count_subscribers(ODOM_TOPIC) >= 2  # the structvpr node (keyframe poses) and the pose graph
            and node.count_subscribers(CANDIDATES_TOPIC) >= 2  # the pose graph and this driver
            and node.count_publishers(PATH_TOPIC) >= 1
        )

    if not driver.spin_until(ready, timeout, procs):
        raise StructVPRError(
            f"the structvpr node and the pose graph did not come up within {timeout:.0f} s "
            f"(subscribers of {IMAGE_TOPIC}: {node.count_subscribers(IMAGE_TOPIC)}, "
            f"of {CANDIDATES_TOPIC}: {node.count_subscribers(CANDIDATES_TOPIC)})"
        )
    driver.spin_until(lambda: False, 0.5)  # let discovery settle for the other endpoints too
