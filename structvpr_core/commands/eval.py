"""``structvpr eval``: Recall@N (and precision–recall for sequences) of a model on a dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data import FORMATS, SPLITS
from ._common import add_backend_argument, add_query_arguments, add_size_argument

NAME = "eval"
HELP = "Recall@N of a model on a place-recognition dataset (+ precision-recall for sequences)"
DESCRIPTION = """\
Embed the database and query images of DIR with the RGB branch (a trained --checkpoint, or the
ImageNet-initialised branch when none is given), search the database exhaustively by inner
product of L2-normalised descriptors (faiss) and print Recall@N: the fraction of queries with a
positive among their top N. For sequence data (vpr-bench, nordland) also the precision-recall
curve of each query's best match, its AUC and the recall at 100 % precision.

Formats (--format auto detects them): folder (database/ queries/, names @UTM_east@UTM_north@,
positives within --pos-dist metres; train/ val/ test/ splits), vpr-bench (ref/ query/
ground_truth.csv), pitts (datasets/*.mat dbStruct), msls (train_val/<city>/...; split test reads
the official val cities), nordland (season folders, --frame-tolerance frames).

Low-quality queries: --query-degrade SPEC degrades each query image first (the database
stays as it is), e.g. a camera stream downscaled and JPEG-compressed: 'size=160x120,jpeg=10';
random ranges ('jpeg=10..50') are drawn per query under --seed. --query-checkpoint P embeds the
queries with another model than the database's: a query encoder trained for the database model
(a low-quality-query student); any other model is refused. To sweep several degradations, see
`structvpr degrade-sweep`.

Descriptors are cached per (image list, model weights, input size, query degradation) under
$STRUCTVPR_CACHE or ~/.cache/structvpr (--cache-dir), so a second run is fast.
Results on a dataset whose path contains "synthetic" are marked synthetic.

--json FILE writes {"recall": {"1": R, ...}, "num_queries", "num_database", "descriptor_dim",
"pr": {"auc", "recall_at_100_precision", "precision": [...], "recall": [...], "thresholds": [...]}
| null, "dataset", "checkpoint", "fingerprint" (the database model), "query_checkpoint",
"query_fingerprint", "query_encoder_for", "query_degradation", "seed", "synthetic", "seconds", ...}.

Examples:
  structvpr eval --dataset datasets/corridor --json corridor.json
  structvpr eval --dataset datasets/corridor --size 160 120 --query-degrade "size=80x60,jpeg=50"
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", type=Path, required=True, metavar="DIR", help="dataset root (or a Pittsburgh .mat)")
    p.add_argument("--format", default="auto", choices=["auto", *FORMATS], help="dataset layout (default: auto-detect)")
    p.add_argument("--split", default="test", choices=SPLITS, help="split to evaluate (default: test)")
    p.add_argument(
        "--checkpoint",
        type=Path,
        metavar="PATH",
        help="RGB-branch checkpoint (default: the untrained ImageNet-initialised branch)",
    )
    p.add_argument(
        "--recall",
        type=int,
        nargs="+",
        default=[1, 5, 10, 20],
        metavar="N",
        help="Recall@N values to report (default: 1 5 10 20)",
    )
    add_size_argument(p, "network input size")
    p.add_argument(
        "--pos-dist",
        type=float,
        default=25.0,
        metavar="M",
        help="positive radius in metres for geographic formats (default: 25)",
    )
    p.add_argument(
        "--frame-tolerance", type=int, default=10, metavar="F", help="Nordland: positives within F frames (default: 10)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)")
    add_backend_argument(p)
    add_query_arguments(p, what="the database")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: 8)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON (atomically)")
    p.add_argument(
        "--save-matches",
        type=Path,
        metavar="DIR",
        help="write one picture per query beside its top-5 matches (wrong ones framed red)",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="descriptor cache (default: $STRUCTVPR_CACHE or ~/.cache/structvpr)",
    )
    p.add_argument("--no-cache", action="store_true", help="neither read nor write cached descriptors")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from ..atomic import atomic_write_json
    from ..data import detect_format, load_dataset
    from ..degrade import parse_degradation
    from ..errors import ConfigError
    from ..evaluate import evaluate, format_result
    from ..extractor import Extractor
    from ..images import check_input_size

    if any(n < 1 for n in args.recall):
        raise ConfigError(f"--recall: N must be >= 1, got {args.recall}")
    check_input_size(args.size, "--size")
    degradation = parse_degradation(args.query_degrade)  # a bad spec fails before any model loads
    fmt = detect_format(args.dataset) if args.format == "auto" else args.format
    options = {"frame_tolerance": args.frame_tolerance} if fmt == "nordland" else {}  # the one format-only flag

    dataset = load_dataset(args.dataset, format=fmt, split=args.split, pos_dist_m=args.pos_dist, **options)
    options = {"device": args.device, "image_size": tuple(args.size), "batch_size": args.batch_size}
    extractor = Extractor(args.checkpoint, backend=args.backend, **options)
    query_extractor = None
    if args.query_checkpoint is not None:
        query_extractor = Extractor(args.query_checkpoint, backend=args.backend, **options)
    result = evaluate(
        dataset,
        extractor,
        args.recall,
        cache_dir=args.cache_dir,
        use_cache=not args.no_cache,
        progress=not args.no_progress,
        save_matches=args.save_matches,
        query_extractor=query_extractor,
        query_degradation=degradation,
        seed=args.seed,
    )
    print(format_result(result))
    if args.json:
        atomic_write_json(args.json, result)
    return 0
