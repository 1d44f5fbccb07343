"""The map database: global descriptors in a faiss index, keyframe metadata in SQLite.

A map is a directory::

    MAPDIR/manifest.json      format + version, model fingerprint, dim, index type/params,
                              counts, creation time, sizes of the other files
    MAPDIR/index.faiss        the faiss index (position p holds keyframe id p + 1)
    MAPDIR/keyframes.sqlite   one row per keyframe: id, stamp, pose, gps, session, source,
                              compact local features (npz bytes) for geometric verification

Ids start at 1 (0 means "not in the map" in detector output) and equal faiss position + 1,
so no id map is needed. Saving writes a complete new directory beside the target, fsyncs it
and swaps it in by rename: a crash at any point leaves a loadable map (see ``save``).

Index types: ``flat`` (exact inner product, default), ``ivfflat`` (inverted lists of full
vectors: exact scores, searches ``nprobe`` of ``nlist`` lists; ``build-map``'s default from 50 000
keyframes: top-1 agreement 0.998 at 1.65 ms on 10^6 synthetic 448-d descriptors, see
docs/performance.md), ``ivfpq`` (compressed, for memory-bound large maps) and ``hnsw`` (graph,
fast approximate search, no training). The IVF types need training: vectors stay in an exact
flat index until ``train()`` is called or ``auto_train_at`` vectors are reached (0 = only by
``train()``). ``set_search_params`` changes ``nprobe`` / ``ef_search`` of a map. With GPUs reported by faiss, flat/IVF searches run on ``index_cpu_to_all_gpus``
(untested here: this machine has no GPU).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .atomic import fsync_dir, fsync_file
from .errors import MapError
from .fingerprint import FINGERPRINT_KEYS, fingerprint_mismatch
from .geometry import Pose

log = logging.getLogger(__name__)

FORMAT = "structvpr-map"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
DB_FILE = "keyframes.sqlite"
NEW_SUFFIX = ".structvpr-new"   # sibling directories used by the atomic swap in save()
OLD_SUFFIX = ".structvpr-old"
INDEX_TYPES = ("flat", "ivfflat", "ivfpq", "hnsw")
IVF_TYPES = ("ivfflat", "ivfpq")         # need training; search parameter nprobe
MIN_TRAIN = 256                         # vectors needed to train an IVF index

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keyframes (
    id INTEGER PRIMARY KEY,
    stamp REAL,
    px REAL, py REAL, pz REAL, qx REAL, qy REAL, qz REAL, qw REAL,
    lat REAL, lon REAL,
    session TEXT NOT NULL,
    source TEXT NOT NULL,
    features BLOB
);
"""
_COLS = "id, stamp, px, py, pz, qx, qy, qz, qw, lat, lon, session, source"


def _faiss():
    import faiss  # lazy: importing this module must stay cheap
    return faiss


@dataclass
class Keyframe:
    id: int = 0
    stamp: float | None = None
    pose: Pose | None = None
    gps: tuple[float, float] | None = None
    session: str = "default"
    source: str = ""

    def to_dict(self) -> dict:
        return {"id": self.id, "stamp": self.stamp, "pose": self.pose.to_dict() if self.pose else None,
                "gps": list(self.gps) if self.gps else None, "session": self.session, "source": self.source}


def _row_to_keyframe(row) -> Keyframe:
    kid, stamp, px, py, pz, qx, qy, qz, qw, lat, lon, session, source = row
    pose = None if px is None else Pose((px, py, pz), (qx, qy, qz, qw))
    gps = None if lat is None else (lat, lon)
    return Keyframe(int(kid), stamp, pose, gps, session, source)


