"""The descriptor index: a faiss inner-product index of one of four types, trained and searched.

Types: ``flat`` (exact inner product, default), ``ivfflat`` (inverted lists of full vectors: exact
scores, searches ``nprobe`` of ``nlist`` lists; ``build-map``'s default from 50 000 keyframes:
top-1 agreement 0.998 at 1.65 ms on 10^6 synthetic 448-d descriptors, see docs/performance.md),
``ivfpq`` (compressed, for memory-bound large maps) and ``hnsw`` (graph, fast approximate search,
no training). The IVF types need training: vectors stay in an exact flat index until ``train()``
is called or ``auto_train_at`` vectors are reached (0 = only by ``train()``). With GPUs reported
by faiss, flat/IVF searches run on a copy made by ``faiss.index_cpu_to_all_gpus`` (untested here:
this machine has no GPU). Position p holds keyframe id p + 1, so no id map is needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from ..errors import MapError
from ..log import get_logger
from .integrity import check_descriptors, check_file_digest, file_sha256
from .search import Hits, exclusion_params, gpu_max_k, search_batched, search_filtered

log = get_logger(__name__)

INDEX_TYPES = ("flat", "ivfflat", "ivfpq", "hnsw")
IVF_TYPES = ("ivfflat", "ivfpq")  # need training; search parameter nprobe
MIN_TRAIN = 256  # vectors needed to train an IVF index


def _faiss():
    import faiss  # lazy: importing the map package must stay cheap

    return faiss


def default_params(kind: str) -> dict:
    """The parameters an index of type ``kind`` takes, with their defaults (None: chosen when trained)."""
    if kind == "ivfpq":
        # nlist/pq_m None = chosen at training time from the data (see _ivfpq_shape).
        return {
            "nlist": None,
            "pq_m": None,
            "pq_bits": 8,
            "nprobe": None,
            "auto_train_at": 50000,
            "max_train_points": 100000,
        }
    if kind == "ivfflat":
        # nlist None = 4·sqrt(N) at training time; nprobe 16 of 4000 lists: 0.998 top-1
        # agreement, p50 1.65 ms on 10^6 synthetic 448-d descriptors (nprobe 8: 0.996, 0.88 ms).
        return {"nlist": None, "nprobe": 16, "auto_train_at": 50000, "max_train_points": 100000}
    if kind == "hnsw":
        return {"M": 32, "ef_construction": 80, "ef_search": 128}
    return {}


def _or_in(banned: set[int], excluded: Callable[[int], bool] | None) -> Callable[[int], bool]:
    """The predicate ``excluded`` widened to the ids in ``banned``."""
    return lambda kid: kid in banned or bool(excluded and excluded(kid))


class DescriptorIndex:
    """One faiss index with its type and parameters, and its GPU copy. Not locked: the map locks."""

    def __init__(self, kind: str, dim: int, params: dict | None = None, *, use_gpu: bool = True):
        if kind not in INDEX_TYPES:
            raise MapError(f"unknown index type {kind!r} (choose from {', '.join(INDEX_TYPES)})")
        if int(dim) <= 0:
            raise MapError(f"descriptor dim must be positive, got {dim}")
        self.kind = kind
        self.dim = int(dim)
        self.params = default_params(kind)
        unknown = set(params or {}) - set(self.params)
        if unknown:
            raise MapError(f"unknown {kind} index parameter(s): {sorted(unknown)} (known: {sorted(self.params)})")
        self.params.update(params or {})
        self.trained = kind not in IVF_TYPES
        self._use_gpu = use_gpu
        self._index = self._new_index()
        self._gpu_index = None

    def _new_index(self):
        faiss = _faiss()
        if self.kind == "hnsw":
            idx = faiss.IndexHNSWFlat(self.dim, int(self.params["M"]), faiss.METRIC_INNER_PRODUCT)
            idx.hnsw.efConstruction = int(self.params["ef_construction"])
            idx.hnsw.efSearch = int(self.params["ef_search"])
            return idx
        # flat, and the IVF types before training (exact until there is enough data to train on)
        return faiss.IndexFlatIP(self.dim)

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def check(self, descriptors) -> np.ndarray:
        """``descriptors`` as a contiguous float32 (n, dim) array; MapError on a wrong shape or NaN."""
        x = np.asarray(descriptors, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise MapError(
                f"descriptors have shape {tuple(np.shape(descriptors))}, the map holds {self.dim}-d descriptors"
            )
        if not np.all(np.isfinite(x)):
            raise MapError("descriptors contain NaN or infinity")
        return np.ascontiguousarray(x)

    def add(self, x: np.ndarray) -> None:
        """Append checked descriptors; an untrained IVF index trains itself at ``auto_train_at``."""
        self._index.add(x)
        if self._gpu_index is not None:
            self._gpu_index.add(x)
        auto = self.params.get("auto_train_at")
        if not self.trained and auto and self.ntotal >= int(auto):
            self.train()

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Set ``nprobe`` (IVF lists visited) or ``ef_search`` (HNSW candidate list).

        MapError when a value is not a positive int or the index type has no such parameter.
        """
        given = {k: v for k, v in (("nprobe", nprobe), ("ef_search", ef_search)) if v is not None}
        for name, value in given.items():
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise MapError(f"{name} must be a positive integer, got {value!r}")
            if name not in self.params:
                raise MapError(f"a {self.kind} index has no search parameter {name!r}")
        if "nprobe" in given:
            self.params["nprobe"] = int(given["nprobe"])
            if isinstance(self._index, _faiss().IndexIVF):  # untrained: used by train()
                self._index.nprobe = int(given["nprobe"])
        if "ef_search" in given:
            self.params["ef_search"] = int(given["ef_search"])
            self._index.hnsw.efSearch = int(given["ef_search"])
        self._gpu_index = None  # a GPU copy is remade with the new setting

    # -- training (ivfflat, ivfpq) -------------------------------------------------------------

    def _nlist(self, n: int) -> int:
        # nlist ~ 4·sqrt(N), with >= 39 training points per centroid (faiss' k-means floor).
        return int(self.params["nlist"] or max(1, min(int(4 * math.sqrt(n)), n // 39)))

    def _ivfpq_shape(self, n: int) -> tuple[int, int, int]:
        nlist = self._nlist(n)
        m = self.params["pq_m"]
        if not m:
            # ~8 dimensions per sub-quantizer (56 bytes for 448-d, 32x smaller than float32):
            # exact top-1 agreement 1.000 on 10^5 synthetic 448-d descriptors (see the map note).
            m = max(d for d in range(1, max(1, self.dim // 8) + 1) if self.dim % d == 0)
        nprobe = self.params["nprobe"] or max(1, min(nlist, max(16, nlist // 8)))
        return int(nlist), int(m), int(nprobe)

    def train(self, sample: np.ndarray | None = None) -> None:
        """Train an IVF index (on ``sample`` or on the vectors added so far) and move them in."""
        if self.kind not in IVF_TYPES or self.trained:
            return
        faiss = _faiss()
        current = self._index.reconstruct_n(0, self._index.ntotal) if self._index.ntotal else None
        data = self.check(sample) if sample is not None else current
        if data is None or len(data) < MIN_TRAIN:
            raise MapError(
                f"an {self.kind} index needs at least {MIN_TRAIN} vectors to train, "
                f"got {0 if data is None else len(data)} (use --index flat for small maps)"
            )
        quant = faiss.IndexFlatIP(self.dim)
        if self.kind == "ivfpq":
            nlist, m, nprobe = self._ivfpq_shape(len(data))
            if self.dim % m:
                raise MapError(f"pq_m={m} must divide the descriptor dim {self.dim}")
            idx = faiss.IndexIVFPQ(quant, self.dim, nlist, m, int(self.params["pq_bits"]), faiss.METRIC_INNER_PRODUCT)
            learned = {"nlist": nlist, "pq_m": m, "nprobe": nprobe}
        else:
            nlist = min(self._nlist(len(data)), len(data))  # k-means needs >= nlist points
            nprobe = int(self.params["nprobe"])
            idx = faiss.IndexIVFFlat(quant, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            learned = {"nlist": nlist, "nprobe": nprobe}
        # k-means needs ~39..256 points per centroid; more only costs time (training on
        # 10^6 points with nlist 4000 would take most of an hour on one core).
        cap = min(256 * max(nlist, 256), max(40 * nlist, int(self.params.get("max_train_points") or len(data))))
        if len(data) > cap:
            data = data[np.random.default_rng(0).choice(len(data), cap, replace=False)]
        idx.train(data)
        idx.nprobe = nprobe
        if current is not None:
            idx.add(current)
        self._index = idx
        self.params.update(learned)
        self.trained = True
        self._gpu_index = None
        log.debug("trained the %s index on %d vectors: %s", self.kind, len(data), learned)

    # -- search --------------------------------------------------------------------------------

    def _searcher(self):
        """The index to search: a GPU copy when faiss reports GPUs (untested here), else the CPU one."""
        if not self._use_gpu or self.kind == "hnsw":  # faiss has no GPU HNSW
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

    def search(
        self,
        q: np.ndarray,
        k: int,
        min_score: float,
        exclude_ids: Iterable[int] | None = None,
        excluded: Callable[[int], bool] | None = None,
    ) -> list[Hits]:
        """Top-``k`` ``(id, score)`` per row of the checked queries ``q``, scores >= ``min_score``.

        ``exclude_ids`` are skipped inside faiss on the CPU; ``excluded(id) -> bool`` filters
        over-fetched results (and takes over ``exclude_ids`` on a GPU: GPU indexes take no selectors).
        """
        if self.ntotal == 0:
            return [[] for _ in range(len(q))]
        index, params, keep = self._searcher(), None, None
        if exclude_ids is not None:
            ex = np.asarray(exclude_ids if isinstance(exclude_ids, np.ndarray) else list(exclude_ids))
            if ex.size:
                if index is not self._index:
                    excluded = _or_in(set(ex.tolist()), excluded)
                else:
                    params, keep = exclusion_params(self._index, ex)
        # A GPU copy has a k limit: beyond it the same search runs on the CPU index.
        limit = {} if index is self._index else {"max_k": gpu_max_k(), "fallback": self._index}
        if excluded is None:
            hits = search_batched(index, q, k, min_score, params, **limit)
        else:
            hits = search_filtered(index, q, k, min_score, excluded, params, **limit)
        del keep  # the selectors faiss pointed to were needed until here
        return hits

    @property
    def exact_vectors(self) -> bool:
        """Whether ``reconstruct`` gives the stored descriptors exactly (all types but a trained ivfpq,
        whose product-quantised codes give only approximations)."""
        return not (self.kind == "ivfpq" and self.trained)

    def reconstruct(self, positions: np.ndarray) -> np.ndarray:
        """The stored descriptors at ``positions`` (int64, in range), (n, dim) float32.

        flat and hnsw reconstruct directly; an IVF index needs faiss' direct map (position → list
        entry, 8 bytes per vector), made on first use and kept up to date by faiss on later adds.
        MapError for a trained ivfpq index (compressed codes: not the stored descriptors).
        """
        if not self.exact_vectors:
            raise MapError(
                "an ivfpq map stores compressed codes, not its descriptors: they cannot be read back exactly"
            )
        faiss = _faiss()
        index = self._index
        if isinstance(index, faiss.IndexIVF) and index.direct_map.type == faiss.DirectMap.NoMap:
            index.make_direct_map()
        if not len(positions):
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.asarray(index.reconstruct_batch(np.ascontiguousarray(positions, dtype=np.int64)), dtype=np.float32)

    def estimated_bytes(self) -> int:
        """About the size of the saved index file (for "needs about ..." messages)."""
        n, d = self.ntotal, self.dim
        if self.kind == "hnsw":
            return n * (d * 4 + int(self.params["M"]) * 2 * 4 * 1.1) + 4096
        if self.trained and self.kind == "ivfpq":
            nlist, m = int(self.params.get("nlist") or 1), int(self.params.get("pq_m") or max(1, d // 8))
            return n * (m * int(self.params["pq_bits"]) // 8 + 8) + nlist * d * 4 + 256 * d * 4 + 4096
        if self.trained and self.kind == "ivfflat":
            return n * (d * 4 + 8) + int(self.params.get("nlist") or 1) * d * 4 + 4096
        return n * d * 4 + 4096

    # -- files ---------------------------------------------------------------------------------

    def write(self, f: Path) -> None:
        _faiss().write_index(self._index, str(f))

    def read(self, f: Path, trained: bool, sha256: str | None = None) -> None:
        """Replace the index by the one saved in ``f``; MapError naming ``f`` unless it is of this type
        and dim (and, when ``sha256`` is given, unless the file has that checksum).

        The checksum is computed before faiss parses the file: a damaged header could otherwise
        make faiss allocate what it claims (hashing and then reading costs the same as hashing
        while reading, the second pass coming from the page cache).
        """
        faiss = _faiss()
        if sha256 is not None:
            check_file_digest(f, file_sha256(f), sha256)
        try:
            index = faiss.read_index(str(f))
        except (RuntimeError, MemoryError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else "unreadable"
            raise MapError(f"{f}: not a readable faiss index ({first[:120]})") from None
        if index.d != self.dim:
            raise MapError(f"{f}: index holds {index.d}-d vectors, manifest says {self.dim}")
        kind = self.kind
        ok = (
            isinstance(index, faiss.IndexHNSW)
            if kind == "hnsw"
            else isinstance(index, (faiss.IndexIVFPQ, faiss.IndexFlatIP))
            if kind == "ivfpq"
            else isinstance(index, (faiss.IndexIVFFlat, faiss.IndexFlatIP))
            if kind == "ivfflat"
            else isinstance(index, faiss.IndexFlatIP)
        )
        if not ok or index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise MapError(f"{f}: index is a {type(index).__name__}, manifest says {kind}")
        if isinstance(index, faiss.IndexIVF) and self.params.get("nprobe"):
            index.nprobe = int(self.params["nprobe"])
        if isinstance(index, faiss.IndexHNSW):
            index.hnsw.efSearch = int(self.params.get("ef_search", index.hnsw.efSearch))
        self._index = index
        self._gpu_index = None
        self.trained = trained

    # -- integrity -------------------------------------------------------------------------------

    def _vectors(self, chunk: int = 65536):
        """(ids, vectors) in chunks: the stored descriptors, viewed without copying where faiss allows."""
        faiss = _faiss()
        index = self._index
        if isinstance(index, faiss.IndexHNSW):
            index = faiss.downcast_index(index.storage)
        if isinstance(index, faiss.IndexFlat):
            n, d = index.ntotal, index.d
            if n:
                xb = faiss.rev_swig_ptr(index.get_xb(), n * d).reshape(n, d)
                for start in range(0, n, chunk):
                    yield np.arange(start, min(n, start + chunk), dtype=np.int64), xb[start : start + chunk]
            return
        if isinstance(index, faiss.IndexIVFFlat):
            lists = index.invlists
            for no in range(index.nlist):
                size = lists.list_size(no)
                if size:
                    codes = faiss.rev_swig_ptr(lists.get_codes(no), size * lists.code_size)
                    ids = faiss.rev_swig_ptr(lists.get_ids(no), size)
                    yield np.array(ids, dtype=np.int64), np.frombuffer(codes, dtype=np.float32).reshape(size, index.d)

    def check_integrity(self, where: str) -> None:
        """MapError naming ``where`` unless every stored descriptor is finite and unit-norm and every
        keyframe id is stored once (flat, hnsw, ivfflat); for ivfpq, whose codes are compressed, the
        codebooks and list centroids must be finite (the file's checksum covers the codes)."""
        faiss = _faiss()
        if isinstance(self._index, faiss.IndexIVFPQ):
            parts = [faiss.vector_to_array(self._index.pq.centroids)]
            quant = faiss.downcast_index(self._index.quantizer)
            if isinstance(quant, faiss.IndexFlat) and quant.ntotal:
                parts.append(quant.reconstruct_n(0, quant.ntotal).ravel())
            if not all(np.all(np.isfinite(p)) for p in parts):
                raise MapError(f"{where}: the ivfpq codebooks hold NaN or infinity")
            return
        seen = 0
        all_ids = []
        for ids, x in self._vectors():
            check_descriptors(x, where, ids + 1)
            seen += len(ids)
            if isinstance(self._index, faiss.IndexIVF):
                all_ids.append(ids)
        if all_ids:
            ids = np.concatenate(all_ids)
            if ids.min() < 0 or ids.max() >= self.ntotal or np.unique(ids).size != ids.size:
                raise MapError(f"{where}: the inverted lists hold ids outside 1..{self.ntotal} or twice")
        if seen != self.ntotal:
            raise MapError(f"{where}: {seen} descriptors found in the index, it counts {self.ntotal}")
