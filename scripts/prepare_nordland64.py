#!/usr/bin/env python3
"""Arrange the Nordland 64x32 frames of the seqslam repository as the folder set train_nordland64.yaml reads.

    git clone https://github.com/TimQuelch/seqslam            (datasets/nordland_trimmed: summer/ winter/)
    python scripts/prepare_nordland64.py --src seqslam/datasets/nordland_trimmed --out data/nordland64

Place i (0-based) is frame images-{10*(i+1):05d}.png of both seasons (the summer and winter
passes are frame-aligned), placed at east = 20*i m, north = 0, so the usual radii apply: a
positive within 10 m is the same place, 25 m accepts +-1 place, negatives lie beyond 25 m.

    OUT/train/{database,queries}/   places 0..1399
    OUT/val/{database,queries}/     places 1400..1799
    names: @<east>@0.00@<season>-images-NNNNN.png; database/ = summer, queries/ = winter

A winter frame the source does not have (the repository leaves out dark tunnel frames) is left
out of the queries; a missing summer frame is an error. Frames not 64x32 are resized to it
(area averaging). The rest of the route is left out on purpose (a test set for later).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout too

SIZE = (64, 32)
SPLITS = (("train", 0, 1400), ("val", 1400, 1800))


def place_name(place: int, season: str) -> str:
    return f"@{20.0 * place:.2f}@0.00@{season}-images-{10 * (place + 1):05d}.png"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, type=Path, help="datasets/nordland_trimmed (summer/ and winter/ inside)")
    p.add_argument("--out", default=Path("data/nordland64"), type=Path, help="output root (default data/nordland64)")
    args = p.parse_args(argv)
    import cv2

    from structvpr_core.images import resize_image

    for season in ("summer", "winter"):
        if not (args.src / season).is_dir():
            print(f"prepare_nordland64.py: error: {args.src / season}: not a directory", file=sys.stderr)
            return 1
    for split, first, end in SPLITS:
        counts = {}
        for season, kind in (("summer", "database"), ("winter", "queries")):
            out = args.out / split / kind
            out.mkdir(parents=True, exist_ok=True)
            counts[kind] = 0
            for place in range(first, end):
                src = args.src / season / f"images-{10 * (place + 1):05d}.png"
                image = cv2.imread(str(src), cv2.IMREAD_COLOR) if src.is_file() else None
                if image is None:
                    if season == "summer":
                        print(f"prepare_nordland64.py: error: {src}: missing or unreadable", file=sys.stderr)
                        return 1
                    continue
                if (image.shape[1], image.shape[0]) != SIZE:
                    image = resize_image(image, SIZE)
                cv2.imwrite(str(out / place_name(place, season)), image)
                counts[kind] += 1
        print(f"{args.out / split}: {counts['database']} database (summer), {counts['queries']} queries (winter)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
