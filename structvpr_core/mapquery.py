"""Looking images up in a saved map: the map with the model it was built with, and ranked candidates.

``structvpr query``, ``structvpr map-info`` and ``loop_eval`` (with a prebuilt map) call these;
a script can too::

    mapdb, extractor = open_map(Path("maps/corridor"))
    for path, detection in query_images(mapdb, extractor, [Path("q.jpg")], {"top_k": 3}):
        print(path, [candidate_json(c) for c in detection.candidates])

Low-quality queries: ``open_map(..., query_checkpoint=student)`` embeds the queries with a query
encoder trained for the map's model (any other model is refused, naming both), and the conf's
``degradation`` (a ``degrade`` spec) degrades each query image first, image i drawing its random
values (if any) from ``[seed, i]``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from .log import get_logger

log = get_logger(__name__)

default_conf = {
    "top_k": 5,  # candidates per image
    "min_score": -1.0,  # drop candidates below this cosine score, in [-1, 1]
    "verify": False,  # local features + RANSAC, candidates re-ranked by inliers
    "verify_candidates": 0,  # search results verified (0 = top_k)
    "min_inliers": 0,  # with verify: drop candidates with fewer inliers
    "degradation": "none",  # degradation spec applied to each query image before it is embedded
    "seed": 0,  # random draws of a degradation with ranges: image i uses [seed, i]
}


def open_map(
    map_dir: Path,
    checkpoint: Path | None = None,
    device: str = "auto",
    backend: str = "auto",
    image_size: tuple[int, int] = (640, 480),
    query_checkpoint: Path | None = None,
):
    """The map and the Extractor that embeds its queries (``MapError`` when that model may not).

    The model is ``query_checkpoint`` when given (a query encoder trained for the map's model:
    ``fingerprint.accepts``), else ``checkpoint``, else the checkpoint the map records, else the
    ImageNet initialisation; its input size is the map's (``image_size`` for maps that do not
    record it).
    """
    from .errors import MapError
    from .extractor import Extractor
    from .mapdb import MapDatabase

    mapdb = MapDatabase.load(map_dir)
    if query_checkpoint is not None:
        checkpoint = query_checkpoint  # the map's own model is not needed to search it
    elif checkpoint is None and mapdb.meta.get("checkpoint"):
        checkpoint = Path(mapdb.meta["checkpoint"])
        if not checkpoint.is_file():
            raise MapError(f"{map_dir}: built with checkpoint {checkpoint}, which no longer exists (pass --checkpoint)")
    size = mapdb.fingerprint.get("input_size") or image_size
    extractor = Extractor(checkpoint, device=device, image_size=(int(size[0]), int(size[1])), backend=backend)
    mapdb.check_fingerprint(extractor.fingerprint, query_encoder_for=extractor.query_encoder_for)
    return mapdb, extractor


def detector_config(conf: dict | None = None, name=str):
    """The localisation ``DetectorConfig`` of ``conf``, validated (cheap: call it before loading a model).

    ``name`` maps a field to how the caller calls it in errors (e.g. ``top_k`` → ``--top-k``).
    """
    from .config import merge_conf
    from .loopclosure import DetectorConfig

    conf = merge_conf(default_conf, conf)
    cfg = DetectorConfig(
        top_k=conf["top_k"],
        min_score=conf["min_score"],  # out of [-1, 1] is refused by validate, not clamped
        verify=conf["verify"],
        min_inliers=conf["min_inliers"],
        mode="localization",
        verify_candidates=conf["verify_candidates"],
    )
    cfg.validate(name=name)
    return cfg


def query_degradation(conf: dict | None = None):
    """The parsed ``degradation`` of ``conf`` (cheap: fails on a bad spec before a model loads)."""
    from .config import merge_conf
    from .degrade import parse_degradation

    return parse_degradation(merge_conf(default_conf, conf)["degradation"])


def query_images(mapdb, extractor, images: Iterable[Path], conf: dict | None = None) -> Iterator[tuple]:
    """(path, Detection) per image: its map candidates, best first, each image looked up on its own
    (degraded first by the conf's ``degradation``)."""
    from .config import merge_conf
    from .images import read_image
    from .loopclosure import LoopClosureDetector

    conf = merge_conf(default_conf, conf)
    cfg, degradation, seed = detector_config(conf), query_degradation(conf), conf["seed"]
    verifier = None
    if cfg.verify:
        from .verify import GeometricVerifier, VerifyConfig

        feature = mapdb.meta.get("features")  # match the features the map stores
        verifier = GeometricVerifier(VerifyConfig(feature=feature if feature in ("sift", "orb") else "sift"))
    detector = LoopClosureDetector(extractor, mapdb, cfg, verifier=verifier)

    def detections():
        for i, path in enumerate(images):
            detector.reset()  # each query image is independent: no keyframe policy between them
            image = read_image(path)
            if not degradation.is_identity:
                image = degradation.apply_seeded(image, seed, i)
            yield path, detector.process(image, stamp=0.0, source=str(path))

    return detections()


def candidate_json(c) -> dict:
    """A candidate as plain data (the ``structvpr query --json`` format)."""
    return {
        "map_id": int(c.map_id),
        "score": float(c.score),
        "source": c.source,
        "pose": c.pose.to_dict() if c.pose is not None else None,
        "inliers": None if c.inliers is None else int(c.inliers),
    }


def map_info(map_dir: Path) -> dict:
    """A map's manifest plus its path and size, after checking that the map loads."""
    from .mapdb import MANIFEST, MapDatabase

    mapdb = MapDatabase.load(map_dir)  # full validation; MapError with the reason otherwise
    try:
        info = json.loads((mapdb.path / MANIFEST).read_text(encoding="utf-8"))
        info["path"] = str(mapdb.path)
        info["size_bytes"] = sum(f.stat().st_size for f in mapdb.path.iterdir() if f.is_file())
    finally:
        mapdb.close()
    return info
