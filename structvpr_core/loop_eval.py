"""The loop-closure report on a route: a dataset's queries through the ``LoopClosureDetector``.

Read top to bottom: dataset → map of its database images (built in memory, or a prebuilt one
whose keyframe sources are those images) → every query through the detector (localization
mode, every frame a keyframe) → Recall@1/@5, precision-recall of the top-1, timings::

    report = loop_eval.evaluate_loop(Path("data/corridor"), {"verification": {"enabled": True}})

Low-quality queries: ``conf["query"]`` degrades each query image first (``degradation``, a
``degrade`` spec; image i draws its random values from ``[seed, i]``) and may embed the queries
with a query encoder trained for the map's model (``checkpoint``); the map is built by (or was
built with) the model block's model either way.

``structvpr eval-loop`` is a thin argument parser over ``main``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .config import merge_conf
from .log import get_logger
from .mapbuild import MODEL_CONF, make_verifier

log = get_logger(__name__)

default_conf = {
    "model": dict(MODEL_CONF),  # image_size applies when the map is built here; a prebuilt map has its own
    "dataset_format": "auto",
    "verification": {
        "enabled": False,  # also report with geometric verification (re-ranked by inliers)
        "features": "sift",  # sift or orb
        "ransac": "homography",  # homography or fundamental
        "candidates": 10,  # search results verified and re-ranked per query
    },
    "query": {
        "checkpoint": None,  # a query encoder (low-quality-query student) for the map's model; None = the map's model
        "degradation": "none",  # degradation spec applied to each query image before it is embedded
        "seed": 0,  # random draws of a degradation with ranges
    },
    "progress": True,
}


# -- metrics -----------------------------------------------------------------------------------


def summarize(ranked: list[list[int]], top1_conf: list[float], positives: list[np.ndarray]) -> dict:
    """Recall@1/@5 and precision-recall of the top-1, with structvpr_core.evaluate's definitions."""
    from .evaluate import precision_recall, recall_from_predictions

    # The detector may return fewer than k candidates: pad with -1, which is never a positive.
    width = max(5, max((len(r) for r in ranked), default=0))
    predictions = np.full((len(ranked), width), -1, dtype=np.int64)
    for i, r in enumerate(ranked):
        predictions[i, : len(r)] = r
    recall = recall_from_predictions(predictions, positives, ns=(1, 5))
    correct = np.array([bool(np.isin(predictions[i, 0], p)) for i, p in enumerate(positives)])
    conf = np.array([c if r else -np.inf for c, r in zip(top1_conf, ranked, strict=True)], dtype=np.float64)
    pr = precision_recall(conf, correct, sum(len(p) > 0 for p in positives))
    return {
        "recall@1": recall[1],
        "recall@5": recall[5],
        "pr_auc": pr["auc"],
        "recall_at_100_precision": pr["recall_at_100_precision"],
        "curve": {"precision": pr["precision"], "recall": pr["recall"]},
    }


def timing_stats(values: list[float]) -> dict:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"mean": None, "median": None, "p95": None}
    return {"mean": float(a.mean()), "median": float(np.median(a)), "p95": float(np.percentile(a, 95))}


# -- steps -------------------------------------------------------------------------------------


def database_map(dataset, conf: dict, verifier, map_dir: Path | None = None):
    """(map, query extractor, build seconds or None): ``map_dir`` opened, else a flat map built here.

    The query extractor is ``conf["query"]["checkpoint"]`` when given (checked against the map's
    model), else the map's model.
    """
    from .errors import MapError
    from .mapbuild import add_frames, make_extractor
    from .mapdb import MapDatabase
    from .mapquery import open_map
    from .mapsources import frames_from_images

    model, query_checkpoint = conf["model"], conf["query"]["checkpoint"]
    if map_dir is not None:
        mapdb, extractor = open_map(
            map_dir,
            model["checkpoint"],
            model["device"],
            model["backend"],
            image_size=model["image_size"],
            query_checkpoint=query_checkpoint,
        )
        features = conf["verification"]["features"]
        if verifier is not None and mapdb.meta.get("features") not in (None, "none", features):
            raise MapError(
                f"{map_dir}: stores {mapdb.meta['features']} features; pass --features {mapdb.meta['features']}"
            )
        return mapdb, extractor, None
    t0 = time.perf_counter()
    extractor = make_extractor(model)
    mapdb = MapDatabase.create(
        extractor.fingerprint,
        extractor.dim,
        "flat",
        meta={"features": conf["verification"]["features"] if verifier else "none"},
    )
    add_frames(
        mapdb,
        extractor,
        frames_from_images(dataset.database, None, "database"),
        verifier,
        model["batch_size"],
        total=len(dataset.database),
        progress=conf["progress"],
    )
    build_s = time.perf_counter() - t0
    if query_checkpoint is not None:
        extractor = make_query_extractor(query_checkpoint, model, extractor.image_size)
        mapdb.check_fingerprint(extractor.fingerprint, query_encoder_for=extractor.query_encoder_for)
    return mapdb, extractor, build_s


def make_query_extractor(checkpoint, model: dict, image_size: tuple[int, int]):
    """The Extractor of a query model, run like the map's ``model`` block at the map's input size."""
    from .extractor import Extractor

    return Extractor(
        checkpoint,
        device=model["device"],
        image_size=image_size,
        batch_size=model["batch_size"],
        backend=model["backend"],
    )


def map_ids_to_database(mapdb, dataset) -> dict[int, int]:
    """Map keyframe id → index of the dataset database image it was made from (by resolved path)."""
    db_index = {str(Path(p).resolve()): i for i, p in enumerate(dataset.database)}
    return {kf.id: db_index[kf.source] for kf in mapdb.keyframes() if kf.source in db_index}