def _as_keyframe(k: Keyframe | dict) -> Keyframe:
    if isinstance(k, Keyframe):
        return k
    if not isinstance(k, dict):
        raise TypeError(f"keyframe must be a Keyframe or dict, got {type(k).__name__}")
    unknown = set(k) - {"id", "stamp", "pose", "gps", "session", "source"}
    if unknown:
        raise ValueError(f"unknown keyframe key(s): {sorted(unknown)}")
    pose = k.get("pose")
    if isinstance(pose, dict):
        pose = Pose.from_dict(pose)
    gps = k.get("gps")
    stamp = k.get("stamp")
    return Keyframe(0, None if stamp is None else float(stamp), pose,
                    None if gps is None else (float(gps[0]), float(gps[1])),
                    str(k.get("session", "default")), str(k.get("source", "")))


class _GrowArray:
    """Append-only numpy array with amortised growth (per-keyframe stamps and sessions)."""

    def __init__(self, dtype):
        self._a = np.zeros(64, dtype=dtype)
        self.n = 0

    def extend(self, values) -> None:
        values = np.asarray(values, dtype=self._a.dtype)
        need = self.n + len(values)
        if need > len(self._a):
            grown = np.zeros(max(need, 2 * len(self._a)), dtype=self._a.dtype)
            grown[: self.n] = self._a[: self.n]
            self._a = grown
        self._a[self.n: need] = values
        self.n = need

    @property
    def values(self) -> np.ndarray:
        return self._a[: self.n]


def _default_params(kind: str) -> dict:
    if kind == "ivfpq":
        # nlist/pq_m None = chosen at training time from the data (see _ivfpq_params).
        return {"nlist": None, "pq_m": None, "pq_bits": 8, "nprobe": None, "auto_train_at": 50000,
                "max_train_points": 100000}
    if kind == "ivfflat":
        # nlist None = 4·sqrt(N) at training time; nprobe 16 of 4000 lists: 0.998 top-1
        # agreement, p50 1.65 ms on 10^6 synthetic 448-d descriptors (nprobe 8: 0.996, 0.88 ms).
        return {"nlist": None, "nprobe": 16, "auto_train_at": 50000, "max_train_points": 100000}
    if kind == "hnsw":
        return {"M": 32, "ef_construction": 80, "ef_search": 128}
    return {}


