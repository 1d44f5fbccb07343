"""The SLAM example's pieces that need no DDS: the synthetic route, the ATE with evo, the shipped
params files, the launch file (by its syntax tree: no registry ships the launch system) and the
RViz config; plus the pose-graph node refusing a bad parameter. All data here is SYNTHETIC.
"""

from __future__ import annotations

import ast
import dataclasses
import itertools
import math
import subprocess
import sys

import numpy as np
import pytest
import yaml
from ros_helpers import REPO, write_params

from structvpr_core.data.synthetic_route import RouteConfig, make_route, render_frame, yaw_of
from structvpr_core.geometry import Pose
from structvpr_ros import slam_driver
from structvpr_ros.params import params_from_dict, typed_parameters
from structvpr_ros.pose_graph import PoseGraphConfig
from structvpr_ros.slam_eval import ate_rmse, plot_route

# ---- the synthetic route ---------------------------------------------------------------------


def test_route_revisits_its_places_and_its_odometry_drifts():
    cfg = RouteConfig()
    frames = make_route(cfg)
    assert len(frames) == cfg.laps * cfg.streets * round(cfg.street_length_m / cfg.step_m)
    assert [f.index for f in frames] == list(range(len(frames)))
    assert np.allclose(np.diff([f.stamp for f in frames]), cfg.frame_period_s)
    first = np.array([f.pose.position for f in frames if f.lap == 0])
    for f in frames:
        if f.lap == 1:  # every place of the second lap was seen on the first, from within a few metres
            assert np.linalg.norm(first - f.pose.position, axis=1).min() < 3.0
    # Consecutive true poses are a step apart (2 m along a street, a corner in between).
    steps = [math.dist(a.pose.position, b.pose.position) for a, b in itertools.pairwise(frames)]
    assert max(steps) < 3.0 and np.median(steps) == pytest.approx(cfg.step_m)
    # Odometry starts at the truth and drifts: heading and position errors grow along the route.
    assert frames[0].odometry == frames[0].pose
    heading = [abs(math.remainder(yaw_of(f.odometry) - yaw_of(f.pose), 2 * math.pi)) for f in frames]
    assert math.degrees(heading[-1]) > 15 and heading[-1] > heading[len(frames) // 2] > heading[10]
    assert math.dist(frames[-1].odometry.position, frames[-1].pose.position) > 5.0
    assert make_route(cfg) == frames  # deterministic


def test_route_frames_render_and_a_revisit_looks_like_its_place():
    cfg = RouteConfig(street_length_m=10.0)
    frames = make_route(cfg)
    img = render_frame(frames[0], cfg)
    assert img.shape == (cfg.size[1], cfg.size[0], 3) and img.dtype == np.uint8 and img.std() > 20
    assert np.array_equal(render_frame(frames[0], cfg), img)
    with pytest.raises(ValueError):
        make_route(RouteConfig(street_length_m=50.0))


# ---- ATE with evo --------------------------------------------------------------------------


def _square(n=40, side=10.0):
    poses = []
    for i in range(n):
        s = 4 * side * i / n
        k, r = divmod(s, side)
        x, y = [(r, 0), (side, r), (side - r, side), (0, side - r)][int(k)]
        yaw = k * math.pi / 2
        poses.append(Pose((x, y, 0.0), (0, 0, math.sin(yaw / 2), math.cos(yaw / 2))))
    return poses


def test_ate_is_evo_aligned_rmse():
    truth = _square()
    stamps = [float(i) for i in range(len(truth))]
    assert ate_rmse(stamps, truth, stamps, truth) == pytest.approx(0, abs=1e-9)
    # A rigid motion of the whole trajectory: zero once aligned, not before.
    c, s = math.cos(0.3), math.sin(0.3)
    moved = [
        Pose((c * p.position[0] - s * p.position[1] + 5, s * p.position[0] + c * p.position[1] - 2, 1.0)) for p in truth
    ]
    assert ate_rmse(stamps, truth, stamps, moved) == pytest.approx(0, abs=1e-6)
    assert ate_rmse(stamps, truth, stamps, moved, align=False) > 3
    # A 1 m offset of every other pose sideways: RMSE of the residuals after the best alignment.
    wobble = [Pose((p.position[0], p.position[1] + (i % 2), 0.0)) for i, p in enumerate(truth)]
    assert ate_rmse(stamps, truth, stamps, wobble) == pytest.approx(0.5, abs=1e-6)
    # Stamps are associated: the estimate may cover part of the route only.
    assert ate_rmse(stamps, truth, stamps[::2], truth[::2]) == pytest.approx(0, abs=1e-9)


def test_plot_route_writes_a_png(tmp_path):
    truth = _square()
    path = plot_route(
        tmp_path / "t.png",
        truth,
        truth,
        truth,
        [(truth[0], truth[20], True, False), (truth[1], truth[30], False, True)],
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- params files, launch file, RViz config --------------------------------------------------


def test_shipped_pose_graph_params_file_is_complete_and_valid():
    pytest.importorskip("rclpy")
    from structvpr_ros.pose_graph_node import DESCRIPTIONS, NodeSettings

    values = yaml.safe_load((REPO / "config" / "pose_graph.yaml").read_text())["/**"]["ros__parameters"]
    defaults = {**dataclasses.asdict(NodeSettings()), **dataclasses.asdict(PoseGraphConfig())}
    assert set(values) == set(defaults) == set(DESCRIPTIONS)
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()} == defaults
    text = (REPO / "config" / "pose_graph.yaml").read_text()
    for name in defaults:
        assert f"\n    {name}:" in text


def test_slam_demo_params_are_valid_for_both_nodes(tmp_path):
    pytest.importorskip("rclpy")
    from structvpr_ros.pose_graph_node import DESCRIPTIONS, NodeSettings

    data = yaml.safe_load((REPO / "config" / "slam_demo.yaml").read_text())
    vpr = params_from_dict({**data["/structvpr"]["ros__parameters"], "map_path": str(tmp_path / "map")})
    assert (vpr.mode, vpr.verify, vpr.image_topic) == ("mapping", True, slam_driver.IMAGE_TOPIC)
    assert (vpr.camera_info_topic, vpr.pose_topic) == (slam_driver.CAMERA_INFO_TOPIC, slam_driver.ODOM_TOPIC)
    graph = data["/structvpr_pose_graph"]["ros__parameters"]
    settings = typed_parameters(NodeSettings, {k: v for k, v in graph.items() if k in DESCRIPTIONS})
    assert (settings.odom_topic, settings.candidates_topic) == (slam_driver.ODOM_TOPIC, slam_driver.CANDIDATES_TOPIC)


def _calls(tree, name):
    return [c for c in ast.walk(tree) if isinstance(c, ast.Call) and getattr(c.func, "id", "") == name]


def test_slam_demo_launch_file_declares_its_arguments_and_starts_the_three_executables():
    path = REPO / "launch" / "slam_demo.launch.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    compile(tree, str(path), "exec")
    assert [c.args[0].value for c in _calls(tree, "DeclareLaunchArgument")] == ["out", "verify", "rviz", "device"]
    executables = [
        kw.value.value
        for call in _calls(tree, "Node")
        for kw in call.keywords
        if kw.arg == "executable" and isinstance(kw.value, ast.Constant)
    ]
    assert executables == ["structvpr_slam_demo", "structvpr_node", "structvpr_pose_graph", "rviz2"]
    text = path.read_text()
    for needle in (
        "slam_demo.yaml",
        "slam_demo.rviz",
        "--external-nodes",
        "OnProcessExit",
        "FASTDDS_DEFAULT_PROFILES_FILE",
    ):
        assert needle in text
    # Every executable it names is a console script of the package (setup.py).
    setup = (REPO / "setup.py").read_text()
    for exe in executables[:3]:
        assert f'"{exe} = structvpr_' in setup


def test_rviz_config_shows_the_demo_topics_in_the_map_frame():
    config = yaml.safe_load((REPO / "config" / "slam_demo.rviz").read_text())
    manager = config["Visualization Manager"]
    topics = {d["Class"].split("/")[-1] + ":" + d["Topic"]["Value"] for d in manager["Displays"] if "Topic" in d}
    assert topics == {
        f"Path:{slam_driver.PATH_TOPIC}",
        f"MarkerArray:{slam_driver.EDGES_TOPIC}",
        f"Image:{slam_driver.IMAGE_TOPIC}",
        f"Image:{slam_driver.DEBUG_IMAGE_TOPIC}",
    }
    graph = yaml.safe_load((REPO / "config" / "slam_demo.yaml").read_text())["/structvpr_pose_graph"]
    assert manager["Global Options"]["Fixed Frame"] == graph["ros__parameters"]["map_frame"]


@pytest.mark.ros
@pytest.mark.parametrize(
    "override, name", [("loop_sigma_m:=-1.0", "loop_sigma_m"), ("robust_kernel:=l2", "robust_kernel")]
)
def test_pose_graph_node_refuses_a_bad_parameter(tmp_path, override, name):
    pytest.importorskip("rclpy")
    params = write_params(tmp_path / "p.yaml", {"odom_topic": "/odom"})
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "structvpr_ros.pose_graph_node",
            "--ros-args",
            "--params-file",
            str(params),
            "-p",
            override,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(REPO),
    )
    assert r.returncode == 1
    assert f"structvpr_pose_graph: error: parameter '{name}'" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.ros
