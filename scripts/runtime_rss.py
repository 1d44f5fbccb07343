#!/usr/bin/env python3
"""The node's resident memory after N frames over real DDS, running an exported ONNX model.

    python scripts/runtime_rss.py --model model.onnx --frames 2000 --rate 10 --json /tmp/rss.json

Run it with the interpreter of the environment to measure (the runtime-only venv of
scripts/runtime_env.sh, or the full one): everything it starts uses ``sys.executable``. Three
processes as on a robot (the machinery of ``structvpr_ros.bench_node``): ``structvpr build-map``
makes a map of the Corridor reference frames with the model, the node
(``python -m structvpr_ros.vpr_node``, localisation, cpu, every other parameter at its default)
loads it, ``structvpr_ros.replay`` publishes the Corridor query frames in a loop (raw bgr8 Image
at the model's input size, Fast DDS profile of config/), and this process collects the answers.

Reported: VmRSS of the node (``/proc/PID/status``) once warmed up, during the replay and after
the last frame, its peak (``ru_maxrss``), the frames published and answered, and whether
PyTorch's library is mapped into the node (``/proc/PID/maps``). A measurement, not a test: read
it with the machine's load (printed).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    import structvpr_ros  # noqa: F401  (installed: use it as installed)
except ImportError:
    sys.path.insert(0, str(REPO))  # a checkout without an install

from structvpr_ros.bench_node import (  # noqa: E402
    TOPIC_IN,
    TOPIC_OUT,
    Collector,
    ros_env,
    rss_mb,
    stop_node,
    wait_for,
    write_node_params,
)


def torch_mapped(pid: int) -> bool:
    """Whether libtorch (PyTorch's C++ library) is mapped into the process."""
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        type=Path,
        help="exported .onnx model (with its sidecar); default: none, i.e. the node's "
        "default model (the ImageNet RGB branch, backend auto: needs torch)",
    )
    p.add_argument(
        "--size", nargs=2, type=int, default=(640, 480), metavar=("W", "H"), help="input size without --model"
    )
    p.add_argument("--frames", type=int, default=2000, help="frames to publish (default 2000)")
    p.add_argument("--rate", type=float, default=10.0, help="camera rate in Hz (default 10)")
    p.add_argument("--threads", type=int, default=1, help="node CPU threads (default 1)")
    p.add_argument("--corridor", type=Path, default=REPO / "datasets" / "corridor", help="Corridor dataset root")
    p.add_argument("--json", type=Path, required=True, help="result file")
    args = p.parse_args(argv)
    if args.model is not None:
        size = tuple(int(v) for v in json.loads(Path(str(args.model) + ".json").read_text("utf-8"))["input_size"])
    else:
        size = tuple(args.size)
    model_args = [] if args.model is None else ["--checkpoint", str(args.model)]
    result: dict = {
        "python": sys.executable,
        "model": None if args.model is None else str(args.model.resolve()),
        "image_size": list(size),
        "frames": args.frames,
        "rate_hz": args.rate,
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory(prefix="structvpr-rss-") as tmp:
        work = Path(tmp)
        env = ros_env(work / "ros_log")
        env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")  # the environment as the caller set it up
        env["OMP_NUM_THREADS"] = str(args.threads)
        for key in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOG_DIR", "FASTDDS_DEFAULT_PROFILES_FILE"):
            if key in env:
                os.environ[key] = env[key]
        map_dir = work / "map"
        t0 = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "structvpr_core.cli", "build-map", "--images", str(args.corridor / "ref"),
             "--out", str(map_dir), *model_args, "--size", str(size[0]), str(size[1]),
             "--device", "cpu", "--no-progress"],
            env=env, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        result["build_map_s"] = round(time.monotonic() - t0, 1)
        params = write_node_params(
            work / "params.yaml",
            {
                "map_path": str(map_dir),
                "checkpoint": "" if args.model is None else str(args.model.resolve()),
                "image_width": size[0],
                "image_height": size[1],
                "device": "cpu",
                "cpu_threads": args.threads,
                "image_topic": TOPIC_IN,
            },
        )
        log = open(work / "node.log", "wb")
        node = subprocess.Popen(
            [sys.executable, "-m", "structvpr_ros.vpr_node", "--ros-args", "--params-file", str(params)],
            env=env, cwd=str(work), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        collector = replay = None
        try:
            if not wait_for(lambda: b"ready:" in (work / "node.log").read_bytes() or node.poll() is not None, 300):
                raise SystemExit("the node did not start")
            if node.poll() is not None:
                raise SystemExit((work / "node.log").read_text(errors="replace")[-2000:])
            collector = Collector()
            collector.spin_until(lambda: collector.node.count_publishers(TOPIC_OUT) > 0, 30.0)
            collector.spin_until(lambda: False, 1.0)
            result["rss_ready_mb"] = rss_mb(node.pid)
            stamps_csv = work / "stamps.csv"
            replay = subprocess.Popen(
                [sys.executable, "-m", "structvpr_ros.replay", "--images", str(args.corridor / "query"),
                 "--rate", str(args.rate), "--loop", "--count", str(args.frames), "--size", f"{size[0]}x{size[1]}",
                 "--topic", TOPIC_IN, "--stamps-out", str(stamps_csv), "--wait-subscriber", "30", "-q"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
            t1, samples, next_sample = time.monotonic(), [], time.monotonic() + 10
            while replay.poll() is None and time.monotonic() - t1 < args.frames / args.rate + 120:
                collector.spin_until(lambda: False, 0.05)
                if time.monotonic() >= next_sample:
                    samples.append(rss_mb(node.pid))
                    next_sample += 10
            collector.spin_until(lambda: False, 3.0)  # answers to the last frames
            result["replay_s"] = round(time.monotonic() - t1, 1)
            result["rss_after_frames_mb"] = rss_mb(node.pid)
            result["rss_samples_10s_mb"] = samples
            result["torch_mapped_in_node"] = torch_mapped(node.pid)
            with open(stamps_csv, newline="", encoding="utf-8") as f:
                published = [(int(r["sec"]), int(r["nanosec"])) for r in csv.DictReader(f)]
            result["published"] = len(published)
            result["answered"] = sum(1 for key in published if key in collector.got)
            result["load_average_end"] = os.getloadavg()
        finally:
            if replay is not None and replay.poll() is None:
                replay.kill()
            if collector is not None:
                collector.close()
            result["node_peak_rss_mb"] = stop_node(node)
            result["node_exit_code"] = node.returncode
            log.close()
            result["node_log_tail"] = (work / "node.log").read_text(errors="replace")[-600:]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        f"node RSS ready {result.get('rss_ready_mb') or 0:.0f} MB, after {result.get('published')} frames "
        f"{result.get('rss_after_frames_mb') or 0:.0f} MB, peak {result['node_peak_rss_mb'] or 0:.0f} MB; "
        f"answered {result.get('answered')}; torch mapped in the node: {result.get('torch_mapped_in_node')}; "
        f"{size[0]}x{size[1]} at {args.rate:g} Hz, {args.threads} thread(s), load {result.get('load_average_end')}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
