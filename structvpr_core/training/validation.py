"""What a stage validates after an epoch, and which result is the best (``best.pt``).

The epoch loop (``stage``) knows a validation only through this small interface:

- ``name``: the key of its result in ``state.pt``'s ``best``, ``done.json``'s ``best_<name>``
  and the checkpoints' ``extra``;
- ``columns(cfg)``: its ``log.csv`` columns; ``log_values(result)`` fills them;
- ``__call__(setup, cfg, env) -> result``: plain data (it is saved with ``weights_only`` torch);
- ``better(result, best)``: whether ``result`` beats ``best`` (``None``: nothing validated yet).

Two exist:

- ``RecallValidation`` (stages I and II): Recall@N of the branch on a place validation split
  (``val_queries`` fixed random queries); the higher Recall@1 is the better.
- ``DistillationValidation`` (the lqq stage; no place labels): the distillation's own loss and
  named parts on held-out images, with the student in eval mode; the lower ``select`` part is
  the better. The images are read by the distillation's ``tuple_loader`` at epoch 0 (so each
  image's random draws are the same at every validation), or once per named *view* (the lqq
  stage: each degradation of the set, so every held-out image is seen at every level); the
  figures are then means over the views, and ``<select>@<view>`` gives the selected part per
  view. With a ``reference`` branch (the student's initialisation, e.g. the teacher itself) the
  same figures for it are added once, as ``<part>_init`` (``<select>_init@<view>``): what
  training has to beat. Every rank computes the whole (small) set.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .distillation import TrainBatch
from .distributed import DistEnv
from .embed import embed
from .inputs import InputLoader, TupleDataset


class RecallValidation:
    """Recall@N of the branch on a place dataset's validation split."""

    name = "recalls"

    def __init__(self, val, loader: InputLoader):
        self.val = val  # PlaceDataset, validation split
        self.loader = loader

    def columns(self, cfg) -> list[str]:
        return [f"R@{n}" for n in cfg.recall_ns]

    def log_values(self, result: dict[int, float]) -> dict[str, float]:
        return {f"R@{n}": r for n, r in result.items()}

    def better(self, result: dict[int, float], best: dict[int, float] | None) -> bool:
        return best is None or result[1] > best[1]

    def __call__(self, setup, cfg, env: DistEnv) -> dict[int, float]:
        """Recall@N of ``setup.branch`` (``val_queries`` fixed random queries, or all)."""
        from ..evaluate import recall_at_n

        val = self.val
        q_idx = np.arange(val.num_queries)
        if setup.stage_cfg.val_queries and setup.stage_cfg.val_queries < len(q_idx):
            q_idx = np.sort(
                np.random.default_rng([cfg.seed, 7]).choice(q_idx, setup.stage_cfg.val_queries, replace=False)
            )
        kw = {"batch_size": cfg.mining.embed_batch_size, "workers": cfg.data.workers, "progress": cfg.progress}
        db = embed(setup.branch, val.database, self.loader, env, desc="validate db", **kw)
        qs = embed(setup.branch, [val.queries[i] for i in q_idx], self.loader, env, desc="validate queries", **kw)
        recalls = recall_at_n(db, qs, [val.positives[i] for i in q_idx], ns=tuple(cfg.recall_ns))
        return {int(n): float(r) for n, r in recalls.items()}


class DistillationValidation:
    """The distillation's loss and its ``parts`` on held-out images; the lowest ``select`` is the best."""

    name = "val"

    def __init__(
        self,
        paths: list[Path],
        parts: tuple[str, ...],
        select: str,
        *,
        views: dict[str, Callable[[Path], torch.Tensor]] | None = None,
        reference: nn.Module | None = None,
        batch_size: int = 16,
    ):
        if select not in ("loss", *parts):
            raise ValueError(f"select must be 'loss' or one of the parts {parts}, got {select!r}")
        self.paths = list(paths)
        self.parts = ("loss", *parts)
        self.select = select
        self.views = dict(views or {})  # name -> tuple loader; empty: the distillation's at epoch 0
        self.reference = reference
        self.batch_size = batch_size
        self._reference_result: dict[str, float] | None = None

    def names(self, suffix: str = "") -> list[str]:
        """The result's keys: the parts (means over the views), then the selected part per view."""
        return [*(f"{p}{suffix}" for p in self.parts), *(f"{self.select}{suffix}@{v}" for v in self.views)]

    def columns(self, cfg) -> list[str]:
        init = self.names("_init") if self.reference is not None else []
        return [f"val_{k}" for k in self.names() + init]

    def log_values(self, result: dict[str, float]) -> dict[str, float]:
        return {f"val_{k}": v for k, v in result.items()}

    def better(self, result: dict[str, float], best: dict[str, float] | None) -> bool:
        return best is None or result[self.select] < best[self.select]

    def __call__(self, setup, cfg, env: DistEnv) -> dict[str, float]:
        result = self.evaluate(setup.branch, setup, cfg, env)
        if self.reference is not None:
            if self._reference_result is None:
                self._reference_result = self.evaluate(self.reference, setup, cfg, env, desc="validate init")
            result.update(zip(self.names("_init"), self._reference_result.values(), strict=True))
        return result

    def evaluate(self, branch: nn.Module, setup, cfg, env: DistEnv, desc: str = "validate") -> dict[str, float]:
        """The result (see ``names``) with ``branch`` as the student."""
        views = self.views or {"": setup.distillation.tuple_loader(setup.loader, 0)}
        per_view = {
            v: self._evaluate_view(branch, images, setup, cfg, env, f"{desc} {v}".strip())
            for v, images in views.items()
        }
        means = [float(np.mean([r[p] for r in per_view.values()])) for p in self.parts]
        per = [per_view[v][self.select] for v in self.views]
        return dict(zip(self.names(), means + per, strict=True))

    @torch.no_grad()
    def _evaluate_view(self, branch: nn.Module, images, setup, cfg, env: DistEnv, desc: str) -> dict[str, float]:
        """The image-weighted means of the loss and its parts over the held-out images read by ``images``."""
        from tqdm import tqdm

        distillation = setup.distillation
        extras = nn.ModuleDict(distillation.modules()).eval()
        branch.eval()
        data = TupleDataset(np.arange(len(self.paths))[:, None], self.paths, self.paths, images)
        loader = DataLoader(data, batch_size=self.batch_size, shuffle=False, num_workers=cfg.data.workers)
        sums = dict.fromkeys(self.parts, 0.0)
        with tqdm(
            total=len(data), desc=desc, unit="img", leave=False, disable=not (cfg.progress and env.is_main)
        ) as bar:
            for x, rows in loader:
                x = x.to(env.device)
                b, t = x.shape[:2]
                outputs = distillation.forward(branch, extras, x.flatten(0, 1))
                outputs = {k: v.float().view(b, t, *v.shape[1:]) for k, v in outputs.items()}
                term, named = distillation.loss(TrainBatch(images=x, rows=rows.numpy()), outputs)
                values = {"loss": term, **named}
                for p in self.parts:
                    sums[p] += float(values[p]) * b
                bar.update(b)
        return {p: s / max(len(data), 1) for p, s in sums.items()}
