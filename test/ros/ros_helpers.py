"""Helpers for tests over real DDS: an isolated ROS environment, node and replay processes.

Isolation: a ROS_DOMAIN_ID derived from the pid (concurrent sessions do not see each other),
discovery on localhost only, logs in a temp dir, and the Fast DDS profile as shipped (so that
large frames reach best-effort subscribers between processes). These variables are set at
import time, before any test imports rclpy, and are inherited by every process started here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from structvpr_core.paths import corridor_root

REPO = Path(__file__).resolve().parents[2]
CORRIDOR = corridor_root()

# Small model input for speed on CI's CPU; the corridor frames are 160x120, so nothing is lost.
TEST_IMAGE_SIZE = (320, 240)

LOG_DIR = tempfile.mkdtemp(prefix="structvpr-ros-log-")
os.environ["ROS_DOMAIN_ID"] = str(20 + os.getpid() % 80)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_LOG_DIR"] = LOG_DIR
os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(REPO / "config" / "fastdds_profile.xml")
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])


def spin_until(node, done, timeout: float, step: float = 0.02) -> bool:
    """Spin ``node`` until ``done()`` is true or ``timeout`` seconds passed."""
    import rclpy

    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        rclpy.spin_once(node, timeout_sec=step)
    return True


def spin_for(node, seconds: float) -> None:
    spin_until(node, lambda: False, seconds)


def corridor_files(kind: str) -> list[Path]:
    from structvpr_core.images import list_images

    return list_images(CORRIDOR / kind)


def write_params(path: Path, params: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}, sort_keys=False), encoding="utf-8")
    return path


class NodeProcess:
    """The structvpr node as a subprocess, its output captured to a file."""

    def __init__(self, params_file: Path, log_file: Path, extra_args: list[str] = ()) -> None:
        self.log_file = log_file
        self._log = open(log_file, "wb")
        cmd = [
            sys.executable,
            "-m",
            "structvpr_ros.vpr_node",
            "--ros-args",
            "--params-file",
            str(params_file),
            *extra_args,
        ]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(REPO))

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_file.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, node, image_topic: str, timeout: float = 90.0) -> None:
        ok = spin_until(node, lambda: "ready:" in self.output() or self.proc.poll() is not None, timeout)
        if self.proc.poll() is not None or not ok:
            raise AssertionError(f"node did not start (exit {self.proc.poll()}):\n{self.output()[-3000:]}")
        if not spin_until(node, lambda: node.count_subscribers(image_topic) > 0, 20.0):
            raise AssertionError(f"node subscription on {image_topic} not discovered:\n{self.output()[-2000:]}")

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (rclpy shuts down cleanly on it), then SIGKILL if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode


def run_replay(args: list[str], node=None, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Run structvpr_replay to completion; spin ``node`` meanwhile so it collects messages."""
    cmd = [sys.executable, "-m", "structvpr_ros.replay", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(REPO))
    if node is not None:
        spin_until(node, lambda: proc.poll() is not None, timeout)
    try:
        out, err = proc.communicate(timeout=timeout if node is None else 15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"replay timed out: {err.decode()[-2000:]}") from None
    if node is not None:
        spin_for(node, 0.5)  # answers to the last frames
    return subprocess.CompletedProcess(cmd, proc.returncode, out.decode(), err.decode())
