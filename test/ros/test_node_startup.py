"""The node refuses to start on bad parameters, naming the parameter, and exits non-zero.

Validation runs before the model is loaded, so these processes end within a second or two.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from ros_helpers import REPO, write_params

pytestmark = pytest.mark.ros


def _run_node(args: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess:
    pytest.importorskip("rclpy")
    return subprocess.run(
        [sys.executable, "-m", "structvpr_ros.vpr_node", "--ros-args", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(REPO),
    )


@pytest.mark.parametrize(
    "override, name",
    [
        ("top_k:=0", "top_k"),
        ("mode:=slam", "mode"),
        ("image_width:=wide", "image_width"),
        ("qos_reliability:=sometimes", "qos_reliability"),
    ],
)
def test_bad_parameter_value_stops_the_node(tmp_path, override, name):
    params = write_params(tmp_path / "p.yaml", {"map_path": str(tmp_path)})
    r = _run_node(["--params-file", str(params), "-p", override])
    assert r.returncode != 0
    assert f"parameter '{name}'" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_missing_map_is_named(tmp_path):
    params = write_params(tmp_path / "p.yaml", {"map_path": str(tmp_path / "nowhere")})
    r = _run_node(["--params-file", str(params)])
    assert r.returncode != 0
    assert "parameter 'map_path'" in r.stderr and "nowhere" in r.stderr, r.stderr


def test_misspelt_parameter_in_file_is_reported(tmp_path):
    params = write_params(tmp_path / "p.yaml", {"map_path": str(tmp_path), "topk": 3})
    r = _run_node(["--params-file", str(params)])
    assert r.returncode != 0
    assert "unknown parameter 'topk'" in r.stderr, r.stderr


@pytest.mark.parametrize(
    "override, refusal",
    [
        ("top_k:=abc", "parameter 'top_k': expected an integer, got 'abc'"),
        ("top_k:=2.5", "parameter 'top_k': expected an integer, got 2.5"),
        ("verify:=maybe", "parameter 'verify': expected true/false, got 'maybe'"),
        ("structvpr:min_inliers:=lots", "parameter 'min_inliers': expected an integer, got 'lots'"),
    ],
)
def test_mistyped_override_is_refused_with_the_shipped_params_file(tmp_path, override, refusal):
    """rcl keeps the file's value beside an override of another type, and rclpy reads the file's:
    the node must still see the override and refuse it, as it does without the file."""
    shipped = REPO / "config" / "vpr_node.yaml"
    r = _run_node(["--params-file", str(shipped), "-p", f"map_path:={tmp_path}", "-p", override])
    assert r.returncode == 1, r.stderr
    assert refusal in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_well_typed_overrides_of_the_params_file_are_used(tmp_path):
    """An override of the file's type still wins as before: qos_depth 5 in the file, :=2000 refused."""
    shipped = REPO / "config" / "vpr_node.yaml"
    r = _run_node(["--params-file", str(shipped), "-p", f"map_path:={tmp_path / 'none'}", "-p", "qos_depth:=2000"])
    assert r.returncode == 1 and "parameter 'qos_depth': must be in 1..1000, got 2000" in r.stderr, r.stderr
