"""``structvpr eval-loop``: loop-closure quality of the detector on a dataset with ground truth."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import add_backend_argument, add_query_arguments, add_size_argument, model_conf

NAME = "eval-loop"
HELP = "run a dataset's queries through the loop-closure detector: Recall@N, PR AUC, timings"
DESCRIPTION = """\
Build a map from the dataset's database images (or use --map, whose keyframe sources must be
those images), run every query image through the LoopClosureDetector (localization mode, every
frame a keyframe) and report, without and with geometric verification (--verify):
  Recall@1/@5        a query is correct if one of its top N is a ground-truth positive;
  PR AUC             precision-recall of accepting the top-1 candidate, swept over its
                     confidence (cosine score; when verified, inliers + score/2), recall over all
                     queries that have a positive; area by trapezoids;
  recall@100%P       the largest recall at which every accepted top-1 is correct;
and the per-stage timings (extract, search, verify) in ms.

Low-quality queries: --query-degrade SPEC degrades each query image first (the map is built
from the database images as they are), --query-checkpoint P embeds the queries with a query
encoder trained for the map's model (refused for any other map).

Example (the real Corridor route in VPR-Bench layout):
  structvpr eval-loop --dataset datasets/corridor --verify --json corridor_loop.json
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", type=Path, required=True, metavar="DIR", help="dataset root")
    p.add_argument("--format", default="auto", help="dataset format (default: auto)")
    p.add_argument("--map", type=Path, metavar="MAPDIR", help="prebuilt map of the dataset's database images")
    p.add_argument(
        "--checkpoint",
        type=Path,
        metavar="PATH",
        help="model checkpoint (default: the one recorded in --map, else ImageNet init)",
    )
    add_size_argument(p, "network input size when building the map")
    p.add_argument("--verify", action="store_true", help="also evaluate with geometric verification")
    p.add_argument("--features", choices=("sift", "orb"), default="sift", help="local features (default: sift)")
    p.add_argument(
        "--ransac",
        choices=("homography", "fundamental"),
        default="homography",
        help="geometric model (default: homography)",
    )
    p.add_argument(
        "--verify-candidates",
        type=int,
        default=10,
        metavar="N",
        help="search results verified and re-ranked per query (default: 10)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)")
    add_backend_argument(p)
    add_query_arguments(p, what="the map")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def conf_from_args(args) -> dict:
    """The loop_eval configuration the flags describe."""
    return {
        "model": model_conf(args),
        "dataset_format": args.format,
        "verification": {
            "enabled": args.verify,
            "features": args.features,
            "ransac": args.ransac,
            "candidates": args.verify_candidates,
        },
        "query": {"checkpoint": args.query_checkpoint, "degradation": args.query_degrade, "seed": args.seed},
        "progress": not args.no_progress,
    }


def run(args) -> int:
    from .. import loop_eval
    from ..images import check_input_size

    check_input_size(args.size, "--size")

    report = loop_eval.main(conf_from_args(args), args.dataset, json_out=args.json, map_dir=args.map)
    tag = " (synthetic)" if report["synthetic"] else ""
    if report["query_degradation"] != "none" or report["query_checkpoint"] is not None:
        print(
            f"queries: degraded '{report['query_degradation']}' (seed {report['seed']}); "
            f"query model: {report['query_checkpoint'] or 'the map model'}"
        )
    for name in ("retrieval", "verified"):
        if name in report:
            r = report[name]
            print(
                f"{name}{tag}: R@1 {r['recall@1']:.3f}  R@5 {r['recall@5']:.3f}  PR-AUC {r['pr_auc']:.3f}  "
                f"R@100%P {r['recall_at_100_precision']:.3f}"
            )
    print(
        "timings (ms, mean/median/p95): "
        + ", ".join(f"{k} {v['mean']:.1f}/{v['median']:.1f}/{v['p95']:.1f}" for k, v in report["timings_ms"].items())
    )
    if args.json is not None:
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
