"""``structvpr make-synthetic``: write the synthetic structured-scene benchmark."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "make-synthetic"
HELP = "generate a SYNTHETIC street-scene dataset (folder format) with exact ADE20K label maps"
DESCRIPTION = """\
Draw N procedural streets (sky, buildings with varied façades, road, sidewalks, trees, bushes,
street lights, signs, cars, buses, people) and render each from several nearby viewpoints:
database views by day in summer, query views under changed appearance (night, dusk, autumn,
winter, spring, fog, sensor noise) with other moving objects. Structure stays, appearance
changes: the controlled setting for distilling segmentation structure into the RGB branch.

Output (the directory name always contains "synthetic"; "-synthetic" is appended otherwise):
  OUT/{train,val,test}/{database,queries}/@east@north@...jpg   (folder format, 25 m positives)
  OUT/labelmaps/...png   exact label maps (ADE20K ids), mirroring the image tree
  OUT/manifest.json, OUT/SYNTHETIC.md
Places split 60/20/20 into train/val/test. The same --seed gives the same images.

Example:
  structvpr make-synthetic --out data/streets-synthetic --places 500 --seed 0
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory (name gets 'synthetic')")
    p.add_argument("--places", type=int, default=500, metavar="N", help="number of places (default: 500)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default: 0)")
    p.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=[320, 240],
        metavar=("W", "H"),
        help="image size (default: 320 240; the network resizes to its input size)",
    )
    p.add_argument("--db-views", type=int, default=2, metavar="K", help="database views per place (default: 2)")
    p.add_argument("--query-views", type=int, default=2, metavar="K", help="query views per place (default: 2)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing synthetic set at OUT")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _disk_usage(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def run(args: argparse.Namespace) -> int:
    import time

    from ..data.synthetic import generate

    started = time.perf_counter()
    out = generate(
        args.out,
        args.places,
        args.seed,
        size=tuple(args.size),
        db_views=args.db_views,
        query_views=args.query_views,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    seconds = time.perf_counter() - started
    n_images = args.places * (args.db_views + args.query_views)
    print(
        f"wrote SYNTHETIC dataset {out}: {args.places} places, {n_images} images + label maps, "
        f"{_disk_usage(out) / 1e6:.1f} MB, {seconds:.1f} s"
    )
    return 0
