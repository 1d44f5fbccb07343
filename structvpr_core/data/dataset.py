"""The one in-memory form of a place-recognition dataset, and ``load_dataset`` for every format.

Every reader (folder, VPR-Bench, Pittsburgh .mat, MSLS, Nordland) returns a ``PlaceDataset``:
database images, query images, and for each query the sorted indices of its positives in the
database. Geographic datasets also keep their UTM coordinates (so a trainer can ask for other
radii, e.g. the 10 m "non-trivial" positives of NetVLAD); sequence datasets keep frame indices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DatasetError

FORMATS = ("folder", "vpr-bench", "pitts", "msls", "nordland")
SPLITS = ("train", "val", "test")


@dataclass
class PlaceDataset:
    name: str
    root: Path
    database: list[Path]
    queries: list[Path]
    positives: list[np.ndarray]           # per query: sorted int64 indices into ``database``
    db_coords: np.ndarray | None = None   # (N, 2) UTM east/north, or (N, 1) frame index
    q_coords: np.ndarray | None = None
    kind: str = "geo"                     # "geo" (coordinates) or "sequence" (frame-aligned traversals)
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

    def check(self) -> "PlaceDataset":
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
                raise DatasetError(f"{where}: query {i} has a positive outside the database (0..{len(self.database) - 1})")
        for coords, n, what in ((self.db_coords, len(self.database), "database"), (self.q_coords, len(self.queries), "query")):
            if coords is not None and (coords.ndim != 2 or coords.shape[0] != n):
                raise DatasetError(f"{where}: {what} coordinates have shape {coords.shape}, expected ({n}, D)")
        if self.kind not in ("geo", "sequence"):
            raise DatasetError(f"{where}: unknown dataset kind {self.kind!r}")
        return self

    def summary(self) -> str:
        with_pos = sum(1 for p in self.positives if p.size)
        tag = " [synthetic]" if self.synthetic else ""
        return (f"{self.name}{tag} ({self.format}, split {self.split or '-'}): {self.num_database} database, "
                f"{self.num_queries} queries ({with_pos} with positives)")


def radius_neighbours(db_coords: np.ndarray, q_coords: np.ndarray, radius: float) -> list[np.ndarray]:
    """For each query, the sorted indices of database points within ``radius`` (inclusive), by KD-tree."""
    from scipy.spatial import cKDTree

    db = np.asarray(db_coords, dtype=np.float64)
    q = np.asarray(q_coords, dtype=np.float64)
    if len(db) == 0 or len(q) == 0:
        return [np.zeros(0, dtype=np.int64) for _ in range(len(q))]
    hits = cKDTree(db).query_ball_point(q, r=float(radius))
    return [np.asarray(sorted(h), dtype=np.int64) for h in hits]


def detect_format(root: str | Path) -> str:
    """Guess the format of the dataset at ``root`` from its layout (no image is read)."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: no such dataset directory")
    if root.is_file():
        if root.suffix.lower() == ".mat":
            return "pitts"
        raise DatasetError(f"{root}: a dataset is a directory (or a Pittsburgh .mat file)")
    if (root / "datasets").is_dir() and any((root / "datasets").glob("*.mat")):
        return "pitts"
    from . import msls, nordland

    if msls.looks_like(root):
        return "msls"
    if (root / "ref").is_dir() and (root / "query").is_dir():
        return "vpr-bench"
    if (root / "database").is_dir() or any((root / s / "database").is_dir() for s in SPLITS) \
            or any((root / "images" / s / "database").is_dir() for s in SPLITS):
        return "folder"
    if nordland.looks_like(root):
        return "nordland"
    raise DatasetError(
        f"{root}: cannot tell the dataset format (expected database/ + queries/, ref/ + query/, "
        f"datasets/*.mat, train_val/<city>/ or two Nordland season folders); pass --format")


def load_dataset(root: str | Path, format: str = "auto", split: str = "test", pos_dist_m: float = 25.0,
                 **options) -> PlaceDataset:
    """Read the dataset at ``root`` in ``format`` ("auto" detects it) as a ``PlaceDataset``.

    ``split`` selects train/val/test where the format has splits; ``pos_dist_m`` is the positive
    radius of geographic formats (25 m, the community's convention). Format-specific options:
    folder: none; pitts: ``mat`` (path of the dbStruct file); msls: ``cities`` (list), ``exclude_panos``;
    nordland: ``database_name``, ``query_name``, ``frame_tolerance`` (frames, default 10).
    """
    root = Path(root)
    if format == "auto":
        format = detect_format(root)
    if format not in FORMATS:
        raise DatasetError(f"unknown dataset format {format!r} (known: auto, {', '.join(FORMATS)})")
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
    if not root.exists():
        raise DatasetError(f"{root}: no such dataset directory")
    if not (pos_dist_m > 0):
        raise DatasetError(f"positive radius must be > 0 m, got {pos_dist_m}")
    if format == "folder":
        from .folder import load_folder as loader
    elif format == "vpr-bench":
        from .vprbench import load_vprbench as loader
    elif format == "pitts":
        from .pitts import load_pitts as loader
    elif format == "msls":
        from .msls import load_msls as loader
    else:
        from .nordland import load_nordland as loader
    try:
        dataset = loader(root, split=split, pos_dist_m=pos_dist_m, **options)
    except TypeError as e:
        # An option meant for another format: name it instead of a Python traceback.
        if "unexpected keyword" in str(e):
            raise DatasetError(f"format {format}: {e}") from None
        raise
    return dataset.check()
