"""``structvpr degrade-sweep``: Recall@N of a dataset's queries at several degradations, table and plot."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..data import FORMATS, SPLITS
from ._common import add_backend_argument, add_size_argument, model_conf

NAME = "degrade-sweep"
HELP = "Recall@N as the queries get worse (JPEG, downscaling, ...): a table and a plot, for one or more query models"
DESCRIPTION = """\
What does a worse camera stream cost? Embed the database images of DIR once, as they are, with
the database model (--checkpoint, default the ImageNet-initialised RGB branch); then, for each
--degrade SPEC in the order given, degrade every query image, embed it (the model resizes it to
--size) and print Recall@N. With --query-checkpoint Q (repeatable) the queries are embedded by
Q as well, each a query encoder (low-quality-query student) trained for the database model: one
table and one plot line per query model, the database model's own first.

SPEC is a degradation: steps joined by commas, applied in order: size=WxH, scale=F,
interp=area|linear|cubic|nearest, jpeg=Q (1..100), gray, bits=N, h264=qp:QP, h265=qp:QP (needs
PyAV); 'none' = undegraded. Numbers may be ranges LO..HI, drawn per query under --seed.
Without --degrade: none; size=160x120,jpeg=30; jpeg=10; size=80x60,jpeg=50.

Descriptors are cached like `structvpr eval`'s (per image list, model and degradation), so a
second sweep and an eval of one of its points are fast.

--json FILE writes {"rows": [{"query_model", "degradation", "recall": {"1": R, ...}}, ...],
"database_model", "query_models", "degradations", "seed", "image_size", "dataset", ...};
--plot FILE.png draws Recall@N (the first --recall) against the degradation.

Example:
  structvpr degrade-sweep --dataset datasets/corridor --size 160 120 \\
      --degrade none --degrade jpeg=30 --degrade jpeg=10 --degrade jpeg=5 --json sweep.json --plot sweep.png
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", type=Path, required=True, metavar="DIR", help="dataset root")
    p.add_argument("--format", default="auto", choices=["auto", *FORMATS], help="dataset layout (default: auto-detect)")
    p.add_argument("--split", default="test", choices=SPLITS, help="split to evaluate (default: test)")
    p.add_argument(
        "--degrade",
        action="append",
        metavar="SPEC",
        help="a query degradation; repeat for each level (default: the four of the module's table)",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        metavar="PATH",
        help="database model (default: the ImageNet-initialised RGB branch); it also embeds the queries once",
    )
    p.add_argument(
        "--query-checkpoint",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="a further query model: a query encoder trained for the database model (repeatable)",
    )
    add_size_argument(p, "network input size of every model")
    p.add_argument("--recall", type=int, nargs="+", default=[1, 5], metavar="N", help="Recall@N values (default: 1 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of specs with ranges (query i uses [seed, i]; default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)")
    add_backend_argument(p)
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: 8)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON (atomically)")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="write the plot as a PNG")
    p.add_argument("--cache-dir", type=Path, metavar="DIR", help="descriptor cache (default: as structvpr eval)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write cached descriptors")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from .. import degrade_sweep
    from ..errors import ConfigError
    from ..images import check_input_size

    check_input_size(args.size, "--size")
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        raise ConfigError(f"--plot: {args.plot}: the plot is a PNG, give a file name ending in .png")
    conf = {
        "model": model_conf(args),
        "query_checkpoints": list(args.query_checkpoint),
        "degradations": args.degrade or list(degrade_sweep.DEFAULT_DEGRADATIONS),
        "seed": args.seed,
        "recall": args.recall,
        "dataset_format": args.format,
        "split": args.split,
        "cache_dir": args.cache_dir,
        "use_cache": not args.no_cache,
        "progress": not args.no_progress,
    }
    result = degrade_sweep.main(conf, args.dataset, json_out=args.json, plot_out=args.plot)
    print(degrade_sweep.format_table(result))
    for path in (args.json, args.plot):
        if path is not None:
            print(f"wrote {path}", file=sys.stderr)
    return 0
