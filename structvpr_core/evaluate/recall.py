"""Recall@N and precision–recall, the metrics as the VPR community computes them.

Recall@N: descriptors are L2-normalised, the database is searched exhaustively by inner product
(faiss ``IndexFlatIP``), and a query counts as recalled at N when any of its top N results is
one of its positives. Queries without any positive cannot be recalled and are left out of
Recall@N (the benchmarks' loaders drop them too); the JSON reports how many there were.

Precision–recall (sequence data, i.e. loop closure): each query keeps only its best match and
that match's score. Sweeping a threshold over the scores, a query whose best score passes is a
true positive if the match is correct and a false positive otherwise (queries without a true
match included); recall = true positives / queries that have a positive. The curve starts at
(recall 0, precision 1); AUC is its trapezoidal area; "recall at 100 % precision" is the
largest recall reached before the first false positive.

Pure maths on arrays (numpy, faiss): training validation, export parity checks and the loop
evaluation use these without the rest of ``evaluate``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import DatasetError

DEFAULT_NS = (1, 5, 10, 20)


def normalise(desc: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as contiguous float32 (zero rows stay zero)."""
    desc = np.ascontiguousarray(desc, dtype=np.float32)
    if desc.ndim != 2:
        raise ValueError(f"descriptors must be a 2-D array, got shape {desc.shape}")
    norms = np.linalg.norm(desc, axis=1, keepdims=True)
    return np.ascontiguousarray(desc / np.maximum(norms, 1e-12), dtype=np.float32)


def search(db_desc: np.ndarray, q_desc: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by inner product of L2-normalised descriptors: (scores, indices), each (M, k)."""
    import faiss

    db, q = normalise(db_desc), normalise(q_desc)
    if db.shape[1] != q.shape[1]:
        raise ValueError(f"database descriptors are {db.shape[1]}-d, queries {q.shape[1]}-d")
    k = max(1, min(int(k), len(db)))
    index = faiss.IndexFlatIP(db.shape[1])
    index.add(db)
    scores, indices = index.search(q, k)
    return scores, indices


def recall_from_predictions(
    predictions: np.ndarray, positives: Sequence[np.ndarray], ns: Sequence[int] = DEFAULT_NS
) -> dict[int, float]:
    """Recall@N from ranked predictions (M, k); queries without positives are left out."""
    evaluated = [i for i, p in enumerate(positives) if len(p)]
    if not evaluated:
        raise DatasetError("no query has a positive in the database: recall is undefined")
    hits = np.zeros((len(evaluated), predictions.shape[1]), dtype=bool)
    for row, i in enumerate(evaluated):
        hits[row] = np.isin(predictions[i], positives[i])
    # first_hit = rank (0-based) of the first positive, k when none was retrieved
    first_hit = np.where(hits.any(axis=1), hits.argmax(axis=1), predictions.shape[1])
    return {int(n): float(np.mean(first_hit < n)) for n in ns}


def recall_at_n(
    db_desc: np.ndarray, q_desc: np.ndarray, positives: Sequence[np.ndarray], ns: Sequence[int] = DEFAULT_NS
) -> dict[int, float]:
    """Recall@N for each N in ``ns`` (N larger than the database means the whole database)."""
    if any(int(n) < 1 for n in ns):
        raise ValueError(f"recall N must be >= 1, got {list(ns)}")
    if len(positives) != len(q_desc):
        raise ValueError(f"{len(positives)} positive lists for {len(q_desc)} queries")
    _, predictions = search(db_desc, q_desc, max(ns))
    return recall_from_predictions(predictions, positives, ns)


def precision_recall(best_scores: np.ndarray, best_correct: np.ndarray, num_with_positive: int) -> dict:
    """PR curve of best matches; see the module docstring for the definitions."""
    scores = np.asarray(best_scores, dtype=np.float64)
    correct = np.asarray(best_correct, dtype=bool)
    if num_with_positive < 1:
        raise DatasetError("no query has a positive in the database: precision-recall is undefined")
    order = np.argsort(-scores, kind="stable")
    s, c = scores[order], correct[order]
    tp, fp = np.cumsum(c), np.cumsum(~c)
    # One point per distinct threshold: queries with equal scores are accepted together.
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1] if len(s) else np.zeros(0, dtype=np.int64)
    precision = np.r_[1.0, tp[last] / (tp[last] + fp[last])]
    recall = np.r_[0.0, tp[last] / num_with_positive]
    thresholds = np.r_[np.inf, s[last]]
    perfect = precision == 1.0
    # Largest recall before the first threshold that admits a false positive.
    first_bad = np.argmin(perfect) if not perfect.all() else len(perfect)
    r100 = float(recall[:first_bad].max()) if first_bad else 0.0
    auc = float(np.sum(np.diff(recall) * (precision[1:] + precision[:-1]) / 2))
    return {
        "auc": auc,
        "recall_at_100_precision": r100,
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "thresholds": [None if not np.isfinite(t) else float(t) for t in thresholds],
    }
