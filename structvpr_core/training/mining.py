"""Training pairs and triplet mining (weak supervision as in NetVLAD, used by StructVPR).

- **Positives** of a query: database images within ``positive_m`` (10 m) when the dataset has
  coordinates (``positives: radius``), or the dataset's own positives (``ground_truth``, e.g.
  MSLS), loaded at ``positive_m``. With ``max_view_angle_deg`` and a dataset that has compass
  headings (MSLS), a positive must also look the query's way (wrapped angle difference at most
  the threshold; an unknown heading keeps the pair); the dropped ones are neither positives nor
  negatives. The *best* positive of a query — the one the current model ranks highest — is
  chosen anew at every cache refresh.
- **Negatives**: database images farther than ``negative_m`` (25 m). Images between the two
  radii are neither (they are ambiguous). Without coordinates, every non-positive is a negative.
- **Hard negatives** come from a cache refreshed every ``cache_queries`` queries: the current
  model embeds those queries, their positives and ``negative_pool`` random database images;
  faiss (exact inner product) returns, per query, the K most similar pool images that are
  negatives.

All randomness comes from the generator passed in, so every DDP rank (same seed) mines the
same tuples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DatasetError
from .config import MiningConfig


@dataclass
class TrainingPairs:
    positives: list[np.ndarray]  # per query: candidate positive database indices (sorted)
    near: list[np.ndarray]  # per query: database indices that must not be negatives (sorted)
    usable: np.ndarray  # queries with at least one positive

    def pair_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Every (query, positive) pair: the pairs of the group partition."""
        q = (
            np.concatenate([np.full(len(self.positives[i]), i, dtype=np.int64) for i in self.usable])
            if len(self.usable)
            else np.zeros(0, dtype=np.int64)
        )
        p = (
            np.concatenate([self.positives[i] for i in self.usable])
            if len(self.usable)
            else np.zeros(0, dtype=np.int64)
        )
        return q, p.astype(np.int64)


def positive_mode(dataset, cfg: MiningConfig) -> str:
    has_coords = dataset.db_coords is not None and dataset.q_coords is not None
    if cfg.positives == "auto":
        return "radius" if has_coords else "ground_truth"
    if cfg.positives == "radius" and not has_coords:
        raise DatasetError(f"{dataset.root}: mining.positives is 'radius' but the dataset has no coordinates")
    return cfg.positives


def view_angle_deg(a, b) -> np.ndarray:
    """Smallest angle between compass headings ``a`` and ``b`` (degrees, broadcast): 350 vs 10 is 20."""
    return np.abs((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64) + 180.0) % 360.0 - 180.0)


def facing_filter(dataset, positives: list[np.ndarray], max_angle: float | None) -> list[np.ndarray]:
    """Keep the positives whose heading differs from their query's by at most ``max_angle`` degrees.

    Unchanged when ``max_angle`` is None or the dataset has no headings; a NaN heading keeps the pair.
    """
    db_h, q_h = getattr(dataset, "db_heading", None), getattr(dataset, "q_heading", None)
    if max_angle is None or db_h is None or q_h is None:
        return positives
    db_h, q_h = np.asarray(db_h, dtype=np.float64), np.asarray(q_h, dtype=np.float64)
    if len(db_h) != dataset.num_database or len(q_h) != dataset.num_queries:
        raise DatasetError(
            f"{dataset.root}: {len(db_h)} database / {len(q_h)} query headings for "
            f"{dataset.num_database} database / {dataset.num_queries} query images"
        )
    kept = []
    for q, pos in enumerate(positives):
        angle = view_angle_deg(q_h[q], db_h[pos])
        kept.append(pos[np.isnan(angle) | (angle <= max_angle)])
    return kept


def build_pairs(dataset, cfg: MiningConfig) -> TrainingPairs:
    """Positives and no-negative sets of every training query of ``dataset`` (a PlaceDataset).

    In ground-truth mode ``dataset`` must have been loaded with ``pos_dist_m = positive_m``.
    """
    has_coords = dataset.db_coords is not None and dataset.q_coords is not None
    if positive_mode(dataset, cfg) == "radius":
        close = dataset.within(cfg.positive_m)
    else:
        close = [np.asarray(p, dtype=np.int64) for p in dataset.positives]
    positives = facing_filter(dataset, close, cfg.max_view_angle_deg)
    # Close images facing elsewhere stay out of the negatives: they may still show the place.
    if has_coords:
        near = [np.union1d(n, c) for n, c in zip(dataset.within(cfg.negative_m), close, strict=True)]
    else:
        near = close
    usable = np.array([i for i, p in enumerate(positives) if len(p)], dtype=np.int64)
    if usable.size == 0:
        facing = f" facing within {cfg.max_view_angle_deg} degrees" if positives is not close else ""
        raise DatasetError(
            f"{dataset.root}: no training query has a positive within {cfg.positive_m}{facing} "
            f"(split {dataset.split or '-'})"
        )
    return TrainingPairs(positives, near, usable)


def sample_pool(
    rng: np.random.Generator, num_database: int, chunk: np.ndarray, pairs: TrainingPairs, negative_pool: int
) -> np.ndarray:
    """Database indices to embed for one cache refresh: the chunk's positives plus random images."""
    pos = np.concatenate([pairs.positives[q] for q in chunk]) if len(chunk) else np.zeros(0, dtype=np.int64)
    random = rng.choice(num_database, size=min(negative_pool, num_database), replace=False)
    return np.union1d(pos, random).astype(np.int64)


def select_tuples(
    q_desc: np.ndarray, pool_desc: np.ndarray, pool: np.ndarray, chunk: np.ndarray, pairs: TrainingPairs, k: int
) -> np.ndarray:
    """Tuples [q, best positive, K hardest negatives] (rows of a (T, 2+K) int64 array).

    ``q_desc[i]`` is the descriptor of query ``chunk[i]``; ``pool_desc[j]`` of database image
    ``pool[j]`` (sorted). A query with fewer than K negatives in the pool is skipped.
    """
    import faiss

    pool = np.asarray(pool, dtype=np.int64)
    index = faiss.IndexFlatIP(pool_desc.shape[1])
    index.add(np.ascontiguousarray(pool_desc, dtype=np.float32))
    rows = []
    q_desc = np.ascontiguousarray(q_desc, dtype=np.float32)
    for i, q in enumerate(chunk):
        pos = pairs.positives[q]
        pos_rows = np.searchsorted(pool, pos)
        best = int(pos[np.argmax(pool_desc[pos_rows] @ q_desc[i])])  # the positive the model likes best
        near_in_pool = np.isin(pool, pairs.near[q]).sum()
        depth = min(len(pool), k + int(near_in_pool))
        _, found = index.search(q_desc[i : i + 1], depth)
        candidates = pool[found[0][found[0] >= 0]]
        negatives = candidates[~np.isin(candidates, pairs.near[q])][:k]
        if len(negatives) < k:
            continue
        rows.append([int(q), best, *map(int, negatives)])
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2 + k)


def epoch_queries(rng: np.random.Generator, pairs: TrainingPairs, queries_per_epoch: int) -> np.ndarray:
    """The queries of one epoch: a random order of the usable queries, cut to ``queries_per_epoch`` (0: all)."""
    order = rng.permutation(pairs.usable)
    return order[:queries_per_epoch] if queries_per_epoch else order
