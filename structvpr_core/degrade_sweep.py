"""Recall against query degradation: one database, queries degraded step by step, one or more query models.

Read top to bottom: dataset → the database embedded once by the database model → for each query
model (the database model itself, then every query encoder given) and each degradation spec:
the queries degraded (``degrade``, query i drawing from ``[seed, i]``) and embedded → exact search
→ Recall@N. Descriptors go through the evaluation cache, keyed on the model and the spec, so a
second sweep (or a ``structvpr eval`` of one of its points) reads them back::

    result = degrade_sweep.main(
        {"model": {"image_size": (160, 120)}, "query_checkpoints": ["runs/lqq/best.pt"]},
        Path("datasets/corridor"), json_out=Path("sweep.json"), plot_out=Path("sweep.png"),
    )

``structvpr degrade-sweep`` is a thin argument parser over ``main``; ``plot`` draws Recall@1
against the degradation (the specs in the order given) with one line per query model.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .config import merge_conf
from .log import get_logger

log = get_logger(__name__)

# The low-quality-query table of the issue: clean, downscaled + JPEG 30, JPEG 10, heavily downscaled.
DEFAULT_DEGRADATIONS = ("none", "size=160x120,jpeg=30", "jpeg=10", "size=80x60,jpeg=50")

default_conf = {
    "model": {  # the database model: it embeds the database, and the queries on the first line
        "checkpoint": None,  # None = the ImageNet-initialised RGB branch
        "image_size": (640, 480),  # network input (W, H) of every model
        "device": "auto",
        "backend": "auto",
        "batch_size": 8,
    },
    "query_checkpoints": [],  # further query models: query encoders trained for the database model
    "degradations": list(DEFAULT_DEGRADATIONS),  # query degradation specs, in plot order
    "seed": 0,  # random draws of specs with ranges: query i uses [seed, i]
    "recall": [1, 5],  # Recall@N reported (the plot shows the first)
    "dataset_format": "auto",
    "split": "test",
    "cache_dir": None,  # descriptor cache (None: $STRUCTVPR_CACHE or ~/.cache/structvpr)
    "use_cache": True,
    "progress": True,
}


def _labels(extractors: list) -> list[str]:
    """A short distinct name per model: its checkpoint's file name (the path when two share it)."""

    def name(ex, full: bool) -> str:
        base = "ImageNet RGB branch" if ex.checkpoint is None else str(ex.checkpoint if full else ex.checkpoint.name)
        return f"{base} (query encoder)" if ex.query_encoder_for is not None else base

    short = [name(ex, False) for ex in extractors]
    labels = [name(ex, short.count(s) > 1) for ex, s in zip(extractors, short, strict=True)]
    return [f"{label} #{i + 1}" if labels.count(label) > 1 else label for i, label in enumerate(labels)]


def sweep(dataset, extractor, query_extractors: list, conf: dict) -> dict:
    """The sweep's result for a loaded dataset, the database model and the query models (JSON-ready)."""
    from .degrade import parse_degradation
    from .evaluate import recall_from_predictions, search
    from .evaluate.descriptor_cache import cached_descriptors
    from .evaluate.pipeline import check_query_model

    started = time.perf_counter()
    specs = [parse_degradation(spec) for spec in conf["degradations"]]
    ns = sorted({int(n) for n in conf["recall"]})
    for qx in query_extractors:
        check_query_model(extractor, qx)
    cache = {"cache_dir": conf["cache_dir"], "use_cache": conf["use_cache"], "progress": conf["progress"]}
    log.info("%s", dataset.summary())

    # 1. The database, once.
    db, _ = cached_descriptors(dataset.database, extractor, **cache)
    # 2. Every query model at every degradation.
    models = [extractor, *query_extractors]
    labels = _labels(models)
    rows = []
    for qx, label in zip(models, labels, strict=True):
        for spec in specs:
            q, cached = cached_descriptors(dataset.queries, qx, degradation=spec, seed=conf["seed"], **cache)
            _, predictions = search(db, q, max(ns))
            recall = recall_from_predictions(predictions, dataset.positives, ns)
            rows.append(
                {
                    "query_model": label,
                    "degradation": str(spec),
                    "recall": {str(n): r for n, r in recall.items()},
                    "descriptors_cached": cached,
                }
            )
            log.debug("%s at %s: %s", label, spec, recall)
    return {
        "dataset": str(dataset.root),
        "name": dataset.name,
        "format": dataset.format,
        "split": dataset.split,
        "synthetic": bool(dataset.synthetic),
        "num_queries": dataset.num_queries,
        "num_database": dataset.num_database,
        "image_size": list(extractor.image_size),
        "database_model": {
            "checkpoint": None if extractor.checkpoint is None else str(extractor.checkpoint),
            "fingerprint": dict(extractor.fingerprint),
        },
        "query_models": [
            {
                "label": label,
                "checkpoint": None if qx.checkpoint is None else str(qx.checkpoint),
                "fingerprint": dict(qx.fingerprint),
                "query_encoder_for": qx.query_encoder_for,
            }
            for qx, label in zip(models, labels, strict=True)
        ],
        "degradations": [str(spec) for spec in specs],
        "seed": int(conf["seed"]),
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 3),
    }


