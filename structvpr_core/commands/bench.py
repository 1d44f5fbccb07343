"""``structvpr bench``: performance figures of this machine in one run (JSON, optional plot)."""

from __future__ import annotations

NAME = "bench"
HELP = "measure extraction, map search, node latency, training step time and memory; write JSON"
DESCRIPTION = """\
Measure, in one run, and write as JSON (machine, library versions, threads, and for each figure
p50/p95/min over repeated runs):
  - extraction latency, batch 1, at 640x480 and 320x240: PyTorch eager, PyTorch channels_last
    (+ folded BatchNorm), ONNX Runtime fp32, OpenVINO fp32/bf16/fp16 (the precisions this CPU
    offers), int8 (ONNX Runtime's quantiser on ONNX Runtime; NNCF on ONNX Runtime and OpenVINO),
    and the Extractor's default (auto, measuring its choice afresh: which runtime and why), each
    variant's cosine to PyTorch, wall and process CPU time, and int8's Recall@1 change on Corridor;
  - map search (MapDatabase) on SYNTHETIC maps of 10^4, 10^5, 10^6 448-d descriptors: flat,
    IVF-PQ, HNSW (and plain faiss IVF-Flat), per-query p50 and top-1 agreement with exact search;
  - the ROS node's end-to-end latency (image published -> candidates received) at 10 and 30 Hz
    over real DDS, with dropped frames (needs rclpy and structvpr_msgs: source install/setup.bash);
  - training step time of stage I and stage II (teacher descriptors cached) on the CPU;
  - peak RSS of each part (each runs in its own process).
Targets of the project are evaluated on the figures and listed under "targets".

The full run takes about 45-75 min on a 2-core machine (the 10^6 maps and the NNCF int8
exports with accuracy control dominate); --quick is a
smoke test (small sizes, few repeats, about a minute). Other load on the machine shifts the
figures: the load average is recorded at the start and end.

examples:
  structvpr bench --json bench.json --plot bench.png
  structvpr bench --quick --json /tmp/bench_quick.json
  structvpr bench --parts extraction search --json ex.json
"""

PARTS = ("extraction", "search", "node", "training")


def add_arguments(parser) -> None:
    from pathlib import Path

    parser.add_argument("--json", required=True, type=Path, metavar="FILE", help="result file (written atomically)")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="also draw the figures into a PNG")
    parser.add_argument("--quick", action="store_true", help="smoke test: small sizes, few repeats (CI)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="threads for PyTorch, ONNX Runtime and faiss (default: the usable cores)",
    )
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        metavar="PART",
        help=f"measure only these parts ({', '.join(PARTS)}; default: all)",
    )
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")


def run(args) -> int:
    from ..atomic import atomic_write_json
    from ..bench import run_bench
    from ..errors import ConfigError

    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads: must be >= 1, got {args.threads}")
    result = run_bench(
        quick=args.quick,
        threads=args.threads,
        parts=tuple(args.parts) if args.parts else None,
        progress=not args.no_progress,
    )
    atomic_write_json(args.json, result)
    if args.plot:
        from ..bench.plot import plot

        plot(result, args.plot)
    print(summary(result))
    print(f"wrote {args.json}" + (f" and {args.plot}" if args.plot else ""))
    return 0


def summary(result: dict) -> str:
    lines = []
    for size, v in result.get("extraction", {}).items():
        if isinstance(v, dict) and "ratios" in v:
            figures = ", ".join(
                f"{k} {v[k]['p50_ms']:.1f}" for k in result["extraction"]["variants"] if "p50_ms" in v.get(k, {})
            )
            lines.append(f"extraction {size} p50 ms: {figures}")
            auto = v.get("auto", {})
            if "chosen" in auto:
                lines.append(f"extraction {size} auto: {auto['chosen']} ({auto['why']})")
    for kind, sizes in (result.get("search") or {}).items():
        if isinstance(sizes, dict):
            pts = [
                f"{n}: {e['p50_ms']:.2f} ms / {e['top1_agreement']:.3f}"
                for n, e in sizes.items()
                if isinstance(e, dict) and "p50_ms" in e
            ]
            if pts:
                lines.append(f"search {kind} (synthetic) p50 / top-1 agreement: " + ", ".join(pts))
    node = result.get("node") or {}
    if "skipped" in node or "error" in node:
        lines.append(f"node: {node.get('skipped') or node.get('error')}")
    for k, v in node.items():
        if k.endswith("hz") and isinstance(v, dict) and "e2e_p50_ms" in v:
            lines.append(
                f"node {k}: e2e p50 {v['e2e_p50_ms']:.1f} ms, p95 {v['e2e_p95_ms']:.1f} ms, "
                f"dropped {v['drops']}/{v['published']}"
            )
    tr = result.get("training") or {}
    if "stage1_step_ms" in tr:
        lines.append(
            f"training step: stage I {tr['stage1_step_ms']:.0f} ms, stage II {tr['stage2_step_ms']:.0f} ms "
            f"({tr['stage2_over_stage1']:.2f}x)"
        )
    for name, t in (result.get("targets") or {}).items():
        state = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
        v = t["value"]
        lines.append(
            f"target {name}: {v:.3f} {t['target']} -> {state}"
            if isinstance(v, float)
            else f"target {name}: {v} {t['target']} -> {state}"
        )
    return "\n".join(lines)
