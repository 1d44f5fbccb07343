"""Descriptors of a dataset, cached on disk so that a second ``structvpr eval`` skips the network.

One ``<cache>/descriptors/<key>.npz`` per image list (the database, or the queries) and per
model and query degradation: the key hashes every image's path, size and mtime with the model's
fingerprint (weights, input size), the degradation spec and, for a spec with random ranges, the
seed. So any change to one of them misses the cache, a degraded run never reads clean-query
descriptors, and the database entry is shared by every run with the same database model (a
degradation sweep, a second query model). A damaged or mismatched entry is recomputed and
replaced atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..degrade import Degradation, parse_degradation
from ..errors import DatasetError
from ..log import get_logger
from ..paths import cache_root

log = get_logger(__name__)

CACHE_VERSION = 2  # 2: one entry per image list, keyed on the query degradation too


def cache_key(paths: Sequence, fingerprint: dict, degradation: str | Degradation | None = None, seed: int = 0) -> str:
    """Changes when any image (path, size, mtime), the model (weights, input size) or the degradation change."""
    spec = parse_degradation(degradation, check_backends=False)
    h = hashlib.sha256()
    head = {
        "v": CACHE_VERSION,
        "model": fingerprint,
        "degradation": str(spec),
        "seed": seed if spec.is_random else None,
    }
    h.update(json.dumps(head, sort_keys=True).encode())
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


def embed_images(
    extractor, paths: Sequence, degradation: str | Degradation | None = None, seed: int = 0, progress: bool = True
) -> np.ndarray:
    """Descriptors (N, dim) of image files, each degraded first (``Degradation.apply_seeded``, image i
    with ``[seed, i]``); the extractor then resizes it to its input size."""
    spec = parse_degradation(degradation)
    if spec.is_identity:
        return extractor.embed_paths(paths, progress=progress)
    from tqdm import tqdm

    from ..images import read_image

    out = np.zeros((len(paths), extractor.dim), dtype=np.float32)
    step = extractor.batch_size
    with tqdm(total=len(paths), desc=f"embed [{spec}]", unit="img", disable=not progress) as bar:
        for start in range(0, len(paths), step):
            chunk = paths[start : start + step]
            images = [spec.apply_seeded(read_image(p), seed, start + i) for i, p in enumerate(chunk)]
            out[start : start + len(chunk)] = extractor.embed(images)
            bar.update(len(chunk))
    return out


def cached_descriptors(
    paths: Sequence,
    extractor,
    *,
    degradation: str | Degradation | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = True,
) -> tuple[np.ndarray, bool]:
    """(descriptors of ``paths``, degraded first, whether they came from the cache)."""
    path = None
    if use_cache:
        key = cache_key(paths, extractor.fingerprint, degradation, seed)
        path = Path(cache_dir or cache_root()) / "descriptors" / f"{key}.npz"
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as data:
                    desc = data["descriptors"]
                if desc.shape == (len(paths), extractor.dim):
                    log.debug("descriptors from the cache: %s", path)
                    return desc, True
                log.debug("%s: cached descriptors have another shape; recomputing", path)
            except (OSError, ValueError, KeyError):
                log.debug("%s: damaged cache entry; recomputing", path)  # and replaced below
    desc = embed_images(extractor, paths, degradation, seed, progress)
    if path is not None:
        atomic_write(path, lambda p: _save_npz(p, descriptors=desc))
        log.debug("descriptors cached: %s", path)
    return desc, False


def dataset_descriptors(
    dataset,
    extractor,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = True,
    *,
    query_extractor=None,
    query_degradation: str | Degradation | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """(database descriptors, query descriptors, whether both came from the cache).

    The database is embedded by ``extractor`` as it is; the queries are degraded by
    ``query_degradation`` first and embedded by ``query_extractor`` (default: ``extractor``).
    """
    opts = {"cache_dir": cache_dir, "use_cache": use_cache, "progress": progress}
    db, db_cached = cached_descriptors(dataset.database, extractor, **opts)
    q, q_cached = cached_descriptors(
        dataset.queries, query_extractor or extractor, degradation=query_degradation, seed=seed, **opts
    )
    return db, q, db_cached and q_cached
