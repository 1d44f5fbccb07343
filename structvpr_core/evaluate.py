"""Evaluation as the VPR community computes it: Recall@N, and precision–recall for loop closure.

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
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from .atomic import atomic_write
from .errors import DatasetError
from .paths import cache_root

DEFAULT_NS = (1, 5, 10, 20)
CACHE_VERSION = 1


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


def recall_from_predictions(predictions: np.ndarray, positives: Sequence[np.ndarray],
                            ns: Sequence[int] = DEFAULT_NS) -> dict[int, float]:
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


def recall_at_n(db_desc: np.ndarray, q_desc: np.ndarray, positives: Sequence[np.ndarray],
                ns: Sequence[int] = DEFAULT_NS) -> dict[int, float]:
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
    return {"auc": auc, "recall_at_100_precision": r100, "precision": precision.tolist(),
            "recall": recall.tolist(), "thresholds": [None if not np.isfinite(t) else float(t) for t in thresholds]}


# ---------------------------------------------------------------------------------------------
# Descriptors of a dataset, cached


def default_cache_dir() -> Path:
    return cache_root()


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


def dataset_descriptors(dataset, extractor, cache_dir: str | Path | None = None, use_cache: bool = True,
                        progress: bool = True) -> tuple[np.ndarray, np.ndarray, bool]:
    """(database descriptors, query descriptors, whether they came from the cache)."""
    path = None
    if use_cache:
        key = cache_key(dataset, extractor.fingerprint)
        path = Path(cache_dir or default_cache_dir()) / "descriptors" / f"{key}.npz"
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as data:
                    db, q = data["database"], data["queries"]
                if db.shape == (dataset.num_database, extractor.dim) and q.shape == (dataset.num_queries, extractor.dim):
                    return db, q, True
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache entry is recomputed and replaced
    db = extractor.embed_paths(dataset.database, progress=progress)
    q = extractor.embed_paths(dataset.queries, progress=progress)
    if path is not None:
        atomic_write(path, lambda p: _save_npz(p, database=db, queries=q))
    return db, q, False


def evaluate(dataset, extractor, ns: Sequence[int] = DEFAULT_NS, *, cache_dir: str | Path | None = None,
             use_cache: bool = True, progress: bool = True, save_matches: str | Path | None = None,
             matches_k: int = 5) -> dict:
    """Embed ``dataset`` with ``extractor`` and return the result JSON of ``structvpr eval``."""
    started = time.perf_counter()
    ns = sorted({int(n) for n in ns})
    if not ns or ns[0] < 1:
        raise DatasetError(f"recall N must be >= 1, got {ns}")
    db, q, cached = dataset_descriptors(dataset, extractor, cache_dir, use_cache, progress)
    scores, predictions = search(db, q, max(max(ns), matches_k))
    with_pos = sum(1 for p in dataset.positives if len(p))
    result = {
        "dataset": str(dataset.root), "name": dataset.name, "format": dataset.format, "split": dataset.split,
        "kind": dataset.kind, "synthetic": bool(dataset.synthetic),
        "checkpoint": None if getattr(extractor, "checkpoint", None) is None else str(extractor.checkpoint),
        "fingerprint": dict(extractor.fingerprint), "image_size": list(extractor.image_size),
        "num_queries": dataset.num_queries, "num_queries_with_positives": with_pos,
        "num_database": dataset.num_database, "descriptor_dim": int(db.shape[1]),
        "mean_positives_per_query": float(np.mean([len(p) for p in dataset.positives])),
        "recall": {str(n): r for n, r in recall_from_predictions(predictions, dataset.positives, ns).items()},
        "pr": None, "descriptors_cached": cached,
    }
    if dataset.kind == "sequence":
        correct = np.array([predictions[i, 0] in dataset.positives[i] for i in range(dataset.num_queries)])
        result["pr"] = precision_recall(scores[:, 0], correct, with_pos)
    if save_matches is not None:
        save_match_images(dataset, predictions[:, :matches_k], scores[:, :matches_k], save_matches, progress=progress)
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result


def _thumbnail(path: Path, height: int) -> np.ndarray:
    import cv2

    from .images import read_image

    image = read_image(path)
    h, w = image.shape[:2]
    return cv2.resize(image, (max(1, round(w * height / h)), height), interpolation=cv2.INTER_AREA)


def save_match_images(dataset, predictions: np.ndarray, scores: np.ndarray, out_dir: str | Path,
                      height: int = 160, progress: bool = True) -> None:
    """One JPEG per query: the query (blue frame) beside its top matches, green if correct, red if wrong."""
    import cv2
    from tqdm import tqdm

    from .atomic import atomic_write_bytes

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pad = 6
    for i in tqdm(range(dataset.num_queries), desc="match images", unit="query", disable=not progress):
        tiles = [cv2.copyMakeBorder(_thumbnail(dataset.queries[i], height), pad, pad, pad, pad,
                                    cv2.BORDER_CONSTANT, value=(200, 120, 0))]
        ok_top1 = False
        for rank, (j, s) in enumerate(zip(predictions[i], scores[i])):
            if j < 0:
                continue
            good = j in dataset.positives[i]
            ok_top1 = ok_top1 or (rank == 0 and good)
            tile = cv2.copyMakeBorder(_thumbnail(dataset.database[j], height), pad, pad, pad, pad,
                                      cv2.BORDER_CONSTANT, value=(0, 170, 0) if good else (0, 0, 230))
            cv2.putText(tile, f"#{rank + 1} {s:.3f}", (pad + 3, pad + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                        (255, 255, 255), 1, cv2.LINE_AA)
            tiles.append(tile)
        row = np.hstack([np.pad(t, ((0, height + 2 * pad - t.shape[0]), (0, 4), (0, 0))) for t in tiles])
        ok, jpg = cv2.imencode(".jpg", row, [int(cv2.IMWRITE_JPEG_QUALITY), 85])
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(dataset.queries[i]).stem)[:60]
        name = f"q{i:06d}_{'ok' if ok_top1 else 'wrong'}_{stem}.jpg"
        atomic_write_bytes(out_dir / name, jpg.tobytes())


def format_result(result: dict) -> str:
    """The human-readable table ``structvpr eval`` prints."""
    tag = "  [SYNTHETIC data]" if result.get("synthetic") else ""
    lines = [f"{result['name']} ({result['format']}{', ' + result['split'] if result['split'] else ''}){tag}",
             f"  {result['num_queries']} queries ({result['num_queries_with_positives']} with positives), "
             f"{result['num_database']} database images, {result['descriptor_dim']}-d descriptors, "
             f"input {result['image_size'][0]}x{result['image_size'][1]}",
             "  " + "  ".join(f"R@{n} {100 * r:5.1f}%" for n, r in result["recall"].items())]
    if result.get("pr"):
        lines.append(f"  PR AUC {result['pr']['auc']:.3f}  recall@100%precision "
                     f"{100 * result['pr']['recall_at_100_precision']:.1f}%")
    model = result["checkpoint"] or "ImageNet-initialised RGB branch (untrained)"
    lines.append(f"  model: {model}; {result['seconds']:.1f} s"
                 f"{' (descriptors from cache)' if result.get('descriptors_cached') else ''}")
    if result.get("synthetic"):
        lines.append("  note: synthetic data; these numbers say nothing about real imagery")
    return "\n".join(lines)
