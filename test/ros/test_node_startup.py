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
