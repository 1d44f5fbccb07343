"""``structvpr eval-loop``: loop-closure quality of the detector on a dataset with ground truth."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ._common import add_backend_argument

NAME = "eval-loop"
HELP = "run a dataset's queries through the loop-closure detector: Recall@N, PR AUC, timings"
DESCRIPTION = """\
Build a map from the dataset's database images (or use --map, whose keyframe sources must be
those images), run every query image through the LoopClosureDetector (localization mode, every
frame a keyframe) and report, without and with geometric verification (--verify):
  Recall@1/@5        a query is correct if one of its top N is a ground-truth positive;
  PR AUC             precision-recall of accepting the top-1 candidate, swept over its
                     confidence (cosine score; when verified, inliers + score/2), recall over all
                     queries that have a positive; area by trapezoids;
  recall@100%P       the largest recall at which every accepted top-1 is correct;
and the per-stage timings (extract, search, verify) in ms.

Example (the real Corridor route in VPR-Bench layout):
  structvpr eval-loop --dataset ../shared/data/corridor --verify --json corridor_loop.json
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", type=Path, required=True, metavar="DIR", help="dataset root")
    p.add_argument("--format", default="auto", help="dataset format (default: auto)")
    p.add_argument("--map", type=Path, metavar="MAPDIR", help="prebuilt map of the dataset's database images")
    p.add_argument("--checkpoint", type=Path, metavar="PATH", help="model checkpoint (default: ImageNet init)")
    p.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), default=(640, 480),
                   help="network input size when building the map (default: 640 480)")
    p.add_argument("--verify", action="store_true", help="also evaluate with geometric verification")
    p.add_argument("--features", choices=("sift", "orb"), default="sift", help="local features (default: sift)")
    p.add_argument("--ransac", choices=("homography", "fundamental"), default="homography",
                   help="geometric model (default: homography)")
    p.add_argument("--verify-candidates", type=int, default=10, metavar="N",
                   help="search results verified and re-ranked per query (default: 10)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)")
    add_backend_argument(p)
    p.add_argument("--json", type=Path, metavar="FILE", help="write the report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


# -- metrics -----------------------------------------------------------------------------------

def summarize(ranked: list[list[int]], top1_conf: list[float], positives: list[np.ndarray]) -> dict:
    """Recall@1/@5 and precision-recall of the top-1, with structvpr_core.evaluate's definitions."""
    from ..evaluate import precision_recall, recall_from_predictions

    # The detector may return fewer than k candidates: pad with -1, which is never a positive.
    width = max(5, max((len(r) for r in ranked), default=0))
    predictions = np.full((len(ranked), width), -1, dtype=np.int64)
    for i, r in enumerate(ranked):
        predictions[i, :len(r)] = r
    recall = recall_from_predictions(predictions, positives, ns=(1, 5))
    correct = np.array([bool(np.isin(predictions[i, 0], p)) for i, p in enumerate(positives)])
    conf = np.array([c if r else -np.inf for c, r in zip(top1_conf, ranked)], dtype=np.float64)
    pr = precision_recall(conf, correct, sum(len(p) > 0 for p in positives))
    return {"recall@1": recall[1], "recall@5": recall[5], "pr_auc": pr["auc"],
            "recall_at_100_precision": pr["recall_at_100_precision"],
            "curve": {"precision": pr["precision"], "recall": pr["recall"]}}


def _timing_stats(values: list[float]) -> dict:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"mean": None, "median": None, "p95": None}
    return {"mean": float(a.mean()), "median": float(np.median(a)), "p95": float(np.percentile(a, 95))}


# -- running -----------------------------------------------------------------------------------

