#!/usr/bin/env python3
"""Compare training variants with confidence intervals: stage I once per seed, stage II per variant, all evaluated.

Examples:
  python training/experiment.py --config config/experiment_synthetic.yaml --out runs/exp --threads 1
  python training/experiment.py --config config/experiment_synthetic.yaml --out runs/exp --report-only

Per seed OUT/seed<S>/<family>/ is a train.py run directory (stage I, then partition-<variant>
and stage2-<variant> for each variant), OUT/seed<S>/eval/<model>.npz the cached evaluation of
each model on the held-out split. OUT/results.csv, OUT/summary.md and OUT/recall.png are
rewritten after every model, so a partial experiment is summarised as far as it got. Stop it at
any time and rerun the same command: finished stages and evaluations are reused.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout too


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="experiment.py",
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, type=Path, help="experiment YAML (config/experiment_*.yaml)")
    p.add_argument("--out", required=True, type=Path, help="experiment directory (continued when it exists)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an experiment config value, e.g. --set 'seeds=[0]' (repeatable)",
    )
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda[:N]")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--report-only", action="store_true", help="only rewrite the report from the evaluations present")
    p.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from structvpr_core.errors import StructVPRError
    from structvpr_core.log import configure_cli_logging

    configure_cli_logging("experiment", args.debug)
    try:
        from structvpr_core.training.experiment import (
            check_variants,
            is_synthetic,
            load_experiment_config,
            run_experiment,
        )
        from structvpr_core.training.experiment_report import write_report

        exp = load_experiment_config(args.config, args.set)
        check_variants(exp)
        if args.report_only:
            print(write_report(args.out, exp, is_synthetic(exp)))
            return 0
        import torch

        from structvpr_core.training.distributed import init_distributed

        if args.threads:
            torch.set_num_threads(args.threads)
        started = time.perf_counter()
        summary = run_experiment(exp, args.out, init_distributed(args.device), config_path=str(args.config))
        print(f"experiment.py: {summary} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
        print(summary)
        return 0
    except StructVPRError as e:
        if args.debug:
            raise
        print(f"experiment.py: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("experiment.py: interrupted; rerun the same command to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