def test_slam_demo_end_to_end_on_a_short_route(tmp_path):
    """structvpr_slam_demo with its two nodes over DDS on a short route (4 streets of 10 m, two laps):
    result.json, the plot and the debug images of loop closures are written."""
    import json

    data = yaml.safe_load((REPO / "config" / "slam_demo.yaml").read_text())
    data["/structvpr"]["ros__parameters"].update(temporal_exclusion_s=8.0, device="cpu", cpu_threads=1, top_k=3)
    params = tmp_path / "slam_demo.yaml"
    params.write_text(yaml.safe_dump(data), encoding="utf-8")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "structvpr_ros.slam_demo", "--out", str(out), "--street-length", "10"]
    r = subprocess.run([*cmd, "--params-file", str(params)], capture_output=True, text=True, timeout=240, cwd=str(REPO))
    assert r.returncode == 0, r.stderr[-3000:] + (out / "structvpr.log").read_text(errors="replace")[-2000:]
    result = json.loads((out / "result.json").read_text())
    assert result["synthetic"] is True and result["route"]["keyframes"] == 40
    loops = result["loop_closures"]
    assert loops["accepted"] >= 5 and loops["false"] == 0
    assert loops["accepted"] == loops["accepted_by_pose_graph_node"]  # the demo counts what the node did
    assert loops["false_downweighted"] <= loops["downweighted_by_kernel"] <= loops["accepted"]
    assert 0 < result["ate_rmse_m"]["corrected"] < result["ate_rmse_m"]["odometry"]
    assert result["timings"]["pose_graph_loop_update_ms_p50"] > 0
    assert (out / "trajectories.png").read_bytes()[:4] == b"\x89PNG"
    assert result["debug_images"] and all((out / p).is_file() for p in result["debug_images"])
    assert "ATE RMSE (evo, aligned): odometry" in r.stdout
