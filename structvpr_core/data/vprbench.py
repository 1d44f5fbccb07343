"""The VPR-Bench layout: ``ref/`` (database) and ``query/`` images plus ``ground_truth.csv``.

``ground_truth.csv`` has a header ``query_index,matching_ref_indices`` and one row per query:
its index and the space-separated indices of its matching reference images (may be empty: a
query with no true match). Index i is the i-th image of the folder in name order (numeric order
when every name is a number, as in VPR-Bench's ``0000001.jpg``). VPR-Bench itself ships the
ground truth as ``ground_truth_new.npy``, a pickled object array: pickles can run code, so it is
never loaded here; convert it once, in a trusted environment, to the CSV above.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..images import list_images
from .dataset import PlaceDataset

GT_NAME = "ground_truth.csv"


def looks_like(root: Path) -> bool:
    return (root / "ref").is_dir() and (root / "query").is_dir()


def list_frames(folder: Path) -> list[Path]:
    """Images of ``folder`` in frame order (numeric when all stems are numbers)."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: missing folder")
    files = list_images(folder)
    if not files:
        raise DatasetError(f"{folder}: no images")
    if all(p.stem.isdigit() for p in files):
        return sorted(files, key=lambda p: (int(p.stem), p.name))
    return files


def _indices(text: str, where: str) -> list[int]:
    try:
        return [int(t) for t in text.split()]
    except ValueError:
        raise DatasetError(f"{where}: expected space-separated integers, got {text!r}") from None


def read_ground_truth(path: Path, num_queries: int, num_refs: int) -> list[np.ndarray]:
    """Positives per query from ``ground_truth.csv``; queries it does not list get none."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not a UTF-8 text file") from None
    if rows and rows[0] and not rows[0][0].strip().lstrip("-").isdigit():
        rows = rows[1:]  # header
    positives: list[np.ndarray | None] = [None] * num_queries
    for line, row in enumerate(rows, start=2):
        if not row or not "".join(row).strip():
            continue
        where = f"{path}:{line}"
        if len(row) > 2:
            raise DatasetError(f"{where}: expected 'query_index,matching_ref_indices', got {len(row)} fields")
        q = _indices(row[0], where)
        if len(q) != 1:
            raise DatasetError(f"{where}: expected one query index, got {row[0]!r}")
        q = q[0]
        if not 0 <= q < num_queries:
            raise DatasetError(f"{where}: query {q} names a missing image (query/ has {num_queries})")
        if positives[q] is not None:
            raise DatasetError(f"{where}: query {q} listed twice")
        refs = _indices(row[1] if len(row) > 1 else "", where)
        bad = [r for r in refs if not 0 <= r < num_refs]
        if bad:
            raise DatasetError(f"{where}: reference {bad[0]} names a missing image (ref/ has {num_refs})")
        positives[q] = np.unique(np.asarray(refs, dtype=np.int64))
    if all(p is None for p in positives):
        raise DatasetError(f"{path}: no ground-truth rows")
    return [p if p is not None else np.zeros(0, dtype=np.int64) for p in positives]


def load_vprbench(root: Path, split: str = "test", pos_dist_m: float = 25.0) -> PlaceDataset:
    root = Path(root)
    refs, queries = list_frames(root / "ref"), list_frames(root / "query")
    gt = root / GT_NAME
    if not gt.is_file():
        hint = (
            " (ground_truth_new.npy is a pickle and is not loaded: convert it to CSV)"
            if (root / "ground_truth_new.npy").exists()
            else ""
        )
        raise DatasetError(f"{gt}: missing ground truth{hint}")
    positives = read_ground_truth(gt, len(queries), len(refs))
    return PlaceDataset(
        name=root.resolve().name,
        root=root,
        database=refs,
        queries=queries,
        positives=positives,
        db_coords=np.arange(len(refs), dtype=np.float64)[:, None],
        q_coords=np.arange(len(queries), dtype=np.float64)[:, None],
        kind="sequence",
        format="vpr-bench",
        split="",
        meta={"source": str(gt)},
    )
