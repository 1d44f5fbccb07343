"""Stage II: a fresh ImageNet RGB student learns from the triplet loss plus a distillation.

The distillation is StructVPR's (``distill_structvpr``: T 448 → 480, φ-weighted distance to
the frozen stage-I seg teacher's cached descriptors), or none for ``partition.method: none``
(then no teacher, no T and no partition are needed), or StructVPR++'s (``distill_structvpr_pp``:
global and per-label KD, CE on the student's masks) when ``model.label_features`` is on. Any
other distillation plugs in through ``distillation_name`` (see ``distillation`` for the interface).
"""

from __future__ import annotations

from ..config import to_dict
from .branches import build_branch
from .config import TrainConfig
from .distillation import build_distillation
from .distributed import seed_everything
from .stage import StageSetup, run_stage


def distillation_name(cfg: TrainConfig) -> str:
    """The distillation of stage II: "none" when the partition method says so, else StructVPR's
    (StructVPR++'s ``structvpr_pp`` when ``model.label_features`` is on)."""
    if cfg.partition.method == "none":
        return "none"
    return "structvpr_pp" if cfg.model.plus_plus is not None else "structvpr"


def train_stage2(ctx) -> dict:
    """Train the stage-II student; ``ctx`` is the run's ``RunContext``."""
    cfg = ctx.cfg
    seed_everything(cfg.seed + 3)  # the distillation's random init (T) is repeatable
    student = build_branch("rgb", cfg)
    distillation = build_distillation(distillation_name(cfg), student, cfg)
    distillation.prepare(ctx)
    setup = StageSetup(
        name="stage2",
        index=3,
        out_dir=ctx.stage_dir("stage2"),
        stage_cfg=cfg.stage2,
        branch=student,
        loader=ctx.loader("rgb"),
        train=ctx.train,
        pairs=ctx.pairs,
        val=ctx.val,
        distillation=distillation,
        checkpoint_config={
            "stage": "stage2",
            "method": cfg.partition.method,
            "image_size": list(cfg.data.image_size),
            "train": to_dict(cfg),
        },
    )
    return run_stage(setup, cfg, ctx.env, ctx.budget)
