"""Stage II: a fresh ImageNet RGB student and T (448 → 480) learn from the triplet loss plus the
φ-weighted distillation from the frozen stage-I seg teacher.

The teacher never changes during the stage, so its descriptors of every training image are
computed once and cached in ``RUN/teacher_cache/`` (``database.npy``, ``queries.npy`` and
``meta.json``: the teacher checkpoint's SHA-256, image size, SLME config and image counts; a
cache whose meta differs is recomputed). φ(q, p) comes from the partition stage's
``pairs.csv`` (methods gp-d, gp-s, gp-r, constant), is 1 for "all" and the distillation term is
dropped for "none" (then no teacher, no T and no partition are needed).
"""

from __future__ import annotations

import json

import numpy as np

from ..atomic import atomic_write, atomic_write_json
from ..config import to_dict
from ..errors import ConfigError, DatasetError
from . import records
from .distributed import barrier, seed_everything
from .embed import embed
from .stage import StageSetup, run_stage

TEACHER_CACHE = "teacher_cache"


def teacher_descriptors(ctx) -> tuple[np.ndarray, np.ndarray]:
    """(database, queries) descriptors of the training split by the stage-I seg teacher, cached on disk."""
    from ..checkpoint import build_model_from_checkpoint
    from ..weights import file_sha256

    cfg, env, train = ctx.cfg, ctx.env, ctx.train
    ckpt = ctx.stage_dir("stage1_seg") / records.BEST
    if not ckpt.is_file():
        raise ConfigError(f"{ckpt}: stage II needs the stage-I seg teacher; run the stage1_seg stage first")
    cache = ctx.out / TEACHER_CACHE
    meta = {"teacher_sha256": file_sha256(ckpt), "image_size": list(cfg.data.image_size), "slme": to_dict(cfg.slme),
            "root": str(cfg.data.root), "split": cfg.data.train_split,
            "num_database": train.num_database, "num_queries": train.num_queries}
    try:
        if json.loads((cache / "meta.json").read_text(encoding="utf-8")) == meta:
            return np.load(cache / "database.npy", mmap_mode="r"), np.load(cache / "queries.npy", mmap_mode="r")
    except (OSError, ValueError):
        pass
    teacher = build_model_from_checkpoint(ckpt, expected_architecture="structvpr-seg-mobilenetl").to(env.device)
    loader = ctx.loader("seg")
    kw = dict(batch_size=cfg.mining.embed_batch_size, workers=cfg.data.workers, progress=cfg.progress)
    db = embed(teacher, train.database, loader, env, desc="teacher db", **kw)
    qs = embed(teacher, train.queries, loader, env, desc="teacher queries", **kw)
    if env.is_main:
        (cache / "meta.json").unlink(missing_ok=True)     # meta last: its presence means the arrays are complete
        _save_npy(cache / "database.npy", db)
        _save_npy(cache / "queries.npy", qs)
        atomic_write_json(cache / "meta.json", meta)
    barrier(env)
    return db, qs


def _save_npy(path, array: np.ndarray) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:           # a file object: np.save would append .npy to a name
            np.save(f, array)
    atomic_write(path, write)


def phi_function(ctx):
    """φ(q, p) for arrays of query and positive indices, from the partition (or constant for all/none)."""
    from ..partition import read_partition

    method = ctx.cfg.partition.method
    if method == "all":
        return lambda q, p: np.ones(len(q), dtype=np.float32)
    part_dir = ctx.stage_dir("partition")
    if not (part_dir / "partition.json").is_file():
        raise ConfigError(f"{part_dir}: method {method!r} needs the partition; run the partition stage first")
    summary = json.loads((part_dir / "partition.json").read_text(encoding="utf-8"))
    if summary.get("config") != to_dict(ctx.cfg.partition):
        raise ConfigError(f"{part_dir}: the partition was made with {summary.get('config')}, the config now says "
                          f"{to_dict(ctx.cfg.partition)}; run the partition stage again (or use --tag)")
    lookup = read_partition(part_dir).lookup()

    def phi(q: np.ndarray, p: np.ndarray) -> np.ndarray:
        try:
            return np.array([lookup[(int(a), int(b))] for a, b in zip(q, p)], dtype=np.float32)
        except KeyError as e:
            raise DatasetError(f"{part_dir / 'pairs.csv'}: no φ for training pair {e.args[0]}; the partition was "
                               "made on other data, run the partition stage again") from None
    return phi


def train_stage2(ctx) -> dict:
    from ..losses import Projector
    from ..models import build_rgb_branch

    cfg = ctx.cfg
    method = cfg.partition.method
    seed_everything(cfg.seed + 3)            # T's random init is repeatable
    student = build_rgb_branch(pretrained=True)
    projector = teacher_db = teacher_q = phi = None
    if method != "none":
        projector = Projector(student.dim, 480)
        teacher_db, teacher_q = teacher_descriptors(ctx)
        if teacher_db.shape[1] != projector.linear.out_features:
            raise ConfigError(f"teacher descriptors have {teacher_db.shape[1]} dimensions, T maps to "
                              f"{projector.linear.out_features}")
        phi = phi_function(ctx)
    setup = StageSetup(
        name="stage2", index=3, out_dir=ctx.stage_dir("stage2"), stage_cfg=cfg.stage2, branch=student,
        loader=ctx.loader("rgb"), train=ctx.train, pairs=ctx.pairs, val=ctx.val, projector=projector,
        teacher_db=teacher_db, teacher_q=teacher_q, phi=phi,
        checkpoint_config={"stage": "stage2", "method": method, "image_size": list(cfg.data.image_size),
                           "train": to_dict(cfg)})
    return run_stage(setup, cfg, ctx.env, ctx.budget)
