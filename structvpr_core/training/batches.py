"""Where a stage's training batches come from, epoch by epoch: tuples mined from place labels, or plain images.

The epoch loop (``stage``) asks its source for one ``Epoch`` at a time: ``total`` items (the
progress bar counts them in ``unit``) and ``chunks``, a lazy iterator of ``(batches, done)``:
the batches of one chunk, each ``(x, rows)`` with ``x`` (B, T, C, H, W) as the distillation's
``tuple_loader`` makes the images and ``rows`` (B, T) int64, and how many of the epoch's items
are accounted for once the chunk has trained. A chunk is made only after the previous one has
trained (mining embeds with the current model); the loop sets train mode before each chunk.
Each DDP rank takes its share of every global batch (``DistributedSampler``, shuffled with the
run's seed and a new order per chunk and epoch).

- ``MinedTuples`` (stages I and II: place labels). The epoch's queries (a seeded random order,
  cut to ``queries_per_epoch``) are taken ``mining.cache_queries`` at a time; for each chunk the
  current model embeds the chunk and a database pool and tuples [q, p, n…] are mined
  (``mining.select_tuples``); rows index ``train.queries`` then ``train.database``.
- ``ImageBatches`` (the lqq stage: no labels, nothing mined). Every training image once per
  epoch (or a seeded random ``images_per_epoch`` of them), shuffled, one chunk; T = 1 and
  ``rows`` hold the image's index into ``paths``. Tuples of one image have no triplet term.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .embed import embed
from .inputs import TupleDataset
from .mining import TrainingPairs, epoch_queries, sample_pool, select_tuples

Batch = tuple[torch.Tensor, torch.Tensor]  # x (B, T, C, H, W), rows (B, T) int64


@dataclass
class Epoch:
    """One epoch of a source: ``total`` items in ``unit``, and its chunks (see the module docstring)."""

    total: int
    unit: str
    chunks: Iterator[tuple[Iterable[Batch], int]]


class MinedTuples:
    """Tuples mined with the current model from a place dataset's training split (stages I and II)."""

    def __init__(self, train, pairs: TrainingPairs):
        self.train = train  # PlaceDataset, training split
        self.pairs = pairs

    def epoch(self, loop, epoch: int) -> Epoch:
        """The epoch's queries, mined and trained chunk by chunk; ``loop`` is the running ``StageLoop``."""
        setup, cfg = loop.setup, loop.cfg
        rng = np.random.default_rng([cfg.seed, setup.index, epoch])
        queries = epoch_queries(rng, self.pairs, setup.stage_cfg.queries_per_epoch)
        return Epoch(total=len(queries), unit="q", chunks=self._chunks(loop, epoch, rng, queries))

    def _chunks(self, loop, epoch: int, rng: np.random.Generator, queries: np.ndarray):
        chunk_size = loop.cfg.mining.cache_queries
        for ci, start in enumerate(range(0, len(queries), chunk_size)):
            chunk = queries[start : start + chunk_size]
            tuples = self.mine(loop, rng, chunk)
            done = min(start + len(chunk), len(queries))
            if not len(tuples):
                yield (), done
                continue
            data = TupleDataset(tuples, self.train.queries, self.train.database, _tuple_images(loop, epoch))
            yield shuffled_batches(data, loop, epoch * 100_000 + ci), done  # a new order for every chunk

    def mine(self, loop, rng: np.random.Generator, chunk: np.ndarray) -> np.ndarray:
        """Tuples [q, p, n…] of a chunk of queries, with the current model (embeds the chunk and a pool)."""
        setup, cfg, train = loop.setup, loop.cfg, self.train
        pool = sample_pool(rng, train.num_database, chunk, self.pairs, cfg.mining.negative_pool)
        kw = {"batch_size": cfg.mining.embed_batch_size, "workers": cfg.data.workers, "progress": cfg.progress}
        q_desc = embed(
            setup.branch, [train.queries[i] for i in chunk], setup.loader, loop.env, desc="mine queries", **kw
        )
        pool_desc = embed(
            setup.branch, [train.database[i] for i in pool], setup.loader, loop.env, desc="mine pool", **kw
        )
        return select_tuples(q_desc, pool_desc, pool, chunk, self.pairs, cfg.mining.negatives_per_query)


class ImageBatches:
    """Single images, no labels and no mining: a shuffled pass over ``paths`` per epoch (the lqq stage)."""

    def __init__(self, paths: list[Path], images_per_epoch: int = 0):
        self.paths = list(paths)
        self.images_per_epoch = int(images_per_epoch)

    def epoch(self, loop, epoch: int) -> Epoch:
        idx = np.arange(len(self.paths))
        if 0 < self.images_per_epoch < len(idx):
            rng = np.random.default_rng([loop.cfg.seed, loop.setup.index, epoch])
            idx = np.sort(rng.choice(idx, self.images_per_epoch, replace=False))
        data = TupleDataset(idx[:, None], self.paths, self.paths, _tuple_images(loop, epoch))
        return Epoch(total=len(idx), unit="img", chunks=iter([(shuffled_batches(data, loop, epoch), len(idx))]))


def _tuple_images(loop, epoch: int):
    setup = loop.setup
    return setup.distillation.tuple_loader(setup.loader, epoch)


def shuffled_batches(data: Dataset, loop, sampler_epoch: int) -> DataLoader:
    """This rank's share of shuffled batches of ``data`` (the order seeded by the run's seed and ``sampler_epoch``)."""
    env = loop.env
    sampler = DistributedSampler(data, num_replicas=env.world, rank=env.rank, shuffle=True, seed=loop.cfg.seed)
    sampler.set_epoch(sampler_epoch)
    return DataLoader(
        data,
        batch_size=loop.per_rank,
        sampler=sampler,
        num_workers=loop.cfg.data.workers,
        pin_memory=env.device.type == "cuda",
    )
