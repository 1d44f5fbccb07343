"""``evaluate(dataset, extractor)``: the steps of ``structvpr eval`` in order, as one result dict,
and ``format_result``, the table printed from that dict.

Descriptors (from the cache when they are there) → exact faiss search → Recall@N → for
sequences the precision–recall of each query's best match → optionally a picture per query.
The model and the dataset come from the caller (``commands/eval.py`` reads them from flags).

Low-quality queries: the database is embedded as it is; the queries may be degraded first
(``query_degradation``, a ``degrade`` spec, deterministic under ``seed``) and embedded by another
model (``query_extractor``), which must be allowed to query the database model's descriptors
(``fingerprint.accepts``: the same model, or a query encoder trained for it).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..degrade import Degradation, parse_degradation
from ..errors import ConfigError, DatasetError
from ..fingerprint import refusal
from ..log import get_logger
from ..weights import weights_name
from .descriptor_cache import dataset_descriptors
from .match_images import save_match_images
from .recall import DEFAULT_NS, precision_recall, recall_from_predictions, search

log = get_logger(__name__)


def evaluate(
    dataset,
    extractor,
    ns: Sequence[int] = DEFAULT_NS,
    *,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = True,
    save_matches: str | Path | None = None,
    matches_k: int = 5,
    query_extractor=None,
    query_degradation: str | Degradation | None = None,
    seed: int = 0,
) -> dict:
    """Embed ``dataset`` with ``extractor`` and return the result JSON of ``structvpr eval``.

    ``query_extractor`` (default ``extractor``) embeds the queries, degraded first by
    ``query_degradation``; see the module docstring.
    """
    started = time.perf_counter()
    ns = sorted({int(n) for n in ns})
    if not ns or ns[0] < 1:
        raise DatasetError(f"recall N must be >= 1, got {ns}")
    spec = parse_degradation(query_degradation)
    qx = query_extractor or extractor
    check_query_model(extractor, qx)
    log.info("%s", dataset.summary())

    # 1. Descriptors of the database and the (degraded) queries, cached per files, model and degradation.
    db, q, cached = dataset_descriptors(
        dataset,
        extractor,
        cache_dir,
        use_cache,
        progress,
        query_extractor=qx,
        query_degradation=spec,
        seed=seed,
    )
    # 2. Exact search: enough neighbours for the largest N and for the match pictures.
    scores, predictions = search(db, q, max(max(ns), matches_k))
    # 3. Recall@N; for sequences (loop closure) also precision-recall of each query's best match.
    recall = recall_from_predictions(predictions, dataset.positives, ns)
    with_pos = sum(1 for p in dataset.positives if len(p))
    pr = None
    if dataset.kind == "sequence":
        correct = np.array([predictions[i, 0] in dataset.positives[i] for i in range(dataset.num_queries)])
        pr = precision_recall(scores[:, 0], correct, with_pos)
    # 4. Optionally, a picture per query beside its top matches.
    if save_matches is not None:
        save_match_images(dataset, predictions[:, :matches_k], scores[:, :matches_k], save_matches, progress=progress)

    return {
        "dataset": str(dataset.root),
        "name": dataset.name,
        "format": dataset.format,
        "split": dataset.split,
        "kind": dataset.kind,
        "synthetic": bool(dataset.synthetic),
        "checkpoint": _checkpoint(extractor),
        "fingerprint": dict(extractor.fingerprint),
        "query_checkpoint": _checkpoint(qx),
        "query_fingerprint": dict(qx.fingerprint),
        "query_encoder_for": getattr(qx, "query_encoder_for", None),
        "query_degradation": str(spec),
        "seed": int(seed),
        "image_size": list(extractor.image_size),
        "num_queries": dataset.num_queries,
        "num_queries_with_positives": with_pos,
        "num_database": dataset.num_database,
        "descriptor_dim": int(db.shape[1]),
        "mean_positives_per_query": float(np.mean([len(p) for p in dataset.positives])),
        "recall": {str(n): r for n, r in recall.items()},
        "pr": pr,
        "descriptors_cached": cached,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _checkpoint(extractor) -> str | None:
    return None if getattr(extractor, "checkpoint", None) is None else str(extractor.checkpoint)


def check_query_model(extractor, query_extractor) -> None:
    """ConfigError when ``query_extractor`` may not query descriptors made by ``extractor`` (one line,
    naming both models); a warning when the database model is itself a query encoder."""
    name = _checkpoint(extractor) or "ImageNet RGB branch"
    if getattr(extractor, "query_encoder_for", None) is not None:
        log.warning(
            "the database model %s is a query encoder (a low-quality-query student): maps and databases "
            "are its teacher's to build; give the teacher as the database model and the student as the query model",
            name,
        )
    if query_extractor is extractor:
        return
    teacher = getattr(query_extractor, "query_encoder_for", None)
    reason = refusal(
        extractor.fingerprint, query_extractor.fingerprint, teacher, map_name=name, teacher_name=weights_name(teacher)
    )
    if reason:
        raise ConfigError(
            f"query model {_checkpoint(query_extractor) or 'ImageNet RGB branch'}: the database was {reason}"
        )


def format_result(result: dict) -> str:
    """The human-readable table ``structvpr eval`` prints."""
    tag = "  [SYNTHETIC data]" if result.get("synthetic") else ""
    lines = [
        f"{result['name']} ({result['format']}{', ' + result['split'] if result['split'] else ''}){tag}",
        f"  {result['num_queries']} queries ({result['num_queries_with_positives']} with positives), "
        f"{result['num_database']} database images, {result['descriptor_dim']}-d descriptors, "
        f"input {result['image_size'][0]}x{result['image_size'][1]}",
        "  " + "  ".join(f"R@{n} {100 * r:5.1f}%" for n, r in result["recall"].items()),
    ]
    if result.get("pr"):
        lines.append(
            f"  PR AUC {result['pr']['auc']:.3f}  recall@100%precision "
            f"{100 * result['pr']['recall_at_100_precision']:.1f}%"
        )
    model = result["checkpoint"] or "ImageNet-initialised RGB branch (untrained)"
    lines.append(
        f"  model: {model}; {result['seconds']:.1f} s"
        f"{' (descriptors from cache)' if result.get('descriptors_cached') else ''}"
    )
    degraded = result.get("query_degradation", "none") != "none"
    if degraded or result.get("query_fingerprint", result["fingerprint"]) != result["fingerprint"]:
        qmodel = result.get("query_checkpoint") or "ImageNet-initialised RGB branch (untrained)"
        encoder = " (query encoder)" if result.get("query_encoder_for") else ""
        how = f"degraded '{result['query_degradation']}' (seed {result['seed']})" if degraded else "undegraded"
        lines.append(f"  queries: {how}; query model: {qmodel}{encoder}")
    if result.get("synthetic"):
        lines.append("  note: synthetic data; these numbers say nothing about real imagery")
    return "\n".join(lines)
