"""Scoring the SLAM demo against ground truth: trajectory error, loop-closure truth, timings, the plot."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FALSE_LOOP_M = 10.0  # a loop closure between keyframes further apart than this (truth) is false


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


def evaluate(args, route, frames, drive: Drive) -> dict:
    """Ground truth against odometry and the corrected path (evo), loop-closure truth, the plot."""

    from .candidates_msg import pose_from_msg, stamp_to_sec
    from .slam_eval import ate_rmse, plot_route

    out, stamps, loops = args.out, drive.stamps, drive.loops
    truth = [f.pose for f in frames]
    odometry = [f.odometry for f in frames]
    path_stamps = [stamp_to_sec(ps.header.stamp) for ps in drive.path.poses]
    corrected = [pose_from_msg(ps.pose) for ps in drive.path.poses]
    ate, ate_unaligned = {}, {}
    for name, st, poses in (("odometry", stamps, odometry), ("corrected", path_stamps, corrected)):
        ate[name] = round(ate_rmse(stamps, truth, st, poses), 3)
        ate_unaligned[name] = round(ate_rmse(stamps, truth, st, poses, align=False), 3)
    false = {(i, j) for i, j in loops if math.dist(truth[i].position, truth[j].position) > FALSE_LOOP_M}
    downweighted = downweighted_edges(drive.edges, drive.path)
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


def downweighted_edges(edges, path) -> set[tuple[int, int]]:
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
