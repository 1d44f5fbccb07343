"""Nordland: one railway line filmed in four seasons, frames aligned across the traversals.

Layout: ``<root>[/<split>]/<season>/…/<frame>.png`` with seasons among spring, summer, fall,
winter (database ``summer`` and queries ``winter`` by default, as in Patch-NetVLAD). The frame
number is the last number in an image's name (``images-01234.png`` → 1234), or its position
in name order when names carry none. A query's positives are the database frames within
``frame_tolerance`` frames (10 by default, the usual Nordland convention).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..images import list_images
from .dataset import SPLITS, PlaceDataset, radius_neighbours

SEASONS = ("spring", "summer", "fall", "winter")
_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def looks_like(root: Path) -> bool:
    """Two season folders or more, at the root or under a split folder."""

    def seasons_in(d: Path) -> int:
        return sum((d / s).is_dir() for s in SEASONS)

    return seasons_in(root) >= 2 or any(seasons_in(root / s) >= 2 for s in SPLITS)


def frame_numbers(images: list[Path], folder: Path) -> np.ndarray:
    """The frame number of each image; ``DatasetError`` if two images claim the same frame."""
    matches = [_NUMBER.search(p.stem) for p in images]
    if not all(matches):
        return np.arange(len(images), dtype=np.float64)
    frames = np.array([int(m.group(1)) for m in matches], dtype=np.int64)
    values, counts = np.unique(frames, return_counts=True)
    if (counts > 1).any():
        dup = values[counts > 1][0]
        raise DatasetError(f"{folder}: two images have frame number {dup}")
    return frames.astype(np.float64)


def load_nordland(
    root: Path,
    split: str = "test",
    pos_dist_m: float = 25.0,
    database_name: str = "summer",
    query_name: str = "winter",
    frame_tolerance: int = 10,
) -> PlaceDataset:
    root = Path(root)
    base = root / split if (root / split / database_name).is_dir() else root
    if frame_tolerance < 0:
        raise DatasetError(f"frame tolerance must be >= 0, got {frame_tolerance}")
    lists, frames = {}, {}
    for role, name in (("database", database_name), ("queries", query_name)):
        folder = base / name
        if not folder.is_dir():
            present = [s for s in SEASONS if (base / s).is_dir()]
            raise DatasetError(f"{folder}: missing traversal folder (present: {', '.join(present) or 'none'})")
        images = list_images(folder, recursive=True)
        if not images:
            raise DatasetError(f"{folder}: no images")
        # Sort by frame so that database index order follows the route.
        numbers = frame_numbers(images, folder)
        order = np.argsort(numbers, kind="stable")
        lists[role] = [images[i] for i in order]
        frames[role] = numbers[order][:, None]
    return PlaceDataset(
        name=f"nordland-{database_name}-{query_name}",
        root=root,
        database=lists["database"],
        queries=lists["queries"],
        positives=radius_neighbours(frames["database"], frames["queries"], frame_tolerance),
        db_coords=frames["database"],
        q_coords=frames["queries"],
        kind="sequence",
        format="nordland",
        split=split if base != root else "",
        meta={"source": str(base), "frame_tolerance": frame_tolerance},
    )
