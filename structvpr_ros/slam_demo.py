"""The SLAM demo: a synthetic route with drifting odometry, loop closures from structvpr, a pose graph.

    structvpr_slam_demo [--out slam_demo_out] [--no-verify]     (what `make slam-demo` runs)

1. draws a synthetic route that drives laps around a block of streets (SYNTHETIC images,
   ground-truth poses known; ``structvpr_core.data.synthetic_route``);
2. starts the structvpr node (mapping mode, geometric verification) and the pose-graph node
   (``structvpr_pose_graph``) with config/slam_demo.yaml, unless ``--external-nodes`` (the
   launch file starts them);
3. publishes per frame the drifting odometry (nav_msgs/Odometry), the camera info and the image,
   and waits for the node's candidates before the next frame (no frame is dropped);
4. then compares with ground truth: absolute trajectory error (RMSE, evo, SE(3)-aligned) of the
   odometry and of the corrected path, loop closures accepted / rejected / false (a closure is
   false when its two keyframes are more than 10 m apart in truth), timings;
5. prints that, writes OUT/result.json and OUT/trajectories.png (top-down: ground truth,
   odometry, corrected, loop closures), and a few debug images of loop closures in OUT/debug/.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from structvpr_core.errors import StructVPRError

from .entry import own_arguments

PROG = "structvpr_slam_demo"
IMAGE_TOPIC = "/slam_demo/camera/image_raw"
CAMERA_INFO_TOPIC = "/slam_demo/camera/camera_info"
ODOM_TOPIC = "/slam_demo/odom"
CANDIDATES_TOPIC = "/structvpr/loop_closures"
DEBUG_IMAGE_TOPIC = "/structvpr/debug_image"
PATH_TOPIC = "/structvpr_pose_graph/path"
EDGES_TOPIC = "/structvpr_pose_graph/loop_edges"
FALSE_LOOP_M = 10.0  # a loop closure between keyframes further apart than this (truth) is false
DEBUG_IMAGES_KEPT = 3


def _config_file(name: str) -> Path:
    """config/<name> of the source tree (editable install, symlink install), else the installed share/."""
    here = Path(__file__).resolve().parents[1] / "config" / name
    if here.is_file():
        return here
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("structvpr_ros")) / "config" / name


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("slam_demo_out"), help="output directory (default slam_demo_out)")
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="no geometric verification: the node publishes unverified candidates and the pose graph uses them",
    )
    p.add_argument("--laps", type=int, default=2, help="laps around the block (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic streets and the odometry noise")
    p.add_argument(
        "--street-length", type=float, default=36.0, help="metres driven along each street, at most 36 (default 36)"
    )
    p.add_argument("--device", default="auto", help="where the structvpr node runs its model: auto, cpu or cuda")
    p.add_argument(
        "--external-nodes",
        action="store_true",
        help="do not start the two nodes (the launch file does); wait for them instead",
    )
    p.add_argument(
        "--params-file", type=Path, default=None, help="parameters of both nodes (default config/slam_demo.yaml)"
    )
    p.add_argument("--frame-timeout", type=float, default=60.0, help="seconds to wait for the node's answer to a frame")
    own = own_arguments(argv)
    args = p.parse_args(own)
    if args.laps < 2:
        p.error("--laps must be >= 2: the second lap revisits the places of the first")
    if not 4.0 <= args.street_length <= 36.0:
        p.error("--street-length must be in [4, 36] metres")
    args.params_file = args.params_file or _config_file("slam_demo.yaml")
    if not args.params_file.is_file():
        p.error(f"--params-file: no such file {args.params_file}")
    return args


# ---- the two nodes as processes --------------------------------------------------------------


def _prepare_env() -> None:
    """The shipped DDS profile, localhost-only discovery, and a domain of its own unless chosen."""
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(_config_file("fastdds_profile.xml")))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(101 + os.getpid() % 100))


def _start_nodes(args, out: Path) -> list[tuple[str, subprocess.Popen, Path]]:
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


def _stop(procs) -> None:
    for _, proc, _ in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for _, proc, _ in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _check_alive(procs) -> None:
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
            _check_alive(procs)
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


def _wait_ready(driver: Driver, procs, timeout: float) -> None:
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


# ---- the run ---------------------------------------------------------------------------------


def _graph_config(args):
    """The pose graph's configuration as the node has it: the params file section + overrides."""
    import yaml

    from .params import typed_parameters
    from .pose_graph import PoseGraphConfig

    data = yaml.safe_load(args.params_file.read_text(encoding="utf-8")) or {}
    section = (data.get("/structvpr_pose_graph") or {}).get("ros__parameters") or {}
    fields = {f.name for f in dataclasses.fields(PoseGraphConfig)}
    values = {k: v for k, v in section.items() if k in fields}
    values["require_verified"] = not args.no_verify
    return typed_parameters(PoseGraphConfig, values)


