"""StructVPR's weighted distillation (Shen et al., CVPR 2023, Sec. 3.5): stage II of the method.

Per tuple (q, p, n_1..n_K), with student (RGB) descriptors x^D, teacher (seg) descriptors x^S
and T a linear layer 448 → 480 trained with the student::

    L_kd = φ(q, p) · mean_k Σ_{I ∈ {q, p, n_k}} ‖x^S_I − T(x^D_I)‖²     (``losses_kd.distillation_loss``)

The teacher is the frozen stage-I seg branch (``RUN/stage1_seg/best.pt``). It never changes
during the stage, so its descriptors of every training image are computed once and cached in
``RUN/teacher_cache/`` (``database.npy``, ``queries.npy`` and ``meta.json``: the teacher
checkpoint's SHA-256, image size, SLME config and image counts; a cache whose meta differs is
recomputed). φ(q, p) comes from the partition stage's ``pairs.csv`` (methods gp-d, gp-s, gp-r,
constant) and is 1 for "all".
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..atomic import atomic_write, atomic_write_json
from ..config import to_dict
from ..errors import ConfigError, DatasetError
from ..losses import Projector
from ..models import SEG_ARCHITECTURE, SegBranch
from . import records
from .config import TrainConfig
from .context import RunContext
from .distillation import Distillation, TrainBatch
from .distributed import barrier
from .embed import embed
from .losses_kd import distillation_loss

TEACHER_CACHE = "teacher_cache"
Phi = Callable[[np.ndarray, np.ndarray], np.ndarray]  # φ(query indices, positive indices) -> (N,) float32


class StructVPRDistillation(Distillation):
    """T (448 → 480) + the φ-weighted distance to the cached seg-teacher descriptors."""

    name = "structvpr"

    def __init__(self, student: nn.Module, cfg: TrainConfig) -> None:
        self.projector = Projector(student.dim, SegBranch.dim)
        self.teacher_db: np.ndarray | None = None
        self.teacher_q: np.ndarray | None = None
        self.phi: Phi | None = None

    def modules(self) -> dict[str, nn.Module]:
        return {"projector": self.projector}

    def prepare(self, ctx: RunContext) -> None:
        db, q = teacher_descriptors(ctx)
        self.use_teacher(db, q, phi_function(ctx))

    def use_teacher(self, teacher_db: np.ndarray, teacher_q: np.ndarray, phi: Phi) -> None:
        """Set the teacher's descriptors of the training split (database, queries) and φ."""
        out_dim = self.projector.linear.out_features
        if teacher_db.shape[1] != out_dim or teacher_q.shape[1] != out_dim:
            raise ConfigError(f"teacher descriptors have {teacher_db.shape[1]} dimensions, T maps to {out_dim}")
        self.teacher_db, self.teacher_q, self.phi = teacher_db, teacher_q, phi

    def forward(self, branch: nn.Module, modules: nn.ModuleDict, x: torch.Tensor) -> dict[str, torch.Tensor]:
        d = branch(x)
        return {"descriptors": d, "projected": modules["projector"](d)}

    def loss(self, batch: TrainBatch, outputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        projected = outputs["projected"]
        rows = batch.rows
        teacher = self._teacher_tuples(rows).to(projected.device)
        phi = torch.from_numpy(self.phi(rows[:, 0], rows[:, 1])).to(projected.device)
        # Computed even when every φ of the batch is 0, so that T takes part in every step (DDP
        # requires every rank to use the same parameters); T then gets a zero gradient.
        return distillation_loss(projected, teacher, phi), {}

    def _teacher_tuples(self, rows: np.ndarray) -> torch.Tensor:
        """(B, T, 480) teacher descriptors of the tuple rows [q, p, n…] (a query, then database images)."""
        t_q = np.asarray(self.teacher_q[rows[:, 0]])[:, None]
        t_db = np.asarray(self.teacher_db[rows[:, 1:].reshape(-1)]).reshape(len(rows), rows.shape[1] - 1, -1)
        return torch.from_numpy(np.concatenate([t_q, t_db], axis=1).astype(np.float32))


def teacher_descriptors(
    ctx: RunContext,
    *,
    cache_name: str = TEACHER_CACHE,
    architecture: str = SEG_ARCHITECTURE,
    wrap: Callable[[nn.Module], nn.Module] | None = None,
    extra_meta: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(database, queries) descriptors of the training split by the stage-I seg teacher, cached on disk.

    The defaults are StructVPR's. Another distillation may cache other teacher outputs: ``wrap``
    turns the loaded teacher into the module whose (unnormalised) rows are cached, under
    ``RUN/<cache_name>/``, with ``extra_meta`` in the meta that must match.
    """
    from ..checkpoint import build_model_from_checkpoint
    from ..weights import file_sha256

    cfg, env, train = ctx.cfg, ctx.env, ctx.train
    ckpt = ctx.stage_dir("stage1_seg") / records.BEST
    if not ckpt.is_file():
        raise ConfigError(f"{ckpt}: stage II needs the stage-I seg teacher; run the stage1_seg stage first")
    cache = ctx.out / cache_name
    meta = {
        "teacher_sha256": file_sha256(ckpt),
        "image_size": list(cfg.data.image_size),
        "slme": to_dict(cfg.slme),
        "root": str(cfg.data.root),
        "split": cfg.data.train_split,
        "num_database": train.num_database,
        "num_queries": train.num_queries,
        **(extra_meta or {}),
    }
    try:
        if json.loads((cache / "meta.json").read_text(encoding="utf-8")) == meta:
            return np.load(cache / "database.npy", mmap_mode="r"), np.load(cache / "queries.npy", mmap_mode="r")
    except (OSError, ValueError):
        pass
    teacher = build_model_from_checkpoint(ckpt, expected_architecture=architecture)
    if wrap is not None:
        teacher = wrap(teacher)
    teacher = teacher.to(env.device)
    loader = ctx.loader("seg")
    kw = {"batch_size": cfg.mining.embed_batch_size, "workers": cfg.data.workers, "progress": cfg.progress}
    kw["normalise"] = wrap is None
    db = embed(teacher, train.database, loader, env, desc="teacher db", **kw)
    qs = embed(teacher, train.queries, loader, env, desc="teacher queries", **kw)
    if env.is_main:
        (cache / "meta.json").unlink(missing_ok=True)  # meta last: its presence means the arrays are complete
        _save_npy(cache / "database.npy", db)
        _save_npy(cache / "queries.npy", qs)
        atomic_write_json(cache / "meta.json", meta)
    barrier(env)
    return db, qs


def _save_npy(path, array: np.ndarray) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to a name
            np.save(f, array)

    atomic_write(path, write)


def phi_function(ctx: RunContext) -> Phi:
    """φ(q, p) for arrays of query and positive indices, from the partition (constant 1 for "all")."""
    from ..partition import read_partition

    method = ctx.cfg.partition.method
    if method == "all":
        return lambda q, p: np.ones(len(q), dtype=np.float32)
    part_dir = ctx.stage_dir("partition")
    if not (part_dir / "partition.json").is_file():
        raise ConfigError(f"{part_dir}: method {method!r} needs the partition; run the partition stage first")
    summary = json.loads((part_dir / "partition.json").read_text(encoding="utf-8"))
    if summary.get("config") != to_dict(ctx.cfg.partition):
        raise ConfigError(
            f"{part_dir}: the partition was made with {summary.get('config')}, the config now says "
            f"{to_dict(ctx.cfg.partition)}; run the partition stage again (or use --tag)"
        )
    lookup = read_partition(part_dir).lookup()

    def phi(q: np.ndarray, p: np.ndarray) -> np.ndarray:
        try:
            return np.array([lookup[(int(a), int(b))] for a, b in zip(q, p, strict=True)], dtype=np.float32)
        except KeyError as e:
            raise DatasetError(
                f"{part_dir / 'pairs.csv'}: no φ for training pair {e.args[0]}; the partition was "
                "made on other data, run the partition stage again"
            ) from None

    return phi
