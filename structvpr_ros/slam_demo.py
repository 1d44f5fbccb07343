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
import sys
import time
from pathlib import Path

from structvpr_core.errors import StructVPRError

from .entry import own_arguments
from .slam_driver import (
    DEBUG_IMAGES_KEPT,
    Driver,
    config_file,
    prepare_env,
    start_nodes,
    stop_nodes,
    wait_ready,
)
from .slam_score import Drive, evaluate

PROG = "structvpr_slam_demo"


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
    args.params_file = args.params_file or config_file("slam_demo.yaml")
    if not args.params_file.is_file():
        p.error(f"--params-file: no such file {args.params_file}")
    return args


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
    prepare_env()
    procs = [] if args.external_nodes else start_nodes(args, args.out)
    try:
        drive = _drive(args, route, frames, images, procs, rclpy_args)
    finally:
        stop_nodes(procs)
    result = evaluate(args, route, frames, drive)
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
        wait_ready(driver, procs, timeout=300.0)
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
