"""A training run: the data, the stage directories and the stages in order.

Run directory (``--out RUN``)::

    RUN/config.json            the resolved config of the last invocation (``config-<tag>.json`` with --tag)
    RUN/stage1_seg/            stage I seg branch   (records: state.pt best.pt last.pt log.csv steps.csv done.json)
    RUN/stage1_rgb/            stage I RGB branch   (same files)
    RUN/partition[-TAG]/       pairs.csv partition.json phi_histogram.png done.json
    RUN/teacher_cache/         stage-I teacher descriptors of the training split (teacher_cache_pp/ for StructVPR++)
    RUN/stage2[-TAG]/          stage II student     (same files as stage I; best.pt is the final model)
    RUN/lqq[-TAG]/             low-quality-query student (same files; best.pt names its teacher)
    RUN/lqq_frames/            frames extracted from the lqq stage's rosbag2 topics (PNG)

The stages run are the config's ``stages`` (default: the four StructVPR stages), or
``--stages``. The StructVPR stages read the place dataset (``data``); the lqq stage reads only
its own image sources (``lqq``). ``--tag`` puts the partition, stage II and lqq of an ablation
(e.g. ``--set partition.method=all``, ``--set lqq.w_ickd=0``) beside the others while sharing
stage I. A stage with ``done.json`` is complete: ``--resume``
skips it; a stage with ``state.pt`` continues from its last finished epoch with ``--resume``.
Without ``--resume`` a stage that already has outputs is an error (nothing is overwritten).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import atomic_write_json
from ..config import to_dict
from ..errors import ConfigError
from ..log import get_logger
from . import records
from .budget import StepBudget
from .config import PLACE_STAGES, STAGES, TrainConfig, check_stages
from .context import RunContext
from .distributed import DistEnv, barrier
from .mining import build_pairs, positive_mode

log = get_logger(__name__)


def ensure_synthetic(cfg: TrainConfig, env: DistEnv) -> None:
    """Generate the configured synthetic set when ``data.root`` does not exist yet (rank 0)."""
    syn, root = cfg.data.synthetic, Path(cfg.data.root)
    if syn is None or root.exists():
        return
    if env.is_main:
        from ..data.synthetic import generate

        log.info("generating a synthetic set of %d places at %s", syn.places, root)
        made = generate(
            root,
            syn.places,
            syn.seed,
            size=tuple(syn.size),
            db_views=syn.db_views,
            query_views=syn.query_views,
            progress=cfg.progress,
            splits=tuple(syn.splits) if syn.splits is not None else None,
            lookalike=syn.lookalike,
            repaint=syn.repaint,
        )
        if made != root:
            raise ConfigError(f"data.root: the generator wrote {made}, expected {root}")
    barrier(env)


def load_data(ctx: RunContext) -> None:
    from ..data import load_dataset

    d, m = ctx.cfg.data, ctx.cfg.mining
    probe = load_dataset(d.root, d.format, split=d.train_split, pos_dist_m=m.negative_m)
    if positive_mode(probe, m) == "ground_truth" and m.positive_m != m.negative_m:
        # The dataset's own positive rule (e.g. MSLS) at the positive radius.
        probe = load_dataset(d.root, d.format, split=d.train_split, pos_dist_m=m.positive_m)
    ctx.train = probe
    ctx.pairs = build_pairs(probe, m)
    ctx.val = load_dataset(d.root, d.format, split=d.val_split) if d.val_split else None


def _check_config(ctx: RunContext, resume: bool) -> None:
    name = f"config-{ctx.tag}.json" if ctx.tag else "config.json"
    path = ctx.out / name
    current = to_dict(ctx.cfg)
    if resume and path.is_file():
        before = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(k for k in set(before) | set(current) if before.get(k) != current.get(k))
        if changed and ctx.env.is_main:
            log.warning("resuming with changed config sections: %s", ", ".join(changed))
    if ctx.env.is_main:
        atomic_write_json(path, current)


def run_training(
    cfg: TrainConfig,
    out: str | Path,
    env: DistEnv,
    *,
    stages: list[str] | None = None,
    resume: bool = False,
    tag: str | None = None,
    max_steps: int | None = None,
) -> dict:
    """Run the selected stages (default: the config's ``stages``) in order; return {stage: its done.json content}."""
    from .lqq_stage import train_lqq
    from .partition_stage import run_partition
    from .stage1 import train_stage1
    from .stage2 import train_stage2

    stages = list(stages or cfg.stages)
    check_stages(stages, cfg, "--stages")
    ctx = RunContext(cfg=cfg, out=Path(out), env=env, tag=tag, budget=StepBudget(max_steps))
    todo = []
    for stage in (s for s in STAGES if s in stages):
        d = ctx.stage_dir(stage)
        if (d / records.DONE).is_file():
            if not resume:
                raise ConfigError(f"{d}: stage already complete; pass --resume to skip it, or use another --out/--tag")
            continue
        if d.exists() and any(d.iterdir()) and not resume:
            raise ConfigError(f"{d}: holds an unfinished stage; pass --resume to continue it")
        todo.append(stage)
    if env.is_main:
        ctx.out.mkdir(parents=True, exist_ok=True)
    barrier(env)
    _check_config(ctx, resume)
    results = {s: records.read_done(ctx.stage_dir(s)) for s in stages if s not in todo}
    if not todo:
        return results
    if any(s in PLACE_STAGES for s in todo):
        ensure_synthetic(cfg, env)
        load_data(ctx)
    for stage in todo:
        if stage == "partition":
            result = run_partition(ctx)
        elif stage == "stage2":
            result = train_stage2(ctx)
        elif stage == "lqq":
            result = train_lqq(ctx)
        else:
            result = train_stage1(stage.split("_")[1], ctx)
        results[stage] = result
        if env.is_main:
            synthetic = stage in PLACE_STAGES and ctx.train.synthetic
            log.info("%s done%s: %s", stage, " (synthetic data)" if synthetic else "", describe(result))
    return results


def describe(result: dict) -> str:
    if "pairs" in result:
        groups = ", ".join(f"{k} {v['count']} ({v['ratio']:.1%})" for k, v in result["groups"].items())
        return f"{result['pairs']} pairs, {groups}, φ > 0 for {result['kd_ratio']:.1%}"
    recalls = result.get("best_recalls") or {}
    rec = ", ".join(f"R@{n} {r:.3f}" for n, r in recalls.items())
    val = result.get("best_val") or {}
    if "mse" in val:
        before = f", {val['mse_init']:.5f} before training" if "mse_init" in val else ""
        rec = f"validation MSE {val['mse']:.5f}{before}"
    return f"{result.get('epochs')} epochs, best epoch {result.get('best_epoch')}" + (f" ({rec})" if rec else "")
