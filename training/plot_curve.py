#!/usr/bin/env python3
"""Plot a training stage's curve: validation Recall@N per epoch (and the mean training loss) from its log.csv.

Examples:
  python training/plot_curve.py --log runs/nordland64/stage1_rgb/log.csv --out curve.png
  python training/plot_curve.py --log RUN/stage1_rgb/log.csv --out docs/nordland64_training.png \\
      --metric R@1 R@5 --start R@1=0.076 R@5=0.216 --title "Nordland64 val, 256x128"

--start METRIC=VALUE draws the untrained model's figure (e.g. `structvpr eval` of the ImageNet
start at the same input size) as epoch 0 and a dotted line: what training has to beat.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout too


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="plot_curve.py",
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--log", required=True, type=Path, help="a stage's log.csv (RUN/<stage>/log.csv)")
    p.add_argument("--out", required=True, type=Path, help="PNG to write")
    p.add_argument("--metric", nargs="+", default=["R@1"], help="validation columns to draw (default R@1)")
    p.add_argument("--start", nargs="*", default=[], metavar="METRIC=VALUE", help="the untrained model's figures")
    p.add_argument("--title", default="", help="figure title")
    p.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from structvpr_core.errors import ConfigError, StructVPRError

    try:
        start = {}
        for item in args.start:
            name, sep, value = item.partition("=")
            try:
                start[name] = float(value)
            except ValueError:
                sep = ""
            if not sep or not name:
                raise ConfigError(f"--start {item!r}: expected METRIC=VALUE, e.g. R@1=0.076")
        from structvpr_core.training.curves import plot_curve

        out = plot_curve(args.log, args.out, metrics=args.metric, start=start, title=args.title)
    except StructVPRError as e:
        if args.debug:
            raise
        print(f"plot_curve.py: error: {e}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
