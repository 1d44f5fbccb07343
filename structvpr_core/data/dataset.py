"""The one in-memory form of a place-recognition dataset, and the radius search its readers share.

Every reader (folder, VPR-Bench, Pittsburgh .mat, MSLS, Nordland) returns a ``PlaceDataset``:
database images, query images, and for each query the sorted indices of its positives in the
database. Geographic datasets also keep their UTM coordinates (so a trainer can ask for other
radii, e.g. the 10 m "non-trivial" positives of NetVLAD); sequence datasets keep frame indices.
The readers import this module; ``registry`` (``load_dataset``, ``detect_format``) imports the
readers, never the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DatasetError

SPLITS = ("train", "val", "test")


@dataclass
class PlaceDataset:
    name: str
    root: Path
    database: list[Path]
    queries: list[Path]
    positives: list[np.ndarray]  # per query: sorted int64 indices into ``database``
    db_coords: np.ndarray | None = None  # (N, 2) UTM east/north, or (N, 1) frame index
    q_coords: np.ndarray | None = None
    kind: str = "geo"  # "geo" (coordinates) or "sequence" (frame-aligned traversals)
    format: str = ""
    split: str = ""
    meta: dict = field(default_factory=dict)
    # Compass angle of each image in degrees (NaN where unknown); None when the format has none (MSLS has).
    db_heading: np.ndarray | None = None
    q_heading: np.ndarray | None = None

    @property
    def num_queries(self) -> int:
        return len(self.queries)

    @property
    def num_database(self) -> int:
        return len(self.database)

    @property
    def synthetic(self) -> bool:
        """True for generated data: its path says so (project rule: synthetic data lives under 'synthetic')."""
        return "synthetic" in str(self.root).lower()

    def within(self, radius: float) -> list[np.ndarray]:
        """Database indices within ``radius`` of each query (metres, or frames for sequences)."""
        if self.db_coords is None or self.q_coords is None:
            raise DatasetError(f"{self.root}: dataset has no coordinates; positives are only given explicitly")
        return radius_neighbours(self.db_coords, self.q_coords, radius)

    def check(self) -> PlaceDataset:
        """Raise ``DatasetError`` if the dataset is empty or its arrays disagree; return self."""
        where = self.meta.get("source", self.root)
        if not self.database:
            raise DatasetError(f"{where}: the database of split {self.split or '-'} is empty")
        if not self.queries:
            raise DatasetError(f"{where}: the queries of split {self.split or '-'} are empty")
        if len(self.positives) != len(self.queries):
            raise DatasetError(f"{where}: {len(self.positives)} positive lists for {len(self.queries)} queries")
        for i, pos in enumerate(self.positives):
            if pos.size and (pos.min() < 0 or pos.max() >= len(self.database)):
                raise DatasetError(
                    f"{where}: query {i} has a positive outside the database (0..{len(self.database) - 1})"
                )
        for coords, n, what in (
            (self.db_coords, len(self.database), "database"),
            (self.q_coords, len(self.queries), "query"),
        ):
            if coords is not None and (coords.ndim != 2 or coords.shape[0] != n):
                raise DatasetError(f"{where}: {what} coordinates have shape {coords.shape}, expected ({n}, D)")
        if self.kind not in ("geo", "sequence"):
            raise DatasetError(f"{where}: unknown dataset kind {self.kind!r}")
        return self

    def summary(self) -> str:
        with_pos = sum(1 for p in self.positives if p.size)
        tag = " [synthetic]" if self.synthetic else ""
        return (
            f"{self.name}{tag} ({self.format}, split {self.split or '-'}): {self.num_database} database, "
            f"{self.num_queries} queries ({with_pos} with positives)"
        )


def radius_neighbours(db_coords: np.ndarray, q_coords: np.ndarray, radius: float) -> list[np.ndarray]:
    """For each query, the sorted indices of database points within ``radius`` (inclusive), by KD-tree.

    Without SciPy (a runtime-only install) the same answer by brute force in float64, in blocks.
    """
    db = np.asarray(db_coords, dtype=np.float64)
    q = np.asarray(q_coords, dtype=np.float64)
    if len(db) == 0 or len(q) == 0:
        return [np.zeros(0, dtype=np.int64) for _ in range(len(q))]
    try:
        from scipy.spatial import cKDTree
    except ImportError:
        return _radius_neighbours_brute(db, q, float(radius))
    hits = cKDTree(db).query_ball_point(q, r=float(radius))
    return [np.asarray(sorted(h), dtype=np.int64) for h in hits]


def _radius_neighbours_brute(db: np.ndarray, q: np.ndarray, radius: float) -> list[np.ndarray]:
    step = max(1, (1 << 22) // len(db))  # ~32 MB of float64 distances per block
    out: list[np.ndarray] = []
    for start in range(0, len(q), step):
        d2 = ((q[start : start + step, None, :] - db[None, :, :]) ** 2).sum(axis=2)
        out.extend(np.flatnonzero(row <= radius * radius).astype(np.int64) for row in d2)
    return out
