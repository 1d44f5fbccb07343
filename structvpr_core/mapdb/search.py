"""The two ways a map is searched: one batched faiss call, or over-fetching until a filter is met.

Results are ``(id, score)`` pairs, best first, with id = faiss position + 1. Ids to skip (e.g.
temporal exclusion: the query's own recent keyframes) are best skipped inside faiss, by an
IDSelector in the search parameters (``exclusion_params``), so the batched search still applies.
A general predicate can only be applied to results, so ``search_filtered`` fetches more until
``k`` pass, the map is exhausted or the scores fall below ``min_score``.
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


def _faiss_search(index, q: np.ndarray, k: int, params):
    # Only pass params when there are some: GPU indexes take none.
    return index.search(q, k, params=params) if params else index.search(q, k)


def _hits(scores, labels, min_score: float) -> Hits:
    # label -1: fewer results than asked (small map, or ids excluded by a selector)
    return [(int(i) + 1, float(d)) for d, i in zip(scores, labels, strict=True) if i >= 0 and d >= min_score]


def search_batched(index, q: np.ndarray, k: int, min_score: float, params=None) -> list[Hits]:
    """Top-``k`` hits per query row in one faiss call (the common case)."""
    scores, labels = _faiss_search(index, q, min(index.ntotal, k), params)
    return [_hits(s, lab, min_score) for s, lab in zip(scores, labels, strict=True)]


def search_filtered(
    index, q: np.ndarray, k: int, min_score: float, excluded: Callable[[int], bool], params=None
) -> list[Hits]:
    """Top-``k`` hits per query row, skipping ids where ``excluded(id)`` is true (fetching more as needed)."""
    n = index.ntotal
    out = []
    for row in q:
        fetch = min(n, 2 * k + 16)
        while True:
            (scores,), (labels,) = _faiss_search(index, row[None], fetch, params)  # one query row
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
