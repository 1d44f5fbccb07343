#!/usr/bin/env python3
"""Train StructVPR (stage I, group partition and φ, stage II) or a low-quality-query student (stage lqq).

Examples:
  python training/train.py --config config/train_synthetic.yaml --out runs/synthetic
  python training/train.py --config config/lqq_corridor.yaml --out runs/lqq
  python training/train.py --config config/train_msls.yaml --out runs/msls --stages partition,stage2 --resume
  python training/train.py --config F --out RUN --stages partition,stage2 --tag all --set partition.method=all
  torchrun --nproc_per_node=4 training/train.py --config config/train_pitts30k.yaml --out runs/pitts

Everything goes under RUN/<stage>/ (see structvpr_core/training/run.py and records.py):
best.pt (best validation Recall@1), last.pt, state.pt (resume), log.csv (per epoch: losses and
validation R@N), steps.csv (per step losses), done.json. RUN/stage2/best.pt is the final
student, loadable with `structvpr eval --checkpoint` and the Extractor. RUN/lqq/best.pt is a
low-quality-query student: a query encoder for the maps its teacher builds (no place labels:
it learns from any image folders or rosbag2 topics, see config/lqq_corridor.yaml). Stop with
Ctrl-C or a kill at any time and rerun with --resume: the stage continues from its last
finished epoch.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout too


def build_parser() -> argparse.ArgumentParser:
    from structvpr_core.training.config import STAGES

    p = argparse.ArgumentParser(
        prog="train.py",
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, type=Path, help="training YAML (config/train_*.yaml)")
    p.add_argument("--out", required=True, type=Path, help="run directory; each stage writes RUN/<stage>/")
    p.add_argument(
        "--stages",
        default=None,
        help=f"comma-separated stages to run, in this order: {','.join(STAGES)} "
        "(default: the config's `stages`, else the four StructVPR stages)",
    )
    p.add_argument(
        "--resume", action="store_true", help="skip finished stages and continue unfinished ones from their last epoch"
    )
    p.add_argument(
        "--device",
        default="auto",
        help="auto (cuda if available), cpu or cuda[:N]; under torchrun each process takes cuda:LOCAL_RANK",
    )
    p.add_argument("--seed", type=int, default=None, help="override the config's seed")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set partition.method=gp-s --set stage2.epochs=3 (repeatable)",
    )
    p.add_argument(
        "--tag",
        default=None,
        help="write partition, stage 2 and lqq to RUN/partition-TAG, RUN/stage2-TAG and RUN/lqq-TAG "
        "(ablations sharing stage I)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per process (default: torch's choice)")
    p.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="stop (exit code 3, like a killed run) after this many optimiser steps; for testing --resume",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from structvpr_core.errors import ConfigError, StructVPRError
    from structvpr_core.log import configure_cli_logging

    configure_cli_logging("train", args.debug)  # the library's progress and warnings, as "train: ..."

    env = None
    try:
        from structvpr_core.training.config import load_train_config

        overrides = list(args.set)
        if args.seed is not None:
            overrides.append(f"seed={args.seed}")
        if args.no_progress:
            overrides.append("progress=false")
        if args.tag is not None and (not args.tag or "/" in args.tag or args.tag.startswith(".")):
            raise ConfigError(f"--tag: expected a plain name, got {args.tag!r}")
        if args.max_steps is not None and args.max_steps < 1:
            raise ConfigError("--max-steps: must be >= 1")
        cfg = load_train_config(args.config, overrides)

        import torch

        from structvpr_core.training.budget import StopRequested
        from structvpr_core.training.distributed import init_distributed, shutdown
        from structvpr_core.training.run import run_training

        if args.threads:
            torch.set_num_threads(args.threads)
        env = init_distributed(args.device)
        try:
            results = run_training(
                cfg,
                args.out,
                env,
                stages=[s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None,
                resume=args.resume,
                tag=args.tag,
                max_steps=args.max_steps,
            )
        except StopRequested as e:
            if env.is_main:
                print(f"train.py: {e}; rerun with --resume to continue", file=sys.stderr)
            return 3
        finally:
            shutdown(env)
        if env.is_main and "stage2" in results:
            final = args.out / (f"stage2-{args.tag}" if args.tag else "stage2") / "best.pt"
            print(f"train.py: final student: {final}", file=sys.stderr)
        if env.is_main and "lqq" in results:
            final = args.out / (f"lqq-{args.tag}" if args.tag else "lqq") / "best.pt"
            print(f"train.py: low-quality-query student (for its teacher's maps): {final}", file=sys.stderr)
        return 0
    except StructVPRError as e:
        if args.debug:
            raise
        if env is None or env.is_main:
            print(f"train.py: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("train.py: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