def run_detector(dataset, mapdb, extractor, id_to_db: dict[int, int], verifier=None,
                 verify_candidates: int = 10, progress: bool = True) -> dict:
    """Queries through the detector; rankings without and with verification and timings."""
    from tqdm import tqdm

    from ..images import read_image
    from ..loopclosure import DetectorConfig, LoopClosureDetector

    k = max(5, verify_candidates)
    cfg = DetectorConfig(top_k=k, min_score=-1.0, verify=verifier is not None, min_inliers=0,
                         mode="localization", verify_candidates=k)
    det = LoopClosureDetector(extractor, mapdb, cfg, verifier=verifier)
    rank_s, conf_s, rank_v, conf_v = [], [], [], []
    times = {"extract": [], "search": [], "verify": []}
    inliers: list[list[int]] = []
    for i, q in enumerate(tqdm(dataset.queries, desc="eval-loop", unit="query", disable=not progress,
                               file=sys.stderr)):
        det.reset()
        d = det.process(read_image(q), stamp=float(i), source=str(q))
        by_score = sorted(d.candidates, key=lambda c: -c.score)
        rank_s.append([id_to_db.get(c.map_id, -1) for c in by_score])
        conf_s.append(by_score[0].score if by_score else -np.inf)
        times["extract"].append(d.extract_ms)
        times["search"].append(d.search_ms)
        if verifier is not None:
            rank_v.append([id_to_db.get(c.map_id, -1) for c in d.candidates])   # re-ranked by inliers
            # inliers, ties broken by the cosine score (|score / 2| < 1 keeps the inlier order)
            conf_v.append(d.candidates[0].inliers + d.candidates[0].score / 2 if d.candidates else -np.inf)
            inliers.append([c.inliers for c in d.candidates])
            times["verify"].append(d.verify_ms)
    report = {"retrieval": summarize(rank_s, conf_s, dataset.positives)}
    if verifier is not None:
        report["verified"] = summarize(rank_v, conf_v, dataset.positives)
        report["verified"]["verified_candidates_per_query"] = k
    report["timings_ms"] = {name: _timing_stats(v) for name, v in times.items() if v}
    report["per_query"] = [
        {"query": str(q), "positives": p.tolist(), "by_score": rs[:5], "top1_score": cs if np.isfinite(cs) else None,
         **({"by_inliers": rank_v[i][:5], "inliers": inliers[i][:5]} if verifier is not None else {})}
        for i, (q, p, rs, cs) in enumerate(zip(dataset.queries, dataset.positives, rank_s, conf_s))]
    return report


def run(args) -> int:
    from ..atomic import atomic_write_json
    from ..data import load_dataset
    from ..errors import MapError
    from ..extractor import Extractor
    from ..mapdb import MapDatabase
    from ..verify import GeometricVerifier, VerifyConfig
    from .build_map import add_frames, folder_frames

    dataset = load_dataset(args.dataset, args.format)
    verifier = (GeometricVerifier(VerifyConfig(feature=args.features, ransac=args.ransac))
                if args.verify else None)
    t0 = time.perf_counter()
    if args.map is not None:
        mapdb = MapDatabase.load(args.map)
        size = mapdb.fingerprint.get("input_size") or args.size
        extractor = Extractor(args.checkpoint, device=args.device, image_size=(int(size[0]), int(size[1])),
                              backend=args.backend)
        mapdb.check_fingerprint(extractor.fingerprint)
        if verifier is not None and mapdb.meta.get("features") not in (None, "none", args.features):
            raise MapError(f"{args.map}: stores {mapdb.meta['features']} features; pass --features "
                           f"{mapdb.meta['features']}")
        build_s = None
    else:
        extractor = Extractor(args.checkpoint, device=args.device, image_size=tuple(args.size),
                              backend=args.backend)
        mapdb = MapDatabase.create(extractor.fingerprint, extractor.dim, "flat",
                                   meta={"features": args.features if verifier else "none"})
        add_frames(mapdb, extractor, folder_frames(dataset.database, None, "database"), verifier,
                   total=len(dataset.database), progress=not args.no_progress)
        build_s = time.perf_counter() - t0
    db_index = {str(Path(p).resolve()): i for i, p in enumerate(dataset.database)}
    id_to_db = {}
    for kf in mapdb.keyframes():
        if kf.source in db_index:
            id_to_db[kf.id] = db_index[kf.source]
    if len(id_to_db) != dataset.num_database:
        raise MapError(f"{args.map or 'map'}: {len(id_to_db)} of its keyframes are the dataset's "
                       f"{dataset.num_database} database images (build it from {args.dataset})")

    report = {
        "dataset": str(args.dataset), "num_queries": dataset.num_queries, "num_database": dataset.num_database,
        "synthetic": bool(getattr(dataset, "synthetic", False)),
        "model": extractor.fingerprint, "index": mapdb.index_type,
        "verification": None if verifier is None else
        {"feature": args.features, "ransac": args.ransac, "reproj_threshold_px": verifier.config.reproj_threshold_px},
        "map_build_s": build_s,
    }
    report.update(run_detector(dataset, mapdb, extractor, id_to_db, verifier, args.verify_candidates,
                               not args.no_progress))
    tag = " (synthetic)" if report["synthetic"] else ""
    for name in ("retrieval", "verified"):
        if name in report:
            r = report[name]
            print(f"{name}{tag}: R@1 {r['recall@1']:.3f}  R@5 {r['recall@5']:.3f}  PR-AUC {r['pr_auc']:.3f}  "
                  f"R@100%P {r['recall_at_100_precision']:.3f}")
    print("timings (ms, mean/median/p95): " + ", ".join(
        f"{k} {v['mean']:.1f}/{v['median']:.1f}/{v['p95']:.1f}" for k, v in report["timings_ms"].items()))
    if args.json is not None:
        out = dict(report)
        atomic_write_json(args.json, out)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
