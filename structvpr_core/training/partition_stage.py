"""The partition stage: ranks x (seg) and y (RGB) of every training pair with the stage-I models, groups and φ."""

from __future__ import annotations

import time

from ..partition import partition_pairs, retrieval_ranks, write_partition
from . import records
from .branches import architecture as branch_architecture
from .distributed import barrier
from .embed import embed


def run_partition(ctx) -> dict:
    """Embed the training split with both stage-I branches (best checkpoints) and write the partition.

    The ranks come from each branch's full descriptor (StructVPR++: x_g and the label parts).
    """
    from ..checkpoint import build_model_from_checkpoint

    cfg, env, train = ctx.cfg, ctx.env, ctx.train
    started = time.perf_counter()
    q_idx, p_idx = ctx.pairs.pair_arrays()
    ranks = {}
    for kind, stage in (("seg", "stage1_seg"), ("rgb", "stage1_rgb")):
        architecture = branch_architecture(kind, cfg)
        path = ctx.stage_dir(stage) / records.BEST
        model = build_model_from_checkpoint(path, expected_architecture=architecture).to(env.device)
        loader = ctx.loader(kind)
        kw = {"batch_size": cfg.mining.embed_batch_size, "workers": cfg.data.workers, "progress": cfg.progress}
        db = embed(model, train.database, loader, env, desc=f"partition {kind} db", **kw)
        qs = embed(model, train.queries, loader, env, desc=f"partition {kind} queries", **kw)
        ranks[kind] = retrieval_ranks(db, qs, q_idx, p_idx, cfg.partition.depth)
    part = partition_pairs(q_idx, p_idx, ranks["seg"], ranks["rgb"], cfg.partition)
    out = ctx.stage_dir("partition")
    summary = None
    if env.is_main:
        summary = write_partition(part, cfg.partition, out)
        records.write_done(
            out,
            {
                "stage": "partition",
                "pairs": len(part),
                "method": cfg.partition.method,
                "groups": summary["groups"],
                "kd_ratio": summary["kd_ratio"],
                "seconds": round(time.perf_counter() - started, 2),
            },
        )
    barrier(env)
    return records.read_done(out) or {}