def format_table(result: dict) -> str:
    """The table ``structvpr degrade-sweep`` prints: one row per (query model, degradation)."""
    ns = list(result["rows"][0]["recall"]) if result["rows"] else []
    width = max([len("degradation"), *(len(spec) for spec in result["degradations"])])
    tag = "  [SYNTHETIC data]" if result["synthetic"] else ""
    w, h = result["image_size"]
    db_model = result["database_model"]["checkpoint"] or "ImageNet RGB branch"
    lines = [
        f"{result['name']}: {result['num_queries']} queries, {result['num_database']} database images, "
        f"input {w}x{h}; database model {db_model}{tag}",
    ]
    for model in result["query_models"]:
        lines.append(f"query model: {model['label']}")
        lines.append("  " + f"{'degradation':<{width}}" + "".join(f"  {'R@' + n:>6}" for n in ns))
        for row in result["rows"]:
            if row["query_model"] == model["label"]:
                values = "".join(f"  {100 * row['recall'][n]:5.1f}%" for n in ns)
                lines.append("  " + f"{row['degradation']:<{width}}" + values)
    if result["synthetic"]:
        lines.append("note: synthetic data; these numbers say nothing about real imagery")
    return "\n".join(lines)


def plot(result: dict, path: str | os.PathLike) -> None:
    """Recall@N (the first N) against the degradation, one line per query model, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .atomic import atomic_write

    n = next(iter(result["rows"][0]["recall"]))
    specs = result["degradations"]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(specs) + 2), 4.5))
    for model in result["query_models"]:
        values = {r["degradation"]: 100 * r["recall"][n] for r in result["rows"] if r["query_model"] == model["label"]}
        ys = [values[s] for s in specs]
        ax.plot(range(len(specs)), ys, marker="o", label=model["label"])
        for x, y in enumerate(ys):
            ax.annotate(f"{y:.1f}", (x, y), fontsize=8, textcoords="offset points", xytext=(0, 6), ha="center")
    ax.set_xticks(range(len(specs)), specs, rotation=15, ha="right", fontsize=8)
    ax.set_xlabel("query degradation (database undegraded)")
    ax.set_ylabel(f"Recall@{n} (%)")
    ax.set_ylim(0, 105)
    ax.grid(alpha=0.3)
    w, h = result["image_size"]
    synthetic = " [SYNTHETIC]" if result["synthetic"] else ""
    ax.set_title(f"{result['name']}{synthetic}: Recall@{n} vs query degradation, input {w}x{h}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def main(conf: dict | None, dataset_root: Path, json_out: Path | None = None, plot_out: Path | None = None) -> dict:
    """hloc-style entry: the sweep of ``dataset_root`` under ``conf``; JSON and PNG written when asked."""
    from .atomic import atomic_write_json
    from .data import load_dataset
    from .degrade import parse_degradation
    from .errors import ConfigError
    from .extractor import Extractor

    conf = merge_conf(default_conf, conf)
    if not conf["degradations"]:
        raise ConfigError("degradations: give at least one spec ('none' for the undegraded queries)")
    for spec in conf["degradations"]:
        parse_degradation(spec)  # bad specs fail before any model loads
    if not conf["recall"] or min(int(n) for n in conf["recall"]) < 1:
        raise ConfigError(f"recall: N must be >= 1, got {conf['recall']}")
    dataset = load_dataset(dataset_root, conf["dataset_format"], split=conf["split"])
    model = conf["model"]
    options = {
        "device": model["device"],
        "image_size": (int(model["image_size"][0]), int(model["image_size"][1])),
        "batch_size": model["batch_size"],
        "backend": model["backend"],
    }
    extractor = Extractor(model["checkpoint"], **options)
    query_extractors = [Extractor(path, **options) for path in conf["query_checkpoints"]]
    result = sweep(dataset, extractor, query_extractors, conf)
    if json_out is not None:
        atomic_write_json(json_out, result)
    if plot_out is not None:
        plot(result, plot_out)
    return result
