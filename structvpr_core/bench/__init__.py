"""``structvpr bench``: the performance figures of this machine, in one run, as JSON.

Parts (each in its own subprocess, so its peak RSS is its own: ``ru_maxrss`` from ``wait4``):

- ``extraction`` (extraction.py): batch-1 latency per runtime at 640×480 and 320×240;
- ``search:<index>`` (search.py): MapDatabase search on synthetic maps of 10⁴..10⁶ descriptors;
- ``node`` (``structvpr_ros/bench_node.py``, started as a process: the core never imports ROS): the
  ROS node's end-to-end latency and drops at 10 and 30 Hz, over DDS;
- ``training`` (training.py): stage I and stage II step time on the CPU.

The JSON keeps the shape of issue 7 (extra keys added): ``{"extraction": {"640x480": {variant:
{"p50_ms", ...}}}, "search": {index: {"10000": {"p50_ms", "top1_agreement"}}}, "node": {"10hz":
{"e2e_p50_ms", "drops"}}, "training": {"stage1_step_ms", "stage2_step_ms"}}``, plus ``machine``,
``versions``, ``threads``, ``memory`` (peak RSS per part) and ``targets`` (each target, its value
and whether this run met it). A part that cannot run here says ``{"skipped": reason}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEARCH_KINDS = ("flat", "ivfpq", "hnsw", "ivfflat")


def configs(quick: bool, threads: int) -> dict:
    """What each part measures, full or ``--quick`` (CI smoke: small sizes, few repeats)."""
    sweep = {"ivfpq": [8, 16, 32, 64], "hnsw": [16, 32, 64, 128, 256, 512], "ivfflat": [1, 2, 4, 8, 16, 32]}
    search = {
        "threads": threads,
        "agreement_target": 0.99,
        "ivfflat_nlist": None,
        "sweep": sweep,
        # HNSW build parameters lighter than MapDatabase's (M 32, efConstruction 80): those take
        # over an hour to build 10^6 descriptors on a 2-core machine.
        "params": {"hnsw": {"M": 16, "ef_construction": 40}},
    }
    if quick:
        search.update(
            sizes=[10_000],
            skipped_sizes=["100000", "1000000"],
            queries=30,
            flat_queries=30,
            train_size=10_000,
            sweep={"ivfpq": [8], "hnsw": [64], "ivfflat": [4]},
        )
        return {
            "extraction": {
                "threads": threads,
                "sizes": [[320, 240]],
                "skipped_sizes": ["640x480"],
                "repeats": 3,
                "warmup": 1,
                "calibration_images": 2,
                "recall": False,
                "recall_size": [640, 480],
            },
            "search": search,
            "node": {"threads": threads, "image_size": [160, 120], "rates": [[10, 10], [30, 15]]},
            "training": {
                "threads": threads,
                "image_size": [128, 96],
                "batch": 1,
                "negatives": 1,
                "repeats": 1,
                "block": 1,
                "warmup": 0,
            },
        }
    search.update(
        sizes=[10_000, 100_000, 1_000_000], skipped_sizes=[], queries=500, flat_queries=200, train_size=100_000
    )
    return {
        "extraction": {
            "threads": threads,
            "sizes": [[640, 480], [320, 240]],
            "skipped_sizes": [],
            "repeats": 40,
            "warmup": 3,
            "calibration_images": 200,
            "recall": True,
            "recall_size": [640, 480],
        },
        "search": search,
        # 60 Hz: beyond what the node processes on 2 cores, to show it drops frames rather than queueing.
        "node": {"threads": threads, "image_size": [640, 480], "rates": [[10, 150], [30, 300], [60, 600]]},
        "training": {
            "threads": threads,
            "image_size": [640, 480],
            "batch": 2,
            "negatives": 1,
            "repeats": 6,
            "block": 2,
            "warmup": 1,
        },
    }


def part_command(name: str) -> list[str]:
    """The module (and arguments) a part runs as; the node part is a ROS client in structvpr_ros."""
    if name.split(":")[0] == "node":
        return ["structvpr_ros.bench_node"]
    return ["structvpr_core.bench.part", name]


def run_part(name: str, cfg: dict, workdir: Path) -> tuple[dict, float | None, float]:
    """Run one part in a subprocess: (its result, its peak RSS in MB, seconds)."""
    cfg_file, out_file, err_file = (workdir / f"{name.replace(':', '_')}.{s}" for s in ("cfg.json", "out.json", "err"))
    cfg_file.write_text(json.dumps(cfg), encoding="utf-8")
    started = time.perf_counter()
    with open(err_file, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", *part_command(name), str(cfg_file), str(out_file)],
            stdout=err,
            stderr=subprocess.STDOUT,
            cwd=str(Path(__file__).resolve().parents[2]),
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    rss = usage.ru_maxrss / 1024.0  # kilobytes on Linux
    if proc.returncode != 0 or not out_file.is_file():
        tail = err_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-6:]
        return {"error": f"part {name} failed (exit {proc.returncode}): " + " | ".join(tail)}, rss, seconds
    return json.loads(out_file.read_text(encoding="utf-8")), rss, seconds


def run_bench(
    quick: bool = False, threads: int | None = None, parts: tuple[str, ...] | None = None, progress: bool = True
) -> dict:
    """All parts (or ``parts``), in order; returns the result JSON."""
    from tqdm import tqdm

    from .machine import machine, versions
    from .targets import evaluate_targets

    if not threads:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cfg = configs(quick, threads)
    todo = ["extraction", *[f"search:{k}" for k in SEARCH_KINDS], "node", "training"]
    if parts:
        todo = [p for p in todo if p in parts or p.split(":")[0] in parts]
    started = time.perf_counter()
    result: dict = {
        "format": "structvpr-bench",
        "format_version": 1,
        "quick": quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "versions": versions(),
        "threads": {"torch": threads, "onnxruntime_intra_op": threads, "faiss_omp": threads},
        "extraction": {},
        "search": {"synthetic": True},
        "node": {},
        "training": {},
        "memory": {},
        "seconds": {},
        "config": cfg,
    }
    with tempfile.TemporaryDirectory(prefix="structvpr-bench-") as tmp:
        for name in tqdm(todo, desc="bench", unit="part", disable=not progress):
            kind = name.split(":")[0]
            part_cfg = dict(cfg[kind], kind=name.split(":")[1]) if ":" in name else cfg[kind]
            out, rss, seconds = run_part(name, part_cfg, Path(tmp))
            if kind == "search":
                for size in cfg["search"].get("skipped_sizes", []):
                    out.setdefault(size, {"skipped": "--quick leaves out the largest map sizes"})
                result["search"][name.split(":")[1]] = out
            else:
                result[kind] = out
            result["memory"][name] = {"peak_rss_mb": rss}
            result["seconds"][name] = round(seconds, 1)
    result["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result["seconds"]["total"] = round(time.perf_counter() - started, 1)
    result["targets"] = evaluate_targets(result)
    return result
