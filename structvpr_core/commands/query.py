"""``structvpr query``: look images up in a map database."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import add_backend_argument, add_query_arguments

NAME = "query"
HELP = "rank the map keyframes most similar to each image (optionally verified geometrically)"
DESCRIPTION = """\
For each IMAGE print the top-K map keyframes: map id, cosine score, the keyframe's source
image, its pose when known, and with --verify the number of local-feature inliers (candidates
then re-ranked by inliers). The model is the one the map was built with (the checkpoint
recorded in the map, or --checkpoint); a different model is refused.

Low-quality queries: --query-degrade SPEC degrades each image first (e.g. 'jpeg=10'), and
--query-checkpoint P embeds the images with a query encoder (a low-quality-query student)
trained for the map's model instead; a student of another model is refused, naming both.

--json FILE writes a list with one object per image:
  {"query": PATH, "candidates": [{"map_id": INT, "score": FLOAT, "source": STR,
                                  "pose": {"position": [x,y,z], "orientation": [x,y,z,w]} | null,
                                  "inliers": INT | null}, ...]}      (best first)

Example:
  structvpr query --map maps/corridor q1.jpg q2.jpg --top-k 3 --verify --json hits.json
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--map", type=Path, required=True, metavar="MAPDIR", help="map directory (build-map)")
    p.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="query image files")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="candidates per image (default: 5)")
    p.add_argument("--min-score", type=float, default=-1.0, help="drop candidates below this cosine score")
    p.add_argument(
        "--verify", action="store_true", help="verify candidates with local features + RANSAC and re-rank by inliers"
    )
    p.add_argument(
        "--verify-candidates",
        type=int,
        default=0,
        metavar="N",
        help="with --verify: how many search results to verify (default: K)",
    )
    p.add_argument(
        "--min-inliers",
        type=int,
        default=0,
        help="with --verify: drop candidates with fewer inliers (default: 0, keep all)",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        metavar="PATH",
        help="model checkpoint (default: the one recorded in the map, else ImageNet init)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)")
    add_backend_argument(p)
    add_query_arguments(p, what="the map")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")


def run(args) -> int:
    from ..atomic import atomic_write_json
    from ..mapquery import candidate_json, detector_config, open_map, query_degradation, query_images

    conf = {
        "top_k": args.top_k,
        "min_score": args.min_score,
        "verify": args.verify,
        "verify_candidates": args.verify_candidates,
        "min_inliers": args.min_inliers,
        "degradation": args.query_degrade,
        "seed": args.seed,
    }
    # bad values fail before the model loads
    detector_config(conf, name=lambda field: "--" + field.replace("_", "-"))
    query_degradation(conf)
    mapdb, extractor = open_map(
        args.map, args.checkpoint, args.device, args.backend, query_checkpoint=args.query_checkpoint
    )
    results = []
    for path, det in query_images(mapdb, extractor, args.images, conf):
        results.append({"query": str(path), "candidates": [candidate_json(c) for c in det.candidates]})
        print(f"{path}")
        if not det.candidates:
            print("  (no candidate)")
        for rank, c in enumerate(det.candidates, start=1):
            pose = "" if c.pose is None else "  pose ({:.2f}, {:.2f}, {:.2f})".format(*c.pose.position)
            inl = "" if c.inliers is None else f"  inliers {c.inliers}"
            print(f"  {rank}. id {c.map_id}  score {c.score:.4f}{inl}  {c.source}{pose}")
    if args.json is not None:
        atomic_write_json(args.json, results)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
