"""The community folder format: ``database/`` and ``queries/`` of images named ``…@UTM_east@UTM_north@….jpg``.

Layouts accepted (the first that exists for the requested split wins):
``<root>/<split>/{database,queries}``, ``<root>/images/<split>/{database,queries}`` (the
deep-visual-geo-localization-benchmark layout), or ``<root>/{database,queries}`` (no splits).
Images are found recursively. A root without split folders is a test set (``split="test"`` only).
Positives of a query: database images within ``pos_dist_m``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..images import list_images
from .dataset import SPLITS, PlaceDataset, radius_neighbours
from .utm_names import parse_utm


def looks_like(root: Path) -> bool:
    """``database/`` at the root, under ``<split>/`` or under ``images/<split>/``."""
    return (
        (root / "database").is_dir()
        or any((root / s / "database").is_dir() for s in SPLITS)
        or any((root / "images" / s / "database").is_dir() for s in SPLITS)
    )


def split_dir(root: Path, split: str) -> Path:
    """The directory that holds ``database/`` and ``queries/`` for ``split``."""
    for candidate in (root / split, root / "images" / split):
        if (candidate / "database").is_dir() or (candidate / "queries").is_dir():
            return candidate
    if (root / "database").is_dir() or (root / "queries").is_dir():
        # A folder without splits is a test set: never hand it out as training data by accident.
        if split != "test":
            raise DatasetError(f"{root}: has no {split}/ split (a folder without splits is read as split 'test' only)")
        return root
    present = [s for s in SPLITS if (root / s).is_dir() or (root / "images" / s).is_dir()]
    if present:
        raise DatasetError(f"{root / split}: split {split!r} missing (present: {', '.join(present)})")
    raise DatasetError(f"{root}: no database/ and queries/ folders (folder format)")


def load_folder(root: Path, split: str = "test", pos_dist_m: float = 25.0) -> PlaceDataset:
    base = split_dir(Path(root), split)
    lists = {}
    for sub in ("database", "queries"):
        folder = base / sub
        if not folder.is_dir():
            raise DatasetError(f"{folder}: missing folder (folder format needs database/ and queries/)")
        images = list_images(folder, recursive=True)
        if not images:
            raise DatasetError(f"{folder}: no images")
        lists[sub] = images
    db_coords = np.array([parse_utm(p) for p in lists["database"]], dtype=np.float64)
    q_coords = np.array([parse_utm(p) for p in lists["queries"]], dtype=np.float64)
    return PlaceDataset(
        name=Path(root).resolve().name,
        root=Path(root),
        database=lists["database"],
        queries=lists["queries"],
        positives=radius_neighbours(db_coords, q_coords, pos_dist_m),
        db_coords=db_coords,
        q_coords=q_coords,
        kind="geo",
        format="folder",
        split=split if base != Path(root) else "",
        meta={"source": str(base), "pos_dist_m": pos_dist_m},
    )