class MapDatabase:
    """A place map: descriptors (faiss) + keyframes (SQLite). Thread-safe (one internal lock)."""

    def __init__(self, fingerprint: dict, dim: int, index: str = "flat", index_params: dict | None = None,
                 *, use_gpu: bool = True, meta: dict | None = None):
        """Prefer ``create`` / ``load``."""
        if index not in INDEX_TYPES:
            raise MapError(f"unknown index type {index!r} (choose from {', '.join(INDEX_TYPES)})")
        if int(dim) <= 0:
            raise MapError(f"descriptor dim must be positive, got {dim}")
        self._fingerprint = dict(fingerprint)
        self._dim = int(dim)
        self._index_type = index
        params = _default_params(index)
        unknown = set(index_params or {}) - set(params)
        if unknown:
            raise MapError(f"unknown {index} index parameter(s): {sorted(unknown)} (known: {sorted(params)})")
        params.update(index_params or {})
        self._params = params
        self._use_gpu = use_gpu
        self.meta = dict(meta or {})   # free-form JSON (checkpoint used, local feature kind, ...)
        self._lock = threading.RLock()
        self._path: Path | None = None
        self._created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self._trained = index not in IVF_TYPES
        self._index = self._new_index()
        self._gpu_index = None
        # Keyframes loaded from disk stay in their (read-only) file; new ones go to a private
        # temporary on-disk SQLite database ("" filename) until the next save.
        self._base: sqlite3.Connection | None = None
        self._base_count = 0
        self._new = sqlite3.connect("", check_same_thread=False)
        self._new.executescript(_SCHEMA)
        self._count = 0
        self._stamps = _GrowArray(np.float64)    # NaN = no stamp; used by recent_ids()
        self._sessions = _GrowArray(np.int32)
        self._session_codes: dict[str, int] = {}
        self._n_features = 0

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def create(cls, fingerprint: dict, dim: int, index: str = "flat", index_params: dict | None = None,
               *, use_gpu: bool = True, meta: dict | None = None) -> "MapDatabase":
        """An empty in-memory map for descriptors of ``dim`` made by the model ``fingerprint``.

        ``meta``: extra JSON kept in the manifest (e.g. ``{"checkpoint": ..., "features": "sift"}``).
        """
        return cls(fingerprint, dim, index, index_params, use_gpu=use_gpu, meta=meta)

    def _new_index(self):
        faiss = _faiss()
        if self._index_type == "hnsw":
            idx = faiss.IndexHNSWFlat(self._dim, int(self._params["M"]), faiss.METRIC_INNER_PRODUCT)
            idx.hnsw.efConstruction = int(self._params["ef_construction"])
            idx.hnsw.efSearch = int(self._params["ef_search"])
            return idx
        # flat, and ivfpq before training (exact until there is enough data to train on)
        return faiss.IndexFlatIP(self._dim)

    # -- properties ----------------------------------------------------------------------------

    @property
    def fingerprint(self) -> dict:
        return dict(self._fingerprint)

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def index_type(self) -> str:
        return self._index_type

    @property
    def index_params(self) -> dict:
        return dict(self._params)

    @property
    def trained(self) -> bool:
        return self._trained

    def __len__(self) -> int:
        return self._count

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Set the search-time parameter of the index: ``nprobe`` (IVF lists visited, ivfflat /
        ivfpq) or ``ef_search`` (HNSW candidate list). Recorded in the manifest by ``save``.

        MapError when a value is not a positive int or the index type has no such parameter.
        """
        given = {k: v for k, v in (("nprobe", nprobe), ("ef_search", ef_search)) if v is not None}
        for name, value in given.items():
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise MapError(f"{name} must be a positive integer, got {value!r}")
            if name not in self._params:
                raise MapError(f"a {self._index_type} index has no search parameter {name!r}")
        faiss = _faiss()
        with self._lock:
            if "nprobe" in given:
                self._params["nprobe"] = int(given["nprobe"])
                if isinstance(self._index, faiss.IndexIVF):   # untrained: used by train()
                    self._index.nprobe = int(given["nprobe"])
            if "ef_search" in given:
                self._params["ef_search"] = int(given["ef_search"])
                self._index.hnsw.efSearch = int(given["ef_search"])
            self._gpu_index = None   # a GPU copy is remade with the new setting

    def check_fingerprint(self, expected: dict, where: str | None = None) -> None:
        """MapError saying expected vs found when ``expected`` is another model's fingerprint."""
        diff = fingerprint_mismatch(expected, self._fingerprint)
        if diff:
            shown = "; ".join(f"{k}: expected {expected.get(k)!r}, found {self._fingerprint.get(k)!r}"
                              for k in diff)
            raise MapError(f"{where or self._path or 'map'}: built with another model ({shown})")

    # -- adding --------------------------------------------------------------------------------

    def add(self, descriptors: np.ndarray, keyframes: Sequence[Keyframe | dict],
            local_features: Sequence[Any] | None = None) -> list[int]:
        """Append keyframes with their descriptors; returns their new ids (consecutive, from 1).

        ``local_features``: per keyframe a ``verify.LocalFeatures``, raw bytes, or None.
        """
        x = self._check_desc(descriptors)
        kfs = [_as_keyframe(k) for k in keyframes]
        if len(kfs) != len(x):
            raise ValueError(f"{len(x)} descriptors but {len(kfs)} keyframes")
        if local_features is not None and len(local_features) != len(x):
            raise ValueError(f"{len(x)} descriptors but {len(local_features)} local feature entries")
        with self._lock:
            first = self._count + 1
            ids = list(range(first, first + len(x)))
            rows = []
            for i, (kid, k) in enumerate(zip(ids, kfs)):
                p = k.pose
                feat = None if local_features is None else local_features[i]
                if feat is not None and not isinstance(feat, (bytes, bytearray, memoryview)):
                    feat = feat.to_bytes()
                rows.append((kid, k.stamp,
                             *(p.position if p else (None,) * 3), *(p.orientation if p else (None,) * 4),
                             *(k.gps if k.gps else (None, None)), k.session, k.source,
                             None if feat is None else sqlite3.Binary(feat)))
            # SQLite first: if it fails, the index is untouched and the map stays consistent.
            with self._new:
                self._new.executemany(f"INSERT INTO keyframes ({_COLS}, features) VALUES "
                                      "(?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            self._index.add(x)
            if self._gpu_index is not None:
                self._gpu_index.add(x)
            self._count += len(x)
            self._stamps.extend([np.nan if k.stamp is None else k.stamp for k in kfs])
            self._sessions.extend([self._session_code(k.session) for k in kfs])
            self._n_features += sum(r[-1] is not None for r in rows)
            if (not self._trained and self._params.get("auto_train_at")
                    and self._count >= int(self._params["auto_train_at"])):
                self.train()
        return ids

    def _session_code(self, session: str) -> int:
        return self._session_codes.setdefault(session, len(self._session_codes))

    def _check_desc(self, descriptors) -> np.ndarray:
        x = np.asarray(descriptors, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self._dim:
            raise MapError(f"descriptors have shape {tuple(np.shape(descriptors))}, the map holds "
                           f"{self._dim}-d descriptors")
        if not np.all(np.isfinite(x)):
            raise MapError("descriptors contain NaN or infinity")
        return np.ascontiguousarray(x)

    # -- training (ivfflat, ivfpq) -------------------------------------------------------------

    def _nlist(self, n: int) -> int:
        # nlist ~ 4·sqrt(N), with >= 39 training points per centroid (faiss' k-means floor).
        return int(self._params["nlist"] or max(1, min(int(4 * math.sqrt(n)), n // 39)))

    def _ivfpq_params(self, n: int) -> tuple[int, int, int]:
        nlist = self._nlist(n)
        m = self._params["pq_m"]
        if not m:
            # ~8 dimensions per sub-quantizer (56 bytes for 448-d, 32x smaller than float32):
            # exact top-1 agreement 1.000 on 10^5 synthetic 448-d descriptors (see the map note).
            m = max(d for d in range(1, max(1, self._dim // 8) + 1) if self._dim % d == 0)
        nprobe = self._params["nprobe"] or max(1, min(nlist, max(16, nlist // 8)))
        return int(nlist), int(m), int(nprobe)

    def train(self, sample: np.ndarray | None = None) -> None:
        """Train the IVF index (on ``sample`` or on the vectors added so far) and move them in."""
        if self._index_type not in IVF_TYPES:
            return
        faiss = _faiss()
        with self._lock:
            if self._trained:
                return
            current = self._index.reconstruct_n(0, self._index.ntotal) if self._index.ntotal else None
            data = self._check_desc(sample) if sample is not None else current
            if data is None or len(data) < MIN_TRAIN:
                raise MapError(f"an {self._index_type} index needs at least {MIN_TRAIN} vectors to train, "
                               f"got {0 if data is None else len(data)} (use --index flat for small maps)")
            quant = faiss.IndexFlatIP(self._dim)
            if self._index_type == "ivfpq":
                nlist, m, nprobe = self._ivfpq_params(len(data))
                if self._dim % m:
                    raise MapError(f"pq_m={m} must divide the descriptor dim {self._dim}")
                idx = faiss.IndexIVFPQ(quant, self._dim, nlist, m, int(self._params["pq_bits"]),
                                       faiss.METRIC_INNER_PRODUCT)
                learned = {"nlist": nlist, "pq_m": m, "nprobe": nprobe}
            else:
                nlist = min(self._nlist(len(data)), len(data))  # k-means needs >= nlist points
                nprobe = int(self._params["nprobe"])
                idx = faiss.IndexIVFFlat(quant, self._dim, nlist, faiss.METRIC_INNER_PRODUCT)
                learned = {"nlist": nlist, "nprobe": nprobe}
            # k-means needs ~39..256 points per centroid; more only costs time (training on
            # 10^6 points with nlist 4000 would take most of an hour on one core).
            cap = min(256 * max(nlist, 256),
                      max(40 * nlist, int(self._params.get("max_train_points") or len(data))))
            if len(data) > cap:
                data = data[np.random.default_rng(0).choice(len(data), cap, replace=False)]
            idx.train(data)
            idx.nprobe = nprobe
            if current is not None:
                idx.add(current)
            self._index = idx
            self._params.update(learned)
            self._trained = True
            self._gpu_index = None

    # -- search --------------------------------------------------------------------------------

    def _searcher(self):
        """The index to search: a GPU copy when faiss reports GPUs (untested here), else the CPU one."""
        if not self._use_gpu or self._index_type == "hnsw":
            return self._index
        faiss = _faiss()
        if self._gpu_index is None and faiss.get_num_gpus() > 0:  # pragma: no cover - no GPU in CI
            try:
                self._gpu_index = faiss.index_cpu_to_all_gpus(self._index)
            except Exception as e:  # e.g. a CPU-only faiss build reporting GPUs
                log.warning("GPU index unavailable (%s); searching on the CPU", e)
                self._use_gpu = False
                return self._index
        return self._index if self._gpu_index is None else self._gpu_index

    def _search_params(self, exclude_ids):
        """faiss search parameters excluding the given ids at the index level (an IDSelector)."""
        faiss = _faiss()
        pos = np.unique(np.asarray(exclude_ids, dtype=np.int64)) - 1
        sel = faiss.IDSelectorNot(faiss.IDSelectorBatch(pos))
        if isinstance(self._index, faiss.IndexIVF):
            params = faiss.SearchParametersIVF(sel=sel, nprobe=self._index.nprobe)
        elif isinstance(self._index, faiss.IndexHNSW):
            params = faiss.SearchParametersHNSW(sel=sel, efSearch=self._index.hnsw.efSearch)
        else:
            params = faiss.SearchParameters(sel=sel)
        return params, (sel, pos)  # keep the selector objects alive during the search

    def search(self, descriptors: np.ndarray, k: int, min_score: float = -math.inf,
               exclude: Callable[[Keyframe], bool] | None = None, *,
               exclude_ids: Iterable[int] | None = None) -> list[list[tuple[int, float]]]:
        """Top-``k`` ``(id, score)`` per query (inner product, best first), scores >= ``min_score``.

        ``exclude_ids`` are filtered inside faiss (an IDSelector: cheap, e.g. temporal
        exclusion via ``recent_ids``). ``exclude(keyframe) -> bool`` is a general predicate,
        applied to over-fetched results (fetching more until ``k`` pass or the map is exhausted).
        """
        q = self._check_desc(descriptors)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        with self._lock:
            n = self._count
            if n == 0:
                return [[] for _ in range(len(q))]
            index, params, keep = self._searcher(), None, None
            if exclude_ids is not None:
                ex = np.asarray(list(exclude_ids) if not isinstance(exclude_ids, np.ndarray) else exclude_ids)
                if ex.size:
                    if index is not self._index:  # GPU indexes take no selectors: filter afterwards
                        excluded = set(ex.tolist())
                        prev = exclude
                        exclude = (lambda kf, prev=prev: kf.id in excluded or bool(prev and prev(kf)))
                    else:
                        params, keep = self._search_params(ex)
            if exclude is None:   # the common case: one batched faiss call
                kk = min(n, k)
                D, I = index.search(q, kk, params=params) if params else index.search(q, kk)
                return [[(int(i) + 1, float(d)) for d, i in zip(Dr, Ir) if i >= 0 and d >= min_score]
                        for Dr, Ir in zip(D, I)]
            out = []
            for row in q:
                fetch = min(n, 2 * k + 16)
                while True:
                    D, I = index.search(row[None], fetch, params=params) if params else index.search(row[None], fetch)
                    hits = [(int(i) + 1, float(d)) for d, i in zip(D[0], I[0]) if i >= 0 and d >= min_score]
                    if exclude is not None:
                        hits = [h for h in hits if not exclude(self.keyframe(h[0]))]
                    # Stop when enough passed, the map is exhausted (also: the index returned
                    # fewer than asked, -1 labels, under an IDSelector) or scores fell below min_score.
                    if (len(hits) >= k or fetch >= n or (len(I[0]) and I[0][-1] < 0)
                            or (len(D[0]) and D[0][-1] < min_score)):
                        break
                    fetch = min(n, fetch * 4)
                out.append(hits[:k])
            del keep
            return out

    def recent_ids(self, session: str, newer_than: float) -> np.ndarray:
        """Ids of keyframes of ``session`` with stamp > ``newer_than`` (for temporal exclusion)."""
        with self._lock:
            code = self._session_codes.get(session)
            if code is None:
                return np.zeros(0, dtype=np.int64)
            stamps = self._stamps.values
            mask = (self._sessions.values == code) & (stamps > newer_than)  # NaN compares False
            return np.flatnonzero(mask).astype(np.int64) + 1

    # -- keyframes -----------------------------------------------------------------------------

    def _conn_for(self, kid: int) -> sqlite3.Connection:
        if not 1 <= kid <= self._count:
            raise KeyError(f"no keyframe with id {kid} (map has ids 1..{self._count})")
        return self._base if kid <= self._base_count else self._new

    def keyframe(self, id: int) -> Keyframe:
        with self._lock:
            row = self._conn_for(int(id)).execute(
                f"SELECT {_COLS} FROM keyframes WHERE id = ?", (int(id),)).fetchone()
        if row is None:
            raise MapError(f"{self._path or 'map'}: keyframe {id} missing from {DB_FILE}")
        return _row_to_keyframe(row)

    def local_features(self, id: int):
        """The stored ``verify.LocalFeatures`` of keyframe ``id``, or None if none were stored."""
        from .verify import LocalFeatures

        with self._lock:
            row = self._conn_for(int(id)).execute(
                "SELECT features FROM keyframes WHERE id = ?", (int(id),)).fetchone()
        if row is None or row[0] is None:
            return None
        try:
            return LocalFeatures.from_bytes(bytes(row[0]))
        except (ValueError, OSError, KeyError) as e:
            raise MapError(f"{self._path or 'map'}: local features of keyframe {id} are corrupted ({e})") from None

    def keyframes(self) -> Iterable[Keyframe]:
        """All keyframes in id order (streams from SQLite)."""
        for conn in (self._base, self._new):
            if conn is None:
                continue
            with self._lock:
                rows = conn.execute(f"SELECT {_COLS} FROM keyframes ORDER BY id").fetchall()
            for row in rows:
                yield _row_to_keyframe(row)

    @property
    def num_with_features(self) -> int:
        return self._n_features

    # -- manifest ------------------------------------------------------------------------------

    def manifest(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "fingerprint": self._fingerprint,
            "descriptor_dim": self._dim,
            "index": {"type": self._index_type, "trained": self._trained, "params": self._params},
            "counts": {"keyframes": self._count, "with_local_features": self._n_features,
                       "sessions": sorted(self._session_codes)},
            "meta": self.meta,
            "created": self._created,
            "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    # -- save ----------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the map to ``path`` (default: where it was loaded from / last saved) atomically.

        Steps: (1) write everything into ``PATH.structvpr-new`` and fsync it (manifest last);
        (2) rename an existing ``PATH`` to ``PATH.structvpr-old``; (3) rename the new directory
        to ``PATH``; (4) remove the old one. A crash after (1) leaves ``PATH`` intact; between
        (2) and (3) ``load`` finds the complete leftover and renames it back in place.
        """
        target = Path(path) if path is not None else self._path
        if target is None:
            raise MapError("save(): no path given and the map was never saved or loaded")
        target = target.absolute()
        faiss = _faiss()
        with self._lock:
            target.parent.mkdir(parents=True, exist_ok=True)
            new, old = _sibling(target, NEW_SUFFIX), _sibling(target, OLD_SUFFIX)
            if new.exists():
                shutil.rmtree(new)    # a stale half-written directory from an earlier crash
            new.mkdir()
            try:
                faiss.write_index(self._index, str(new / INDEX_FILE))
                self._write_db(new / DB_FILE)
                manifest = self.manifest()
                manifest["files"] = {name: (new / name).stat().st_size for name in (INDEX_FILE, DB_FILE)}
                for name in (INDEX_FILE, DB_FILE):
                    fsync_file(new / name)
                (new / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
                fsync_file(new / MANIFEST)
                fsync_dir(new)
                if target.exists():
                    if old.exists():
                        shutil.rmtree(old)
                    os.replace(target, old)
                os.replace(new, target)
                fsync_dir(target.parent)
            except BaseException:
                if not target.exists() and old.exists():
                    os.replace(old, target)  # undo step (2) when step (3) failed
                raise
            shutil.rmtree(old, ignore_errors=True)
            self._reopen_base(target)
            self._path = target
        return target

    def _write_db(self, dest: Path) -> None:
        out = sqlite3.connect(str(dest))
        try:
            if self._base is not None:
                self._base.backup(out)  # page copy of the loaded keyframes
            else:
                out.executescript(_SCHEMA)
            rows = self._new.execute(f"SELECT {_COLS}, features FROM keyframes ORDER BY id")
            with out:
                out.executemany(f"INSERT INTO keyframes ({_COLS}, features) VALUES "
                                "(?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            out.execute("PRAGMA journal_mode=DELETE")
        finally:
            out.close()

    def _reopen_base(self, mapdir: Path) -> None:
        if self._base is not None:
            self._base.close()
        self._base = _open_db_readonly(mapdir / DB_FILE)
        self._base_count = self._count
        self._new.execute("DELETE FROM keyframes")
        self._new.commit()

    # -- load ----------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike, expected_fingerprint: dict | None = None,
             *, use_gpu: bool = True) -> "MapDatabase":
        """Open a saved map. MapError (one line, naming the file) on anything wrong with it."""
        path = _recover(Path(path).absolute())
        manifest = _read_manifest(path)
        fp = manifest["fingerprint"]
        idx_info = manifest["index"]
        self = cls(fp, manifest["descriptor_dim"], idx_info["type"], idx_info.get("params"),
                   use_gpu=use_gpu, meta=manifest.get("meta") if isinstance(manifest.get("meta"), dict) else None)
        self._path = path
        self._created = manifest.get("created", self._created)
        if expected_fingerprint is not None:
            self.check_fingerprint(expected_fingerprint, where=str(path))
        files = manifest.get("files", {})
        for name in (INDEX_FILE, DB_FILE):
            f = path / name
            if not f.is_file():
                raise MapError(f"{f}: missing (the map is incomplete)")
            size = f.stat().st_size
            if name in files and size != files[name]:
                raise MapError(f"{f}: size {size} bytes, manifest says {files[name]} "
                               "(truncated or replaced file)")
        count = manifest["counts"]["keyframes"]
        self._index = _read_index(path / INDEX_FILE, self)
        if self._index.ntotal != count:
            raise MapError(f"{path / INDEX_FILE}: holds {self._index.ntotal} descriptors, "
                           f"manifest says {count}")
        self._trained = bool(idx_info.get("trained", True))
        self._base = _open_db_readonly(path / DB_FILE)
        try:
            n_rows, max_id, n_feat = self._base.execute(
                "SELECT COUNT(*), COALESCE(MAX(id), 0), COUNT(features) FROM keyframes").fetchone()
            if n_rows != count or max_id != count:
                raise MapError(f"{path / DB_FILE}: holds {n_rows} keyframes (max id {max_id}), "
                               f"manifest says {count}")
            rows = self._base.execute("SELECT stamp, session FROM keyframes ORDER BY id").fetchall()
            self._stamps.extend([np.nan if st is None else st for st, _ in rows])
            self._sessions.extend([self._session_code(se) for _, se in rows])
            del rows
        except sqlite3.DatabaseError as e:
            self._base.close()
            raise MapError(f"{path / DB_FILE}: unreadable keyframe database ({e})") from None
        except MapError:
            self._base.close()
            raise
        self._count = self._base_count = count
        self._n_features = n_feat
        return self

    def close(self) -> None:
        with self._lock:
            if self._base is not None:
                self._base.close()
                self._base = None
            self._new.close()


# -- helpers for save/load -----------------------------------------------------------------------

def _sibling(target: Path, suffix: str) -> Path:
    return target.with_name(target.name + suffix)


def _is_complete(d: Path) -> bool:
    try:
        _read_manifest(d)
    except MapError:
        return False
    return all((d / n).is_file() for n in (INDEX_FILE, DB_FILE))


def _recover(path: Path) -> Path:
    """If ``path`` is missing after a crash inside save(), put the complete leftover back."""
    if path.exists():
        return path
    for cand in (_sibling(path, NEW_SUFFIX), _sibling(path, OLD_SUFFIX)):
        if cand.is_dir() and _is_complete(cand):
            try:
                os.replace(cand, path)
                fsync_dir(path.parent)
                log.warning("recovered map %s from %s (an earlier save was interrupted)", path, cand.name)
                return path
            except OSError:
                return cand  # read-only location: load the leftover in place
    raise MapError(f"{path}: no such map directory")


def _read_manifest(path: Path) -> dict:
    if not path.is_dir():
        raise MapError(f"{path}: not a directory (a map is a directory made by 'structvpr build-map')")
    mf = path / MANIFEST
    if not mf.is_file():
        raise MapError(f"{mf}: missing (not a structvpr map directory, or an incomplete one)")
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MapError(f"{mf}: unreadable or corrupted ({type(e).__name__})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise MapError(f"{mf}: not a structvpr map manifest (format {manifest.get('format') if isinstance(manifest, dict) else None!r})")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise MapError(f"{mf}: map format version {version!r}, this structvpr reads version {FORMAT_VERSION}")
    try:
        ok = (isinstance(manifest["fingerprint"], dict) and int(manifest["descriptor_dim"]) > 0
              and manifest["index"]["type"] in INDEX_TYPES and int(manifest["counts"]["keyframes"]) >= 0)
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise MapError(f"{mf}: manifest lacks or has invalid fingerprint/descriptor_dim/index/counts")
    return manifest


def _read_index(f: Path, db: MapDatabase):
    faiss = _faiss()
    try:
        index = faiss.read_index(str(f))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unreadable"
        raise MapError(f"{f}: not a readable faiss index ({first[:120]})") from None
    if index.d != db.dim:
        raise MapError(f"{f}: index holds {index.d}-d vectors, manifest says {db.dim}")
    kind = db.index_type
    ok = (isinstance(index, faiss.IndexHNSW) if kind == "hnsw"
          else isinstance(index, (faiss.IndexIVFPQ, faiss.IndexFlatIP)) if kind == "ivfpq"
          else isinstance(index, (faiss.IndexIVFFlat, faiss.IndexFlatIP)) if kind == "ivfflat"
          else isinstance(index, faiss.IndexFlatIP))
    if not ok or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise MapError(f"{f}: index is a {type(index).__name__}, manifest says {kind}")
    if isinstance(index, faiss.IndexIVF) and db.index_params.get("nprobe"):
        index.nprobe = int(db.index_params["nprobe"])
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = int(db.index_params.get("ef_search", index.hnsw.efSearch))
    return index


def _open_db_readonly(f: Path) -> sqlite3.Connection:
    # immutable=1: no locks, no journal: the file is never changed in place (saves swap dirs).
    uri = f"file:{f.as_posix()}?mode=ro&immutable=1"
    try:
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        cols = [r[1] for r in conn.execute("PRAGMA table_info(keyframes)")]
    except sqlite3.DatabaseError as e:
        raise MapError(f"{f}: not a keyframe database ({e})") from None
    expected = [c.strip() for c in _COLS.split(",")] + ["features"]
    if cols != expected:
        conn.close()
        raise MapError(f"{f}: no keyframes table with the expected columns (foreign SQLite file?)")
    return conn
