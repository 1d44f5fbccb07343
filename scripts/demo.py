#!/usr/bin/env python3
"""End-to-end demo: a map of real images, the ROS 2 node, a replayed query pass, a report.

    python scripts/demo.py --out demo_out          (what `make demo` runs, inside install/setup.bash)

1. builds a map of the dataset's database images (Corridor: the reference pass) with
   `structvpr build-map` (unless one is there);
2. starts the node (`structvpr_node --ros-args --params-file config/vpr_node.yaml ...`);
3. replays the query pass through it with `structvpr_replay` (paced by the node's answers, or
   at a fixed --rate like a live camera, where frames the node is too slow for are dropped);
4. prints per query the best candidate, its score, whether it is a true match, the latency,
   then Recall@1/@5 and latency percentiles, and compares with the offline `structvpr query`;
5. writes OUT/report.html (each query beside its top matches) and OUT/results.json.

Real data: the Corridor set (M. Milford, IJRR 2013, as packaged by VPR-Bench): query i matches
reference frames i-2..i+2. Any other dataset `structvpr eval` reads works too (--format, --split),
e.g. a folder-format split (database/, queries/, @east@north@ names; a positive within 25 m):

    python scripts/demo.py --out OUT --data data/nordland64 --format folder --split val \
        --size 256 128 --checkpoint RUN/stage1_rgb/best.pt --rebuild-map
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from structvpr_core.paths import corridor_root

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = corridor_root()
IMAGE_TOPIC = "/structvpr_demo/image_raw"
RESULT_TOPIC = "/structvpr/loop_closures"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="output directory (map, logs, report)")
    p.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="dataset root (default: Corridor, VPR-Bench style: ref/, query/, ground_truth.csv)",
    )
    p.add_argument(
        "--format",
        default="auto",
        help="dataset layout as for `structvpr eval` (auto, folder, vpr-bench, ...; default auto)",
    )
    p.add_argument("--split", default="test", help="split of a dataset with splits: train, val or test (default test)")
    p.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=(320, 240),
        metavar=("W", "H"),
        help="model input size (default 320 240: the Corridor frames are 160x120)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        metavar="HZ",
        help="replay at this rate like a live camera (frames may be dropped); "
        "default 0 = paced by the node's answers (no drops)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--checkpoint", default="", help="model checkpoint ('' = ImageNet-initialised RGB branch)")
    p.add_argument("--skip-offline", action="store_true", help="do not compare with `structvpr query`")
    p.add_argument("--rebuild-map", action="store_true", help="rebuild the map even if OUT/map exists")
    return p.parse_args(argv)


def _tool(console_script: str, module: str) -> list[str]:
    """The installed console script, else the module run by this interpreter."""
    exe = shutil.which(console_script)
    return [exe] if exe else [sys.executable, "-m", module]


def prepare_env() -> dict:
    """Environment for the demo's processes: the shipped DDS profile, localhost-only discovery,
    and a domain of its own unless the user chose one."""
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_profile.xml"))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(101 + os.getpid() % 100))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return os.environ


def image_dir(paths: list[Path]) -> Path:
    """The folder that holds all of ``paths`` (a dataset's database images, or its queries)."""
    return Path(os.path.commonpath([str(Path(p).parent) for p in paths]))


def ensure_map(args, map_dir: Path, database: Path) -> None:
    manifest = map_dir / "manifest.json"
    if manifest.is_file() and not args.rebuild_map:
        fp = json.loads(manifest.read_text()).get("fingerprint", {})
        if list(fp.get("input_size", [])) == list(args.size):
            print(f"[demo] using the map in {map_dir}")
            return
    print(f"[demo] building the map of {database} ...", flush=True)
    cmd = [
        *_tool("structvpr", "structvpr_core.cli"),
        "build-map",
        "--images",
        str(database),
        "--out",
        str(map_dir),
        "--size",
        str(args.size[0]),
        str(args.size[1]),
        "--features",
        "none",
        "--device",
        args.device,
        "--overwrite",
    ]
    if args.checkpoint:
        cmd += ["--checkpoint", args.checkpoint]
    subprocess.run(cmd, check=True)


def start_node(args, map_dir: Path, log_path: Path) -> subprocess.Popen:
    cmd = [
        *_tool("structvpr_node", "structvpr_ros.vpr_node"),
        "--ros-args",
        "--params-file",
        str(REPO / "config" / "vpr_node.yaml"),
        "-p",
        f"map_path:={map_dir}",
        "-p",
        f"image_topic:={IMAGE_TOPIC}",
        "-p",
        f"image_width:={args.size[0]}",
        "-p",
        f"image_height:={args.size[1]}",
        "-p",
        f"device:={args.device}",
    ]
    if args.checkpoint:  # rcl rejects an empty "-p name:=" value; '' is the params file default
        cmd += ["-p", f"checkpoint:={args.checkpoint}"]
    return subprocess.Popen(cmd, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def spin_until(node, done, timeout: float) -> bool:
    import rclpy

    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        rclpy.spin_once(node, timeout_sec=0.05)
    return True


def run_pass(args, out: Path, map_dir: Path, queries: list[Path], query_dir: Path) -> dict:
    """Node + replay; returns {query path: (message, arrival wall time)} and replay figures."""
    import rclpy

    from structvpr_msgs.msg import LoopClosureCandidates

    rclpy.init()
    listener = rclpy.create_node("structvpr_demo")
    answers = {}
    listener.create_subscription(
        LoopClosureCandidates,
        RESULT_TOPIC,
        lambda m: answers.__setitem__((m.header.stamp.sec, m.header.stamp.nanosec), (m, time.time())),
        1000,
    )
    node = start_node(args, map_dir, out / "node.log")
    try:
        print("[demo] starting the node (model and map loading) ...", flush=True)
        ok = spin_until(listener, lambda: listener.count_subscribers(IMAGE_TOPIC) > 0 or node.poll() is not None, 180)
        if node.poll() is not None or not ok:
            sys.exit(
                f"[demo] the node did not start; see {out / 'node.log'}:\n"
                + (out / "node.log").read_text(errors="replace")[-2000:]
            )
        replay = [
            *_tool("structvpr_replay", "structvpr_ros.replay"),
            "--images",
            str(query_dir),
            "--topic",
            IMAGE_TOPIC,
            "--stamps-out",
            str(out / "stamps.csv"),
            "--frame-id",
            "demo_camera",
        ]
        replay += ["--rate", str(args.rate)] if args.rate > 0 else ["--pace-by", RESULT_TOPIC]
        how = f"at {args.rate:g} Hz" if args.rate > 0 else "paced by the node's answers"
        print(f"[demo] replaying {len(queries)} query frames {how} ...", flush=True)
        proc = subprocess.Popen(replay)
        spin_until(listener, lambda: proc.poll() is not None, 600)
        spin_until(listener, lambda: False, 1.0)  # answers to the last frames
        if proc.wait() != 0:
            sys.exit("[demo] replay failed")
    finally:
        stop(node)
        listener.destroy_node()
        rclpy.try_shutdown()
    with open(out / "stamps.csv", newline="") as f:
        stamps = {r["source"]: (int(r["sec"]), int(r["nanosec"])) for r in csv.DictReader(f)}
    results = {}
    for q in queries:
        key = stamps.get(str(q))
        got = answers.get(key) if key else None
        results[str(q)] = None if got is None else (got[0], got[1], key[0] + key[1] * 1e-9)
    return results


def offline_query(args, map_dir: Path, queries: list[Path], out: Path) -> dict | None:
    if args.skip_offline:
        return None
    print("[demo] offline look-up of the same queries with `structvpr query` ...", flush=True)
    path = out / "offline_query.json"
    cmd = [
        *_tool("structvpr", "structvpr_core.cli"),
        "query",
        "--map",
        str(map_dir),
        "--top-k",
        "5",
        "--device",
        args.device,
        "--json",
        str(path),
        *map(str, queries),
    ]
    if args.checkpoint:
        cmd += ["--checkpoint", args.checkpoint]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return {r["query"]: [c["source"] for c in r["candidates"]] for r in json.loads(path.read_text())}


def percentile(values, q):
    import numpy as np

    return float(np.percentile(values, q)) if values else float("nan")


def summarise(dataset, results: dict, offline: dict | None) -> tuple[list[dict], dict]:
    # Map sources are stored as resolved paths; the dataset may name the same files via a symlink.
    resolved = {str(Path(p).resolve()): i for i, p in enumerate(dataset.database)}

    def db_index(source: str) -> int:
        return resolved.get(str(Path(source).resolve()), -1)

    rows = []
    for qi, q in enumerate(dataset.queries):
        positives = set(int(i) for i in dataset.positives[qi])
        got = results.get(str(q))
        row = {"query": str(q), "index": qi, "positives": sorted(positives), "answered": got is not None}
        if got is not None:
            msg, arrival, stamp = got
            cands = [{"source": c.source, "index": db_index(c.source), "score": float(c.score)} for c in msg.candidates]
            for c in cands:
                c["correct"] = c["index"] in positives
            row.update(
                candidates=cands,
                latency_ms=(arrival - stamp) * 1e3,
                extract_ms=float(msg.extract_ms),
                search_ms=float(msg.search_ms),
                verify_ms=float(msg.verify_ms),
                top1=bool(cands) and cands[0]["correct"],
                top5=any(c["correct"] for c in cands[:5]),
            )
        if offline is not None:
            row["offline_top5"] = any(db_index(s) in positives for s in offline.get(str(q), [])[:5])
            row["offline_top1"] = bool(offline.get(str(q))) and db_index(offline[str(q)][0]) in positives
        rows.append(row)
    n = len(rows)
    answered = [r for r in rows if r["answered"]]
    lat = [r["latency_ms"] for r in answered]
    totals = {
        "queries": n,
        "dataset": dataset.name,
        "database": dataset.num_database,
        "answered": len(answered),
        "dropped": n - len(answered),
        "recall@1": sum(r.get("top1", False) for r in rows) / n,
        "recall@5": sum(r.get("top5", False) for r in rows) / n,
        "latency_ms_p50": percentile(lat, 50),
        "latency_ms_p95": percentile(lat, 95),
        "extract_ms_p50": percentile([r["extract_ms"] for r in answered], 50),
        "extract_ms_p95": percentile([r["extract_ms"] for r in answered], 95),
        "search_ms_p50": percentile([r["search_ms"] for r in answered], 50),
    }
    if offline is not None:
        totals["offline_recall@1"] = sum(r["offline_top1"] for r in rows) / n
        totals["offline_recall@5"] = sum(r["offline_top5"] for r in rows) / n
    return rows, totals


def print_summary(rows, totals, args) -> None:
    print()
    print(f"{'query':>6}  {'best match':>10}  {'score':>6}  {'top-1':>5}  {'top-5':>5}  {'latency':>8}")
    for r in rows:
        name = Path(r["query"]).stem
        if not r["answered"]:
            print(f"{name:>6}  {'(dropped: no answer)':>32}")
            continue
        best = r["candidates"][0] if r["candidates"] else None
        best_name = Path(best["source"]).stem if best else "-"
        score = f"{best['score']:.3f}" if best else "-"
        print(
            f"{name:>6}  {best_name:>10}  {score:>6}  {'yes' if r['top1'] else 'no':>5}  "
            f"{'yes' if r['top5'] else 'no':>5}  {r['latency_ms']:6.0f} ms"
        )
    t = totals
    print()
    print(
        f"{t['dataset']} ({t['queries']} queries, model input {args.size[0]}x{args.size[1]}), through the ROS 2 node:"
    )
    print(
        f"  Recall@1 {t['recall@1']:.3f}   Recall@5 {t['recall@5']:.3f}   "
        f"answered {t['answered']}/{t['queries']} (dropped {t['dropped']})"
    )
    print(
        f"  latency (image stamp -> candidates received) p50 {t['latency_ms_p50']:.0f} ms, "
        f"p95 {t['latency_ms_p95']:.0f} ms; extraction p50 {t['extract_ms_p50']:.0f} ms, "
        f"search p50 {t['search_ms_p50']:.2f} ms"
    )
    if "offline_recall@5" in t:
        agree = (
            "agree" if (t["offline_recall@5"], t["offline_recall@1"]) == (t["recall@5"], t["recall@1"]) else "DIFFER"
        )
        print(
            f"  offline `structvpr query`: Recall@1 {t['offline_recall@1']:.3f}   "
            f"Recall@5 {t['offline_recall@5']:.3f}   ({agree} with the node)"
        )


def write_report(rows, totals, args, out: Path) -> Path:
    thumbs = out / "thumbs"
    thumbs.mkdir(exist_ok=True)

    def thumb(path: str) -> str:
        p = Path(path)
        dest = thumbs / f"{p.parent.name}_{p.name}"
        if not dest.exists() and p.is_file():
            shutil.copyfile(p, dest)
        return f"thumbs/{html.escape(dest.name)}"

    t = totals
    head = (
        f"<h1>StructVPR loop-closure demo: {html.escape(t['dataset'])} through the ROS 2 node</h1>"
        f"<p>{t['queries']} queries against the {t['database']} database images; a candidate is "
        f"correct when it is one of the query's positives (Corridor: &plusmn;2 frames). "
        f"Model input {args.size[0]}&times;{args.size[1]}.</p>"
        f"<p><b>Recall@1 {t['recall@1']:.3f} &nbsp; Recall@5 {t['recall@5']:.3f}</b> &nbsp; answered "
        f"{t['answered']}/{t['queries']} &nbsp; latency p50 {t['latency_ms_p50']:.0f} ms, "
        f"p95 {t['latency_ms_p95']:.0f} ms</p>"
    )
    if "offline_recall@5" in t:
        head += (
            f"<p>Offline <code>structvpr query</code>: Recall@1 {t['offline_recall@1']:.3f}, "
            f"Recall@5 {t['offline_recall@5']:.3f}</p>"
        )
    body = []
    for r in rows:
        cells = [f"<td class='q'><img src='{thumb(r['query'])}'><br>query {Path(r['query']).stem}</td>"]
        if not r["answered"]:
            cells.append("<td colspan='5'>dropped (no answer)</td>")
        else:
            for rank, c in enumerate(r["candidates"], 1):
                cls = "ok" if c["correct"] else "bad"
                cells.append(
                    f"<td class='{cls}'><img src='{thumb(c['source'])}'><br>#{rank} ref "
                    f"{Path(c['source']).stem}<br>score {c['score']:.3f}</td>"
                )
            cells.append(f"<td>{r['latency_ms']:.0f} ms</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>StructVPR demo</title><style>"
        "body{font-family:sans-serif} td{text-align:center;padding:4px;font-size:12px}"
        "td.ok img{border:4px solid #2a2} td.bad img{border:4px solid #d22} td.q img{border:4px solid #888}"
        "</style></head><body>" + head + "<table>" + "\n".join(body) + "</table></body></html>"
    )
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    prepare_env()
    from structvpr_core.data import load_dataset

    dataset = load_dataset(args.data, format=args.format, split=args.split)
    map_dir = out / "map"
    ensure_map(args, map_dir, image_dir(dataset.database))
    results = run_pass(args, out, map_dir, dataset.queries, image_dir(dataset.queries))
    offline = offline_query(args, map_dir, dataset.queries, out)
    rows, totals = summarise(dataset, results, offline)
    print_summary(rows, totals, args)
    report = write_report(rows, totals, args, out)
    (out / "results.json").write_text(json.dumps({"totals": totals, "queries": rows}, indent=1) + "\n")
    print(f"\n[demo] report: {report}\n[demo] node log: {out / 'node.log'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
