"""The node's /diagnostics rules (structvpr_ros/node_health.py) and its pose history (pose_buffer.py), without ROS."""

from __future__ import annotations

import threading

import pytest

from structvpr_core.geometry import Pose
from structvpr_ros import frame_failures
from structvpr_ros.node_health import ERROR, OK, WARN, NodeState, health
from structvpr_ros.pose_buffer import PoseBuffer
from structvpr_ros.stats import NodeStats


def _state(**changes) -> NodeState:
    stats = NodeStats().snapshot()
    stats.update(input_rate_hz=10.0, processing_rate_hz=9.5)
    base = dict(
        stats=stats,
        worker_alive=True,
        worker_error=None,
        failures=frame_failures.OK,
        failure_problem="",
        recent_failures=0,
        last_failure="",
        last_save_error=None,
        dropped=3,
        map_size=42,
        mode="localization",
        device="cpu",
        image_topic="/camera/image_raw",
    )
    base.update(changes)
    return NodeState(**base)


def test_a_healthy_node_reports_its_rates_and_every_value_as_text():
    level, message, values = health(_state())
    assert level == OK
    assert message == "processing 9.5 Hz of 10.0 Hz input"
    assert values["map_size"] == "42" and values["frames_dropped"] == "3"
    assert all(isinstance(v, str) for v in values.values())
    assert {"extract_ms_p50", "end_to_end_ms_p95"} <= set(values)


@pytest.mark.parametrize(
    "changes, level, text",
    [
        ({"worker_alive": False}, ERROR, "processing thread stopped"),
        ({"worker_error": "Traceback ..."}, ERROR, "processing thread stopped"),
        ({"failures": frame_failures.ERROR, "failure_problem": "5 frames failed: MapError"}, ERROR, "5 frames failed"),
        ({"last_save_error": "disk full"}, ERROR, "map not saved: disk full"),
        ({"failures": frame_failures.WARN, "failure_problem": "1 malformed image"}, WARN, "1 malformed image"),
    ],
)
def test_problems_are_reported_with_their_level_and_cause(changes, level, text):
    got_level, message, _ = health(_state(**changes))
    assert got_level == level
    assert text in message


def test_no_input_is_a_warning_naming_the_topic_but_a_dead_worker_outranks_it():
    no_input = _state()
    no_input.stats["input_rate_hz"] = 0.0
    assert health(no_input)[:2] == (WARN, "no images on /camera/image_raw")
    no_input.worker_alive = False
    assert health(no_input)[0] == ERROR


def _pose(x: float) -> Pose:
    return Pose((x, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))


def test_pose_buffer_interpolates_extrapolates_briefly_and_forgets_when_time_goes_back():
    buf = PoseBuffer(maxlen=10)
    assert buf.at(1.0, max_gap_s=0.5) is None
    buf.add(1.0, _pose(0.0))
    buf.add(2.0, _pose(2.0))
    assert buf.at(1.5, max_gap_s=1.5).position[0] == pytest.approx(1.0)
    assert buf.at(2.3, max_gap_s=0.5).position[0] == pytest.approx(2.0)  # newer than the newest, within the gap
    assert buf.at(3.0, max_gap_s=0.5) is None  # too far past the newest pose
    assert buf.at(1.5, max_gap_s=0.5) is None  # the poses around it are too far apart
    buf.add(0.5, _pose(9.0))  # a bag restarted: the older history is gone
    assert len(buf) == 1
    assert buf.at(0.5, max_gap_s=0.5).position[0] == pytest.approx(9.0)


def test_pose_buffer_is_bounded_and_safe_across_threads():
    buf = PoseBuffer(maxlen=50)

    def writer():
        for i in range(1000):
            buf.add(float(i), _pose(float(i)))

    threads = [threading.Thread(target=writer), threading.Thread(target=lambda: [buf.at(5.0, 1.0) for _ in range(500)])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(buf) <= 50
