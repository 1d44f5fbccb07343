#!/usr/bin/env python3
"""Soak the structvpr node over real DDS: a camera at 30 Hz for 10 minutes, with bad frames mixed in.

    python scripts/soak_node.py --minutes 10 --rate 30 --json /tmp/soak.json

Three processes as on a robot (the machinery of ``structvpr_ros.bench_node``): ``structvpr_replay``
publishes the real Corridor query frames in a loop (raw bgr8 Image at --size, stamped with the
wall clock), the node localises them against a map of the Corridor reference frames, and this
process collects the answers. It also publishes ``--bad-per-s`` malformed frames a second on the
same topic (data shorter than the header claims), so the per-frame failure path is soaked too.

Reported: the node's RSS right after start-up (warmed up) and at the end (and each minute), and
per minute the frames published and answered and the end-to-end latency p50/p95 (answer receive
time - image stamp) of the answered ones. The node keeps only the newest frame while it is busy,
so at a rate above its throughput most frames are dropped by design; the latency of the ones it
answers is what a back end sees. Not a test: a measurement, to be read with the machine's load.
"""

from __future__ import annotations

import argparse
import array
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from structvpr_ros.bench_node import (  # noqa: E402  (after the path set-up, to run from a checkout)
    TOPIC_IN,
    TOPIC_OUT,
    Collector,
    rss_mb,
    start_node,
    stop_node,
    wait_for,
)


def malformed_frame():
    from sensor_msgs.msg import Image

    msg = Image()
    msg.header.frame_id = "soak_bad"
    msg.height, msg.width, msg.encoding, msg.step = 480, 640, "bgr8", 1920
    msg.data = array.array("B", bytes(1000))  # far less than 480 rows of 1920 bytes
    return msg


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=30.0, help="camera rate in Hz (default 30)")
    p.add_argument("--size", nargs=2, type=int, default=(320, 240), metavar=("W", "H"), help="frames and model input")
    p.add_argument("--threads", type=int, default=1, help="node CPU threads (default 1)")
    p.add_argument("--bad-per-s", type=float, default=1.0, help="malformed frames a second (default 1)")
    p.add_argument("--json", type=Path, required=True, help="result file")
    args = p.parse_args(argv)
    size, minutes = tuple(args.size), args.minutes

    with tempfile.TemporaryDirectory(prefix="structvpr-soak-") as tmp:
        work = Path(tmp)
        node, log, frames, env = start_node(work, size, args.threads)
        collector = replay = None
        result: dict = {"rate_hz": args.rate, "minutes": minutes, "image_size": list(size), "threads": args.threads}
        try:
            if not wait_for(lambda: b"ready:" in (work / "node.log").read_bytes() or node.poll() is not None, 300):
                raise SystemExit("the node did not start")
            if node.poll() is not None:
                raise SystemExit((work / "node.log").read_text(errors="replace")[-2000:])
            collector = Collector()
            from rclpy.qos import QoSProfile, ReliabilityPolicy
            from sensor_msgs.msg import Image

            bad_pub = collector.node.create_publisher(
                Image, TOPIC_IN, QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
            )
            collector.spin_until(lambda: collector.node.count_publishers(TOPIC_OUT) > 0, 30.0)
            collector.spin_until(lambda: False, 1.0)
            rss_start = rss_mb(node.pid)
            count = int(args.rate * 60 * minutes)
            stamps_csv = work / "stamps.csv"
            replay = subprocess.Popen(
                [sys.executable, "-m", "structvpr_ros.replay", "--images", str(frames), "--rate", str(args.rate),
                 "--loop", "--count", str(count), "--size", f"{size[0]}x{size[1]}", "--topic", TOPIC_IN,
                 "--stamps-out", str(stamps_csv), "--wait-subscriber", "30", "-q"],
                env=env, cwd=str(REPO), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
            t0 = time.monotonic()
            rss_by_minute, bad_sent, next_bad, next_minute = [], 0, t0, t0 + 60
            while replay.poll() is None and time.monotonic() - t0 < 60 * minutes + 120:
                rclpy_now = time.monotonic()
                if args.bad_per_s > 0 and rclpy_now >= next_bad:
                    msg = malformed_frame()
                    stamp = time.time()
                    msg.header.stamp.sec, msg.header.stamp.nanosec = int(stamp), int((stamp % 1) * 1e9)
                    bad_pub.publish(msg)
                    bad_sent += 1
                    next_bad += 1.0 / args.bad_per_s
                if rclpy_now >= next_minute:
                    rss_by_minute.append(rss_mb(node.pid))
                    next_minute += 60
                collector.spin_until(lambda: False, 0.05)
            collector.spin_until(lambda: False, 3.0)  # answers to the last frames
            rss_end = rss_mb(node.pid)
            with open(stamps_csv, newline="", encoding="utf-8") as f:
                published = [(int(r["sec"]), int(r["nanosec"])) for r in csv.DictReader(f)]
            first = published[0][0] + published[0][1] * 1e-9
            per_minute: dict[int, dict] = {}
            for key in published:
                t = key[0] + key[1] * 1e-9
                m = per_minute.setdefault(int((t - first) // 60), {"published": 0, "e2e": []})
                m["published"] += 1
                if key in collector.got:
                    m["e2e"].append((collector.got[key][0] - t) * 1000.0)
            minutes_out = []
            for minute in sorted(per_minute):
                m = per_minute[minute]
                e = np.asarray(m["e2e"])
                minutes_out.append(
                    {
                        "minute": minute + 1,
                        "published": m["published"],
                        "answered": int(e.size),
                        "e2e_p50_ms": float(np.percentile(e, 50)) if e.size else None,
                        "e2e_p95_ms": float(np.percentile(e, 95)) if e.size else None,
                        "rss_mb": rss_by_minute[minute] if minute < len(rss_by_minute) else rss_end,
                    }
                )
            out = (work / "node.log").read_text(errors="replace")
            result.update(
                rss_start_mb=rss_start,
                rss_end_mb=rss_end,
                published=len(published),
                answered=sum(m["answered"] for m in minutes_out),
                malformed_sent=bad_sent,
                malformed_logged=out.count("skipping malformed image"),
                node_alive_at_end=node.poll() is None,
                per_minute=minutes_out,
                load_average_end=os.getloadavg(),
            )
        finally:
            if replay is not None and replay.poll() is None:
                replay.kill()
            if collector is not None:
                collector.close()
            result["node_peak_rss_mb"] = stop_node(node)
            result["node_exit_code"] = node.returncode
            log.close()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"soak {minutes:g} min at {args.rate:g} Hz, {size[0]}x{size[1]}, {args.threads} thread(s)")
    print(
        f"RSS start {result.get('rss_start_mb', 0):.0f} MB, end {result.get('rss_end_mb', 0):.0f} MB, peak "
        f"{result['node_peak_rss_mb']:.0f} MB; malformed frames sent {result.get('malformed_sent')}, "
        f"logged {result.get('malformed_logged')} (rate-limited); node alive {result.get('node_alive_at_end')}"
    )
    print("minute  published  answered  e2e p50 ms  e2e p95 ms  RSS MB")
    for m in result.get("per_minute", []):
        p50 = f"{m['e2e_p50_ms']:.1f}" if m["e2e_p50_ms"] is not None else "-"
        p95 = f"{m['e2e_p95_ms']:.1f}" if m["e2e_p95_ms"] is not None else "-"
        print(f"{m['minute']:>6}  {m['published']:>9}  {m['answered']:>8}  {p50:>10}  {p95:>10}  {m['rss_mb']:>6.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