@dataclass
class Drive:
    """What driving the route collected from the two nodes."""

    stamps: list[float]  # image stamps, one per frame
    answers: list  # LoopClosureCandidates, one per frame
    round_trip_s: list[float]  # image published -> candidates received
    loops: list[tuple[int, int]]  # (keyframe frame index, query frame index) the pose graph accepted
    path: object  # the last nav_msgs/Path
    edges: object  # the last visualization_msgs/MarkerArray
    graph_status: dict  # the pose graph's last /diagnostics values
    debug_images: dict  # stamp -> BGR debug image of a loop closure
    seconds: float


def run(args, rclpy_args: list[str] | None = None) -> dict:
    """Render the route, drive it through the two nodes, evaluate; returns what result.json holds."""
    from tqdm import tqdm

    from structvpr_core.data.synthetic_route import RouteConfig, make_route, render_frame

    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    if (args.out / "map").exists():
        import shutil

        shutil.rmtree(args.out / "map")  # a new mapping session every run
    route = RouteConfig(laps=args.laps, seed=args.seed, street_length_m=args.street_length)
    frames = make_route(route)
    images = [render_frame(f, route) for f in tqdm(frames, desc="rendering the synthetic route", unit="frame")]
    render_s = time.perf_counter() - started
    _prepare_env()
    procs = [] if args.external_nodes else _start_nodes(args, args.out)
    try:
        drive = _drive(args, route, frames, images, procs, rclpy_args)
    finally:
        _stop(procs)
    result = _evaluate(args, route, frames, drive)
    result["timings"]["render_s"] = round(render_s, 2)
    result["timings"]["wall_s"] = round(time.perf_counter() - started, 1)
    from structvpr_core.atomic import atomic_write_json

    atomic_write_json(args.out / "result.json", result)
    return result


