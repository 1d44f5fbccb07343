"""End-to-end latency of the ROS node over real DDS: image published -> candidates received.

The ``node`` part of ``structvpr bench``. It lives in the ROS package because it is a ROS client;
the core's bench starts it as a process (``python -m structvpr_ros.bench_node CFG OUT``), never
imports it, so ``structvpr_core`` stays free of ROS.

Three processes, as on a robot: ``structvpr_replay`` publishes the real Corridor query frames
(upscaled to the model's input size, raw ``sensor_msgs/Image``, stamped with the wall clock at
publication) at 10 and 30 Hz; the node (``structvpr_ros.vpr_node``, localisation against a map
of the Corridor reference frames, every parameter at its default but the map and the size)
answers; this process receives the answers and takes e2e = receive time − image stamp. Drops =
frames published but never answered (the node keeps only the newest frame while busy).
ROS isolation: a private ROS_DOMAIN_ID, localhost discovery, logs in a temp dir, and the Fast
DDS profile of config/ (large frames between processes need its shared-memory segment).
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TOPIC_IN = "/camera/image_raw"
TOPIC_OUT = "/structvpr/loop_closures"


def ros_missing() -> str | None:
    """Why the node cannot run here, or None."""
    code = "import rclpy; from structvpr_msgs.msg import LoopClosureCandidates"
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=ros_env(Path(tempfile.gettempdir()))
    )
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["import failed"])[-1]
        return f"rclpy or structvpr_msgs not importable ({last[:160]}); run inside install/setup.bash"
    return None


def ros_env(log_dir: Path) -> dict:
    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 80))
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_LOG_DIR"] = str(log_dir)
    profile = REPO / "config" / "fastdds_profile.xml"
    if profile.is_file():
        env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(profile))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def build_map(out: Path, size: tuple[int, int], threads: int) -> tuple[Path, Path]:
    """A map of the Corridor reference frames at ``size``; returns (map dir, query frames dir)."""
    import torch

    from structvpr_core.extractor import Extractor
    from structvpr_core.images import list_images
    from structvpr_core.mapdb import MapDatabase
    from structvpr_core.paths import corridor_if_present

    root = corridor_if_present()
    torch.set_num_threads(threads)
    ex = Extractor(image_size=size)
    refs = list_images(root / "ref")
    db = MapDatabase.create(ex.fingerprint, ex.dim)
    db.add(
        ex.embed_paths(refs, progress=False),
        [{"stamp": float(i), "source": str(p), "session": "corridor-ref"} for i, p in enumerate(refs)],
    )
    db.save(out / "map")
    db.close()
    return out / "map", root / "query"


class Collector:
    """Receives LoopClosureCandidates in this process and timestamps them on arrival."""

    def __init__(self):
        import rclpy
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        from structvpr_msgs.msg import LoopClosureCandidates

        rclpy.init()
        self.node = rclpy.create_node(f"structvpr_bench_{os.getpid()}")
        self.got: dict[tuple[int, int], tuple[float, float, float]] = {}
        self.node.create_subscription(
            LoopClosureCandidates,
            TOPIC_OUT,
            self._on_msg,
            QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE),
        )

    def _on_msg(self, msg) -> None:
        now = time.time()
        self.got[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = (now, msg.extract_ms, msg.search_ms)

    def spin_until(self, done, timeout: float) -> bool:
        import rclpy

        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                return False
            rclpy.spin_once(self.node, timeout_sec=0.02)
        return True

    def close(self) -> None:
        import rclpy

        self.node.destroy_node()
        rclpy.try_shutdown()


def run_rate(collector: Collector, env: dict, frames: Path, size, rate: float, count: int, workdir: Path) -> dict:
    stamps_csv = workdir / f"stamps_{rate:g}hz.csv"
    cmd = [
        sys.executable,
        "-m",
        "structvpr_ros.replay",
        "--images",
        str(frames),
        "--rate",
        str(rate),
        "--loop",
        "--count",
        str(count),
        "--size",
        f"{size[0]}x{size[1]}",
        "--topic",
        TOPIC_IN,
        "--stamps-out",
        str(stamps_csv),
        "--wait-subscriber",
        "30",
        "-q",
    ]
    collector.got.clear()
    proc = subprocess.Popen(cmd, env=env, cwd=str(REPO), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    collector.spin_until(lambda: proc.poll() is not None, 120.0 + count / rate)
    if proc.poll() is None:
        proc.kill()
    err = proc.communicate()[1].decode(errors="replace")
    collector.spin_until(lambda: False, 2.0)  # answers to the last frames
    if proc.returncode != 0 or not stamps_csv.is_file():
        return {"error": f"replay failed (exit {proc.returncode}): {err.strip()[-300:]}"}
    with open(stamps_csv, newline="", encoding="utf-8") as f:
        published = [(int(r["sec"]), int(r["nanosec"])) for r in csv.DictReader(f)]
    e2e, extract, search = [], [], []
    for key in published:
        if key in collector.got:
            received, ex_ms, se_ms = collector.got[key]
            e2e.append((received - (key[0] + key[1] * 1e-9)) * 1000.0)
            extract.append(ex_ms)
            search.append(se_ms)
    answered = len(e2e)
    out = {
        "rate_hz": rate,
        "published": len(published),
        "answered": answered,
        "drops": len(published) - answered,
        "drop_rate": (len(published) - answered) / max(1, len(published)),
    }
    if answered:
        e = np.asarray(e2e)
        out.update(
            e2e_p50_ms=float(np.percentile(e, 50)),
            e2e_p95_ms=float(np.percentile(e, 95)),
            e2e_min_ms=float(e.min()),
            e2e_max_ms=float(e.max()),
            extract_p50_ms=float(np.median(extract)),
            search_p50_ms=float(np.median(search)),
        )
        out["target_ms"] = out["extract_p50_ms"] + out["search_p50_ms"] + 5.0
    return out


def run(cfg: dict) -> dict:
    from structvpr_core.paths import corridor_if_present

    reason = ros_missing()
    if reason:
        return {"skipped": reason}
    if corridor_if_present() is None:
        return {"skipped": "needs the real Corridor frames (set STRUCTVPR_CORRIDOR)"}
    size = tuple(cfg["image_size"])
    threads = int(cfg["threads"])
    with tempfile.TemporaryDirectory(prefix="structvpr-bench-node-") as tmp:
        workdir = Path(tmp)
        node, log, frames, env = start_node(workdir, size, threads)
        collector = None
        result: dict = {
            "image_size": list(size),
            "threads": threads,
            "map_keyframes": 111,
            "frames": f"{frames} (real), upscaled to {size[0]}x{size[1]}, raw bgr8 Image",
        }
        try:
            ready = wait_for(lambda: b"ready:" in (workdir / "node.log").read_bytes() or node.poll() is not None, 180)
            if not ready or node.poll() is not None:
                tail = (workdir / "node.log").read_text(errors="replace")[-800:]
                return {"skipped": f"the node did not start (exit {node.poll()}): {tail}"}
            collector = Collector()
            # Answers published before this process's subscription is matched would be lost.
            if not collector.spin_until(lambda: collector.node.count_publishers(TOPIC_OUT) > 0, 30.0):
                return {"skipped": f"the node's {TOPIC_OUT} publisher was not discovered in 30 s"}
            collector.spin_until(lambda: False, 0.5)
            for rate, count in cfg["rates"]:
                result[f"{rate:g}hz"] = run_rate(collector, env, frames, size, float(rate), int(count), workdir)
        finally:
            if collector is not None:
                collector.close()
            rss = stop_node(node)
            log.close()
        result["node_peak_rss_mb"] = rss
        return result


def start_node(workdir: Path, size: tuple[int, int], threads: int) -> tuple[subprocess.Popen, object, Path, dict]:
    """The structvpr node in localisation against a fresh map of the Corridor reference frames.

    Joins this process to the node's private ROS domain (``ros_env``), builds the map at ``size``,
    starts ``structvpr_ros.vpr_node`` with its log in ``workdir/node.log``. Returns (process, open
    log file — close it after ``stop_node``, query frames folder, the node's environment).
    """
    env = ros_env(workdir / "ros_log")
    for key in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOG_DIR", "FASTDDS_DEFAULT_PROFILES_FILE"):
        if key in env:
            os.environ[key] = env[key]
    map_dir, frames = build_map(workdir, size, threads)
    params = write_node_params(
        workdir / "params.yaml",
        {
            "map_path": str(map_dir),
            "image_width": size[0],
            "image_height": size[1],
            "device": "cpu",
            "cpu_threads": threads,
            "image_topic": TOPIC_IN,
        },
    )
    log = open(workdir / "node.log", "wb")
    node = subprocess.Popen(
        [sys.executable, "-m", "structvpr_ros.vpr_node", "--ros-args", "--params-file", str(params)],
        env=env,
        cwd=str(REPO),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return node, log, frames, env


def write_node_params(path: Path, params: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}, sort_keys=False), encoding="utf-8")
    return path


def wait_for(done, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def rss_mb(pid: int) -> float | None:
    """A running process's resident memory (VmRSS of /proc/PID/status) in MB; None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def stop_node(proc: subprocess.Popen) -> float | None:
    """SIGTERM the node (it shuts down cleanly), SIGKILL if it hangs; its peak RSS in MB."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_maxrss / 1024.0
        time.sleep(0.1)
    proc.kill()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024.0


def main(argv: list[str] | None = None) -> int:
    """``python -m structvpr_ros.bench_node CFG.json OUT.json``: the part protocol of ``structvpr_core.bench.part``."""
    import json

    from structvpr_core.atomic import atomic_write_json

    cfg_file, out_file = sys.argv[1:] if argv is None else argv
    with open(cfg_file, encoding="utf-8") as f:
        cfg = json.load(f)
    atomic_write_json(out_file, run(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