def run_detector(
    dataset,
    mapdb,
    extractor,
    id_to_db: dict[int, int],
    verifier=None,
    verify_candidates: int = 10,
    progress: bool = True,
    degradation=None,
    seed: int = 0,
) -> dict:
    """Queries through the detector (each degraded first by ``degradation``, image i with ``[seed, i]``);
    rankings without and with verification and timings."""
    import sys

    from tqdm import tqdm

    from .degrade import parse_degradation
    from .images import read_image
    from .loopclosure import DetectorConfig, LoopClosureDetector

    degradation = parse_degradation(degradation)
    k = max(5, verify_candidates)
    cfg = DetectorConfig(
        top_k=k, min_score=-1.0, verify=verifier is not None, min_inliers=0, mode="localization", verify_candidates=k
    )
    det = LoopClosureDetector(extractor, mapdb, cfg, verifier=verifier)
    rank_s, conf_s, rank_v, conf_v = [], [], [], []
    times = {"extract": [], "search": [], "verify": []}
    inliers: list[list[int]] = []
    for i, q in enumerate(tqdm(dataset.queries, desc="eval-loop", unit="query", disable=not progress, file=sys.stderr)):
        det.reset()
        image = read_image(q)
        if not degradation.is_identity:
            image = degradation.apply_seeded(image, seed, i)
        d = det.process(image, stamp=float(i), source=str(q))
        by_score = sorted(d.candidates, key=lambda c: -c.score)
        rank_s.append([id_to_db.get(c.map_id, -1) for c in by_score])
        conf_s.append(by_score[0].score if by_score else -np.inf)
        times["extract"].append(d.extract_ms)
        times["search"].append(d.search_ms)
        if verifier is not None:
            rank_v.append([id_to_db.get(c.map_id, -1) for c in d.candidates])  # re-ranked by inliers
            # inliers, ties broken by the cosine score (|score / 2| < 1 keeps the inlier order)
            conf_v.append(d.candidates[0].inliers + d.candidates[0].score / 2 if d.candidates else -np.inf)
            inliers.append([c.inliers for c in d.candidates])
            times["verify"].append(d.verify_ms)
    report = {"retrieval": summarize(rank_s, conf_s, dataset.positives)}
    if verifier is not None:
        report["verified"] = summarize(rank_v, conf_v, dataset.positives)
        report["verified"]["verified_candidates_per_query"] = k
    report["timings_ms"] = {name: timing_stats(v) for name, v in times.items() if v}
    report["per_query"] = [
        {
            "query": str(q),
            "positives": p.tolist(),
            "by_score": rs[:5],
            "top1_score": cs if np.isfinite(cs) else None,
            **({"by_inliers": rank_v[i][:5], "inliers": inliers[i][:5]} if verifier is not None else {}),
        }
        for i, (q, p, rs, cs) in enumerate(zip(dataset.queries, dataset.positives, rank_s, conf_s, strict=True))
    ]
    return report


# -- the pipeline ------------------------------------------------------------------------------


def evaluate_loop(dataset_root: Path, conf: dict | None = None, *, map_dir: Path | None = None) -> dict:
    """The loop-closure report of ``dataset_root`` (see the module docstring); JSON-ready."""
    from .data import load_dataset
    from .degrade import parse_degradation
    from .errors import MapError

    conf = merge_conf(default_conf, conf)
    ver, query = conf["verification"], conf["query"]
    degradation = parse_degradation(query["degradation"])  # a bad spec fails before any model loads
    dataset = load_dataset(dataset_root, conf["dataset_format"])
    verifier = make_verifier(ver["features"], ransac=ver["ransac"]) if ver["enabled"] else None
    mapdb, extractor, build_s = database_map(dataset, conf, verifier, map_dir)
    id_to_db = map_ids_to_database(mapdb, dataset)
    if len(id_to_db) != dataset.num_database:
        raise MapError(
            f"{map_dir or 'map'}: {len(id_to_db)} of its keyframes are the dataset's "
            f"{dataset.num_database} database images (build it from {dataset_root})"
        )
    log.debug("eval-loop: %d queries against %d keyframes (%s)", dataset.num_queries, len(mapdb), mapdb.index_type)
    report = {
        "dataset": str(dataset_root),
        "num_queries": dataset.num_queries,
        "num_database": dataset.num_database,
        "synthetic": bool(getattr(dataset, "synthetic", False)),
        "model": mapdb.fingerprint,
        "query_model": extractor.fingerprint,
        "query_checkpoint": None if query["checkpoint"] is None else str(query["checkpoint"]),
        "query_encoder_for": extractor.query_encoder_for,
        "query_degradation": str(degradation),
        "seed": int(query["seed"]),
        "index": mapdb.index_type,
        "verification": None
        if verifier is None
        else {
            "feature": ver["features"],
            "ransac": ver["ransac"],
            "reproj_threshold_px": verifier.config.reproj_threshold_px,
        },
        "map_build_s": build_s,
    }
    report.update(
        run_detector(
            dataset,
            mapdb,
            extractor,
            id_to_db,
            verifier,
            ver["candidates"],
            conf["progress"],
            degradation=degradation,
            seed=query["seed"],
        )
    )
    return report


def main(conf: dict | None, dataset_root: Path, json_out: Path | None = None, map_dir: Path | None = None) -> dict:
    """hloc-style entry: the report of ``evaluate_loop``, also written to ``json_out`` when given."""
    from .atomic import atomic_write_json

    report = evaluate_loop(dataset_root, conf, map_dir=map_dir)
    if json_out is not None:
        atomic_write_json(json_out, report)
    return report