def _drive(args, route, frames, images, procs, rclpy_args) -> Drive:
    """Publish odometry, camera info and image frame by frame, each after the node answered the previous one."""
    import rclpy
    from tqdm import tqdm

    from structvpr_core.data.synthetic_route import camera_matrix

    from .candidates_msg import stamp_to_sec
    from .image_conversion import image_to_bgr
    from .pose_graph import select_loop

    node = None
    try:
        rclpy.init(args=rclpy_args)
        node = rclpy.create_node("structvpr_slam_demo")
        driver = Driver(node, camera_matrix(route), route.size)
        print(f"[slam-demo] waiting for the structvpr node and the pose graph (logs in {args.out}) ...", flush=True)
        _wait_ready(driver, procs, timeout=300.0)
        t0 = float(round(time.time()))  # whole seconds: stamps t0 + k·period are exact
        stamps = [t0 + f.stamp for f in frames]
        index_of = {round(t, 3): i for i, t in enumerate(stamps)}
        config = _graph_config(args)
        known: set[int] = set()
        loops, sent = [], {}
        started = time.perf_counter()
        for frame, image, stamp in tqdm(
            list(zip(frames, images, stamps, strict=True)), desc="driving (odometry + camera)", unit="frame"
        ):
            key = round(stamp, 3)
            driver.spin_until(lambda: False, 0.01)
            sent[key] = time.monotonic()
            driver.publish(stamp, frame.odometry, image)
            if not driver.spin_until(lambda key=key: key in driver.answers, args.frame_timeout, procs):
                raise StructVPRError(
                    f"no answer from the structvpr node to frame {frame.index} in {args.frame_timeout:g} s"
                )
            # The pose graph's rule, applied to what it received: which closures it accepted.
            msg = driver.answers[key]
            loop = select_loop(msg.candidates, msg.query_id, config, known)
            known.add(msg.query_id)
            if loop is not None:
                loops.append((index_of[round(stamp_to_sec(loop.map_stamp), 3)], frame.index))
                driver.want_debug.add(key)
        seconds = time.perf_counter() - started
        # The pose graph's last update, its diagnostics and edges, and the debug images asked for.
        n = len(frames)
        if not driver.spin_until(lambda: driver.path is not None and len(driver.path.poses) >= n, 60.0, procs):
            got = 0 if driver.path is None else len(driver.path.poses)
            raise StructVPRError(f"the pose graph published {got} of {n} keyframes")
        driver.spin_until(lambda: driver.graph_status.get("keyframes") == str(n), 5.0)
        # The loop edges of the same (last) update as the path: the marker carries the path's header.
        driver.spin_until(
            lambda: (
                driver.edges is not None
                and driver.edges.markers
                and driver.edges.markers[0].header.stamp == driver.path.header.stamp
            ),
            5.0,
        )
        driver.spin_until(lambda: len(driver.debug_images) >= min(DEBUG_IMAGES_KEPT, len(loops)), 3.0)
        return Drive(
            stamps=stamps,
            answers=[driver.answers[round(t, 3)] for t in stamps],
            round_trip_s=[driver.answer_wall[round(t, 3)] - sent[round(t, 3)] for t in stamps],
            loops=loops,
            path=driver.path,
            edges=driver.edges,
            graph_status=dict(driver.graph_status),
            debug_images={t: image_to_bgr(m) for t, m in driver.debug_images.items()},
            seconds=seconds,
        )
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


def _evaluate(args, route, frames, drive: Drive) -> dict:
    """Ground truth against odometry and the corrected path (evo), loop-closure truth, the plot."""
    from structvpr_core.geometry import Pose

    from .candidates_msg import stamp_to_sec
    from .slam_eval import ate_rmse, plot_route

    out, stamps, loops = args.out, drive.stamps, drive.loops
    truth = [f.pose for f in frames]
    odometry = [f.odometry for f in frames]
    path_stamps = [stamp_to_sec(ps.header.stamp) for ps in drive.path.poses]
    corrected = [
        Pose(
            (ps.pose.position.x, ps.pose.position.y, ps.pose.position.z),
            (ps.pose.orientation.x, ps.pose.orientation.y, ps.pose.orientation.z, ps.pose.orientation.w),
        )
        for ps in drive.path.poses
    ]
    ate, ate_unaligned = {}, {}
    for name, st, poses in (("odometry", stamps, odometry), ("corrected", path_stamps, corrected)):
        ate[name] = round(ate_rmse(stamps, truth, st, poses), 3)
        ate_unaligned[name] = round(ate_rmse(stamps, truth, st, poses, align=False), 3)
    false = {(i, j) for i, j in loops if math.dist(truth[i].position, truth[j].position) > FALSE_LOOP_M}
    downweighted = _downweighted_edges(drive.edges, drive.path)
    how = "with" if not args.no_verify else "without"
    plot = plot_route(
        out / "trajectories.png",
        truth,
        odometry,
        corrected,
        [(corrected[i], corrected[j], (i, j) not in false, (i, j) in downweighted) for i, j in loops],
        title=(
            f"SYNTHETIC route, {args.laps} laps, {how} geometric verification: "
            f"ATE odometry {ate['odometry']:.2f} m -> corrected {ate['corrected']:.2f} m"
        ),
    )
    index_of = {round(t, 3): i for i, t in enumerate(stamps)}
    debug_names = {t: f"debug/loop_{index_of[t]:04d}.png" for t in drive.debug_images}
    if drive.debug_images:
        import cv2

        (out / "debug").mkdir(exist_ok=True)
        for t, img in drive.debug_images.items():
            cv2.imwrite(str(out / debug_names[t]), img)

    def p50(values) -> float:
        return round(float(np.percentile(values, 50)), 2) if len(values) else float("nan")

    def graph_value(key: str):
        value = drive.graph_status.get(key)
        return None if value is None else float(value)

    return {
        "synthetic": True,
        "route": {
            "streets": route.streets,
            "laps": args.laps,
            "keyframes": len(frames),
            "length_m": round(route.streets * route.street_length_m * args.laps, 1),
            "seed": args.seed,
            "image_size": list(route.size),
        },
        "geometric_verification": not args.no_verify,
        "ate_rmse_m": ate,
        "ate_rmse_m_unaligned": ate_unaligned,
        "ate_method": "evo APE, translation part, RMSE; stamps associated, SE(3) Umeyama alignment without scale",
        "loop_closures": {
            "accepted": len(loops),
            "rejected": sum(1 for m in drive.answers if m.candidates) - len(loops),
            "false": len(false),
            "true": len(loops) - len(false),
            "downweighted_by_kernel": len(downweighted),
            "false_downweighted": len(false & downweighted),
            "false_means": f"keyframes more than {FALSE_LOOP_M:g} m apart in ground truth",
            "accepted_by_pose_graph_node": int(graph_value("loops_accepted") or 0),
        },
        "timings": {
            "drive_s": round(drive.seconds, 2),
            "frame_round_trip_ms_p50": p50([v * 1e3 for v in drive.round_trip_s]),
            "extract_ms_p50": p50([m.extract_ms for m in drive.answers]),
            "search_ms_p50": p50([m.search_ms for m in drive.answers]),
            "verify_ms_p50": p50([m.verify_ms for m in drive.answers]),
            "pose_graph_update_ms_p50": graph_value("update_ms_p50"),
            "pose_graph_loop_update_ms_p50": graph_value("loop_update_ms_p50"),
            "pose_graph_loop_update_ms_max": graph_value("loop_update_ms_max"),
        },
        "plot": plot.name,
        "debug_images": sorted(debug_names.values()),
    }


