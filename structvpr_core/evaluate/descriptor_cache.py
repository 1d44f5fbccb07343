"""Descriptors of a dataset, cached on disk so that a second ``structvpr eval`` skips the network.

One ``<cache>/descriptors/<key>.npz`` per (dataset files, model): the key hashes every image's
path, size and mtime together with the model's fingerprint (weights, input size), so any change
to either misses the cache. A damaged or mismatched entry is recomputed and replaced atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..errors import DatasetError
from ..log import get_logger
from ..paths import cache_root

log = get_logger(__name__)

CACHE_VERSION = 1


def cache_key(dataset, fingerprint: dict) -> str:
    """Changes when any image (path, size, mtime), the model weights or the input size change."""
    h = hashlib.sha256()
    h.update(json.dumps({"v": CACHE_VERSION, "model": fingerprint}, sort_keys=True).encode())
    for role, paths in (("db", dataset.database), ("q", dataset.queries)):
        h.update(role.encode())
        for p in paths:
            try:
                st = os.stat(p)
            except OSError:
                raise DatasetError(f"{p}: image listed by the dataset is missing") from None
            h.update(f"{os.path.abspath(p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def _save_npz(path: Path, **arrays) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a bare name
        np.savez(f, **arrays)


def dataset_descriptors(
    dataset, extractor, cache_dir: str | Path | None = None, use_cache: bool = True, progress: bool = True
) -> tuple[np.ndarray, np.ndarray, bool]:
    """(database descriptors, query descriptors, whether they came from the cache)."""
    path = None
    if use_cache:
        key = cache_key(dataset, extractor.fingerprint)
        path = Path(cache_dir or cache_root()) / "descriptors" / f"{key}.npz"
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as data:
                    db, q = data["database"], data["queries"]
                if db.shape == (dataset.num_database, extractor.dim) and q.shape == (
                    dataset.num_queries,
                    extractor.dim,
                ):
                    log.debug("descriptors from the cache: %s", path)
                    return db, q, True
                log.debug("%s: cached descriptors have another shape; recomputing", path)
            except (OSError, ValueError, KeyError):
                log.debug("%s: damaged cache entry; recomputing", path)  # and replaced below
    db = extractor.embed_paths(dataset.database, progress=progress)
    q = extractor.embed_paths(dataset.queries, progress=progress)
    if path is not None:
        atomic_write(path, lambda p: _save_npz(p, database=db, queries=q))
        log.debug("descriptors cached: %s", path)
    return db, q, False
