"""``MapDatabase``: a place map, composed of a descriptor index, a keyframe store and stamp arrays.

Ids start at 1 (0 means "not in the map" in detector output) and equal faiss position + 1, so no
id map is needed: the index (``index``), the keyframe store (``store``) and the stamp/session
arrays (``stamps``) all hold keyframe id p + 1 at position p. The directory format and its
crash-safe save live in ``storage``. This class keeps them in step under one lock.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MapError
from ..log import get_logger
from . import storage
from .index import DescriptorIndex
from .integrity import check_descriptors, check_file_digest, file_sha256
from .keyframe import Keyframe, as_keyframe
from .stamps import SessionStamps
from .storage import DB_FILE, INDEX_FILE
from .store import KeyframeStore

log = get_logger(__name__)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class MapDatabase:
    """A place map: descriptors (faiss) + keyframes (SQLite). Thread-safe (one internal lock)."""

    def __init__(
        self,
        fingerprint: dict,
        dim: int,
        index: str = "flat",
        index_params: dict | None = None,
        *,
        use_gpu: bool = True,
        meta: dict | None = None,
    ):
        """Prefer ``create`` / ``load``."""
        self._index = DescriptorIndex(index, dim, index_params, use_gpu=use_gpu)  # validates all three
        self._fingerprint = dict(fingerprint)
        self.meta = dict(meta or {})  # free-form JSON (checkpoint used, local feature kind, ...)
        self._lock = threading.RLock()
        self._path: Path | None = None
        self._created = _now()
        self._store = KeyframeStore()
        self._stamps = SessionStamps()

    @classmethod
    def create(
        cls,
        fingerprint: dict,
        dim: int,
        index: str = "flat",
        index_params: dict | None = None,
        *,
        use_gpu: bool = True,
        meta: dict | None = None,
    ) -> MapDatabase:
        """An empty in-memory map for descriptors of ``dim`` made by the model ``fingerprint``.

        ``index``: flat, ivfflat, ivfpq or hnsw (see ``mapdb.index``), ``index_params`` overriding
        its defaults. ``meta``: extra JSON kept in the manifest (e.g. ``{"checkpoint": ...,
        "features": "sift"}``).
        """
        return cls(fingerprint, dim, index, index_params, use_gpu=use_gpu, meta=meta)

    # -- properties ----------------------------------------------------------------------------

    @property
    def fingerprint(self) -> dict:
        return dict(self._fingerprint)

    @property
    def dim(self) -> int:
        return self._index.dim

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def index_type(self) -> str:
        return self._index.kind

    @property
    def index_params(self) -> dict:
        return dict(self._index.params)

    @property
    def trained(self) -> bool:
        return self._index.trained

    @property
    def num_with_features(self) -> int:
        return self._store.num_with_features

    def __len__(self) -> int:
        return self._store.count

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Set the search-time parameter of the index: ``nprobe`` (IVF lists visited, ivfflat /
        ivfpq) or ``ef_search`` (HNSW candidate list). Recorded in the manifest by ``save``.

        MapError when a value is not a positive int or the index type has no such parameter.
        """
        with self._lock:
            self._index.set_search_params(nprobe, ef_search)

    def check_fingerprint(
        self, expected: dict, where: str | None = None, *, query_encoder_for: dict | None = None
    ) -> None:
        """MapError when the model ``expected`` may not query this map (``fingerprint.accepts``).

        ``query_encoder_for``: the teacher's fingerprint when the model is a low-quality-query
        student (``Extractor.query_encoder_for``); it may query the maps its teacher built.
        """
        storage.check_fingerprint(
            expected,
            self._fingerprint,
            where or str(self._path or "map"),
            query_encoder_for,
            map_name=self.meta.get("checkpoint") or None,
        )

    # -- adding and training -------------------------------------------------------------------

    def add(
        self, descriptors: np.ndarray, keyframes: Sequence[Keyframe | dict], local_features: Sequence[Any] | None = None
    ) -> list[int]:
        """Append keyframes with their descriptors; returns their new ids (consecutive, from 1).

        ``local_features``: per keyframe a ``verify.LocalFeatures``, raw bytes, or None.
        """
        x = self._index.check(descriptors)
        check_descriptors(x, "map.add", np.arange(len(self) + 1, len(self) + 1 + len(x)))  # L2-normalised only
        kfs = [as_keyframe(k) for k in keyframes]
        if len(kfs) != len(x):
            raise ValueError(f"{len(x)} descriptors but {len(kfs)} keyframes")
        if local_features is not None and len(local_features) != len(x):
            raise ValueError(f"{len(x)} descriptors but {len(local_features)} local feature entries")
        with self._lock:
            # SQLite first: if it fails, the index is untouched and the map stays consistent.
            ids = self._store.insert(kfs, local_features)
            self._stamps.extend([k.stamp for k in kfs], [k.session for k in kfs])
            self._index.add(x)  # trains an IVF index on reaching auto_train_at
        return ids

    def train(self, sample: np.ndarray | None = None) -> None:
        """Train the IVF index (on ``sample`` or on the vectors added so far) and move them in."""
        with self._lock:
            self._index.train(sample)

    # -- search --------------------------------------------------------------------------------

    def search(
        self,
        descriptors: np.ndarray,
        k: int,
        min_score: float = -math.inf,
        exclude: Callable[[Keyframe], bool] | None = None,
        *,
        exclude_ids: Iterable[int] | None = None,
    ) -> list[list[tuple[int, float]]]:
        """Top-``k`` ``(id, score)`` per query (inner product, best first), scores >= ``min_score``.

        ``exclude_ids`` are filtered inside faiss (an IDSelector: cheap, e.g. temporal
        exclusion via ``recent_ids``). ``exclude(keyframe) -> bool`` is a general predicate,
        applied to over-fetched results (fetching more until ``k`` pass or the map is exhausted).
        """
        q = self._index.check(descriptors)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        by_id = None if exclude is None else (lambda kid: exclude(self._store.keyframe(kid)))
        with self._lock:
            return self._index.search(q, k, min_score, exclude_ids, by_id)

    @property
    def exact_vectors(self) -> bool:
        """Whether ``vectors`` can read the stored descriptors back (not from a trained ivfpq index)."""
        return self._index.exact_vectors

    def vectors(self, ids: Iterable[int]) -> np.ndarray:
        """The stored descriptors of keyframes ``ids``, (n, dim) float32 in the order given.

        MapError for an id not in the map, or when the index holds only compressed codes (ivfpq).
        """
        pos = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64).reshape(-1) - 1
        with self._lock:
            bad = pos[(pos < 0) | (pos >= self._index.ntotal)]
            if bad.size:
                raise MapError(f"keyframe id {int(bad[0]) + 1} is not in the map (ids 1..{self._index.ntotal})")
            return self._index.reconstruct(pos)

    def recent_ids(self, session: str, newer_than: float) -> np.ndarray:
        """Ids of keyframes of ``session`` with stamp > ``newer_than`` (for temporal exclusion)."""
        with self._lock:
            return self._stamps.recent_ids(session, newer_than)

    # -- keyframes -----------------------------------------------------------------------------

    def keyframe(self, id: int) -> Keyframe:
        with self._lock:
            return self._store.keyframe(int(id))

    def local_features(self, id: int):
        """The stored ``verify.LocalFeatures`` of keyframe ``id``, or None if none were stored."""
        with self._lock:
            return self._store.local_features(int(id))

    def keyframes(self) -> Iterator[Keyframe]:
        """All keyframes in id order (as they were when the iteration started)."""
        with self._lock:
            snapshot = self._store.keyframes()
        yield from snapshot

    # -- save and load -------------------------------------------------------------------------

    def manifest(self) -> dict:
        return storage.build_manifest(
            fingerprint=self._fingerprint,
            dim=self._index.dim,
            index_type=self._index.kind,
            trained=self._index.trained,
            params=self._index.params,
            keyframes=self._store.count,
            with_local_features=self._store.num_with_features,
            sessions=self._stamps.sessions,
            meta=self.meta,
            created=self._created,
            saved=_now(),
        )

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the map to ``path`` (default: where it was loaded from / last saved) atomically.

        A crash at any point leaves a loadable map: see ``storage`` for the protocol.
        """
        target = Path(path) if path is not None else self._path
        if target is None:
            raise MapError("save(): no path given and the map was never saved or loaded")
        target = target.absolute()
        with self._lock:
            storage.save_map_dir(target, self._write_files, self.manifest(), self.estimated_bytes())
            self._store.rebase(target / DB_FILE)  # the saved file now holds every keyframe
            self._path = target
        return target

    def estimated_bytes(self) -> int:
        """About the disk space a save of this map takes."""
        with self._lock:
            return int(self._index.estimated_bytes() + self._store.estimated_bytes() + 16384)

    def save_or_fallback(self, path: str | os.PathLike, fallbacks: Sequence[Path]) -> tuple[Path, list[str]]:
        """Save to ``path``; when that fails, to the first of ``fallbacks`` where it works.

        Returns (where the map was saved, the failures on the way, one line each). MapError
        listing every failure when no location worked: the keyframes added since the last save
        are then only in memory.
        """
        failures = []
        for where in [Path(path), *fallbacks]:
            try:
                return self.save(where), failures
            except MapError as e:
                failures.append(str(e))
        raise MapError("the map could not be saved anywhere: " + " | ".join(failures))

    def _write_files(self, directory: Path) -> None:
        self._index.write(directory / INDEX_FILE)
        self._write_db(directory / DB_FILE)

    def _write_db(self, dest: Path) -> None:
        # Its own method so that a test can make it fail (a full disk in the middle of a save).
        self._store.write(dest)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        expected_fingerprint: dict | None = None,
        *,
        query_encoder_for: dict | None = None,
        use_gpu: bool = True,
    ) -> MapDatabase:
        """Open a saved map. MapError (one line, naming the file) on anything wrong with it.

        Checks, cheapest first: manifest (format, version, the schema of every field, its own
        checksum), the model fingerprint against ``expected_fingerprint`` (a query encoder for the
        map's model passes with its ``query_encoder_for``: see ``check_fingerprint``), presence,
        sizes and sha256 of the files, the index's type, dim and count, every descriptor finite
        and of unit norm, the keyframe table's columns and ids. A map saved before checksums
        existed loads with a warning (``structvpr map-info --verify`` checks it fully,
        ``structvpr map-repair`` adds them).
        """
        path = storage.recover(Path(path).absolute())
        manifest = storage.read_manifest(path)
        sealed = storage.check_manifest_seal(path, manifest)
        idx_info = manifest["index"]
        meta = manifest.get("meta")
        self = cls(
            manifest["fingerprint"],
            manifest["descriptor_dim"],
            idx_info["type"],
            idx_info.get("params"),
            use_gpu=use_gpu,
            meta=meta if isinstance(meta, dict) else None,
        )
        self._path = path
        self._created = manifest.get("created", self._created)
        if expected_fingerprint is not None:
            self.check_fingerprint(expected_fingerprint, where=str(path), query_encoder_for=query_encoder_for)
        storage.check_files(path, manifest)
        sums = storage.file_checksums(manifest)
        count = manifest["counts"]["keyframes"]
        # The keyframe file (local features: ~130 KB a keyframe) is hashed in a thread while the
        # index is hashed, read and checked (hashlib and file reads release the GIL).
        with ThreadPoolExecutor(max_workers=1) as pool:
            db_digest = pool.submit(file_sha256, path / DB_FILE) if sums[DB_FILE] is not None else None
            self._index.read(path / INDEX_FILE, trained=bool(idx_info.get("trained", True)), sha256=sums[INDEX_FILE])
            if self._index.ntotal != count:
                raise MapError(f"{path / INDEX_FILE}: holds {self._index.ntotal} descriptors, manifest says {count}")
            self._index.check_integrity(str(path / INDEX_FILE))
            if db_digest is not None:
                check_file_digest(path / DB_FILE, db_digest.result(), sums[DB_FILE])
        rows = self._store.attach(path / DB_FILE, count)
        self._stamps.extend([st for st, _ in rows], [se for _, se in rows])
        if not sealed:
            log.warning(
                "%s: saved by an older structvpr without checksums: its files are not verified "
                "(check it with structvpr map-info --verify, then add checksums with structvpr map-repair)",
                path,
            )
        return self

    def close(self) -> None:
        with self._lock:
            self._store.close()