def _downweighted_edges(edges, path) -> set[tuple[int, int]]:
    """(keyframe index, query index) of the loop edges the pose graph drew as down-weighted (red):
    the marker's points are the corrected positions of the two keyframes, as in the path."""
    if edges is None or not edges.markers or edges.markers[0].header.stamp != path.header.stamp:
        return set()  # no edges of the path's update arrived
    index = {(p.pose.position.x, p.pose.position.y, p.pose.position.z): i for i, p in enumerate(path.poses)}
    marker = edges.markers[0]
    out = set()
    for a, b, colour in zip(marker.points[::2], marker.points[1::2], marker.colors[::2], strict=True):
        if colour.r > colour.g:
            out.add((index[(a.x, a.y, a.z)], index[(b.x, b.y, b.z)]))
    return out


def _print(result: dict, out: Path) -> None:
    ate, lc, tm = result["ate_rmse_m"], result["loop_closures"], result["timings"]
    how = "with" if result["geometric_verification"] else "without"
    print(
        f"SLAM demo (SYNTHETIC route: {result['route']['keyframes']} keyframes, {result['route']['length_m']:g} m, "
        f"{how} geometric verification)\n"
        f"  ATE RMSE (evo, aligned): odometry {ate['odometry']:.2f} m -> corrected {ate['corrected']:.2f} m\n"
        f"  loop closures: {lc['accepted']} accepted, {lc['false']} of them false; the robust kernel down-weighted "
        f"{lc['downweighted_by_kernel']} ({lc['false_downweighted']} false); {lc['rejected']} queries rejected\n"
        f"  pose-graph update: {tm['pose_graph_update_ms_p50']} ms p50, with a loop closure "
        f"{tm['pose_graph_loop_update_ms_p50']} ms p50 ({tm['pose_graph_loop_update_ms_max']} ms max)\n"
        f"  structvpr per frame: extract {tm['extract_ms_p50']} ms, verify {tm['verify_ms_p50']} ms (p50); "
        f"wall {tm['wall_s']} s\n"
        f"  wrote {out / 'result.json'}, {out / result['plot']}"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    try:
        result = run(args, [PROG, *argv])
    except StructVPRError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    _print(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
