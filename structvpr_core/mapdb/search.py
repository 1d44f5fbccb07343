"""The two ways a map is searched: one batched faiss call, or over-fetching until a filter is met.

Results are ``(id, score)`` pairs, best first, with id = faiss position + 1. Ids to skip (e.g.
temporal exclusion: the query's own recent keyframes) are best skipped inside faiss, by an
IDSelector in the search parameters (``exclusion_params``), so the batched search still applies.
A general predicate can only be applied to results, so ``search_filtered`` fetches more until
``k`` pass, the map is exhausted or the scores fall below ``min_score``.

A faiss GPU index refuses k above its selection limit (2048 with CUDA's block select; see
``gpu_max_k``), which a large top_k or the over-fetching would pass on a large map: with
``max_k`` and a ``fallback`` (the CPU index) such a search runs on the CPU instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Hits = list[tuple[int, float]]


def _faiss():
    import faiss  # lazy: importing the map package must stay cheap

    return faiss


def exclusion_params(index, exclude_ids: np.ndarray):
    """faiss search parameters that skip ``exclude_ids`` inside ``index`` (a CPU index).

    Returns ``(params, keep)``: ``keep`` must stay referenced during the search (faiss holds
    raw pointers to the selector objects).
    """
    faiss = _faiss()
    pos = np.unique(np.asarray(exclude_ids, dtype=np.int64)) - 1
    sel = faiss.IDSelectorNot(faiss.IDSelectorBatch(pos))
    if isinstance(index, faiss.IndexIVF):
        params = faiss.SearchParametersIVF(sel=sel, nprobe=index.nprobe)
    elif isinstance(index, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW(sel=sel, efSearch=index.hnsw.efSearch)
    else:
        params = faiss.SearchParameters(sel=sel)
    return params, (sel, pos)


def gpu_max_k() -> int:
    """The largest k a faiss GPU index searches (faiss' own figure when its GPU module says, else 2048)."""
    faiss = _faiss()
    get = getattr(faiss, "getMaxKSelection", None)  # only in GPU builds of faiss
    try:
        return int(get()) if get is not None else 2048
    except Exception:  # pragma: no cover - a GPU build without a usable device
        return 2048


def _within(index, k: int, max_k: int | None, fallback):
    """``index``, or ``fallback`` when ``k`` is beyond ``max_k`` (a GPU index's limit)."""
    if max_k is not None and k > max_k:
        if fallback is None:
            raise ValueError(f"k={k} exceeds the index's limit {max_k} and no fallback index was given")
        return fallback
    return index


def _faiss_search(index, q: np.ndarray, k: int, params):
    # Only pass params when there are some: GPU indexes take none.
    return index.search(q, k, params=params) if params else index.search(q, k)


def _hits(scores, labels, min_score: float) -> Hits:
    # label -1: fewer results than asked (small map, or ids excluded by a selector)
    return [(int(i) + 1, float(d)) for d, i in zip(scores, labels, strict=True) if i >= 0 and d >= min_score]


def search_batched(
    index, q: np.ndarray, k: int, min_score: float, params=None, *, max_k: int | None = None, fallback=None
) -> list[Hits]:
    """Top-``k`` hits per query row in one faiss call (the common case); on ``fallback`` when k > ``max_k``."""
    k = min(index.ntotal, k)
    index = _within(index, k, max_k, fallback)
    scores, labels = _faiss_search(index, q, k, params)
    return [_hits(s, lab, min_score) for s, lab in zip(scores, labels, strict=True)]


def search_filtered(
    index,
    q: np.ndarray,
    k: int,
    min_score: float,
    excluded: Callable[[int], bool],
    params=None,
    *,
    max_k: int | None = None,
    fallback=None,
) -> list[Hits]:
    """Top-``k`` hits per query row, skipping ids where ``excluded(id)`` is true (fetching more as needed;
    a fetch beyond ``max_k`` runs on ``fallback``)."""
    n = index.ntotal
    out = []
    for row in q:
        fetch = min(n, 2 * k + 16)
        while True:
            searcher = _within(index, fetch, max_k, fallback)
            (scores,), (labels,) = _faiss_search(searcher, row[None], fetch, params)  # one query row
            hits = [h for h in _hits(scores, labels, min_score) if not excluded(h[0])]
            # Stop when enough passed, the map is exhausted (also: the index returned
            # fewer than asked, -1 labels, under an IDSelector) or scores fell below min_score.
            if (
                len(hits) >= k
                or fetch >= n
                or (len(labels) and labels[-1] < 0)
                or (len(scores) and scores[-1] < min_score)
            ):
                break
            fetch = min(n, fetch * 4)
        out.append(hits[:k])
    return out
