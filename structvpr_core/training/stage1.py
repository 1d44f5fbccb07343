"""Stage I: the seg branch on SLME tensors and the RGB branch on images, each with the triplet loss alone
(StructVPR++: the ++ teacher, whose input also holds the label-cluster masks, and the ++ student)."""

from __future__ import annotations

from ..config import to_dict
from .branches import build_branch
from .distributed import seed_everything
from .stage import StageSetup, run_stage


def train_stage1(branch_kind: str, ctx) -> dict:
    """Train the ``seg`` or ``rgb`` branch of stage I; ``ctx`` is the run's ``RunContext``.

    With ``model.label_features`` these are the StructVPR++ teacher and student, trained with the
    triplet loss on their full descriptors (x_g and the label parts).
    """
    cfg = ctx.cfg
    name = f"stage1_{branch_kind}"
    seed_everything(cfg.seed + (1 if branch_kind == "seg" else 2))  # the random init is repeatable
    branch = build_branch(branch_kind, cfg)
    loader = ctx.loader(branch_kind)
    setup = StageSetup(
        name=name,
        index=1 if branch_kind == "seg" else 2,
        out_dir=ctx.stage_dir(name),
        stage_cfg=getattr(cfg, name),
        branch=branch,
        loader=loader,
        train=ctx.train,
        pairs=ctx.pairs,
        val=ctx.val,
        val_loader=loader,
        checkpoint_config={
            "stage": name,
            "image_size": list(cfg.data.image_size),
            "slme": to_dict(cfg.slme),
            "train": to_dict(cfg),
        },
    )
    return run_stage(setup, cfg, ctx.env, ctx.budget)
