"""Building a map database, one plain function per step (in hloc's manner).

A script or a notebook calls the whole pipeline::

    from structvpr_core import mapbuild, mapsources
    conf = {"model": {"checkpoint": "run/stage2.pt"}, "index": "flat"}
    mapbuild.build_map(Path("data/corridor/ref"), Path("maps/corridor"), conf)
    mapbuild.build_map(mapsources.BagSpec(Path("run1"), "/camera/image_raw", "/odom"), Path("maps/run1"))

or the steps it is made of (the sources live in ``mapsources``): ``read_pose_csv`` →
``frames_from_images`` (or ``frames_from_bag``, which ``thin_frames``) → ``add_frames`` into a
``MapDatabase`` → train → save. A *frame* is a ``Frame(load, keyframe)``: a loader of the BGR
image (images are read only when their batch is embedded) and the keyframe dict
``MapDatabase.add`` takes (pose, stamp, gps, session, source).
``structvpr build-map`` is a thin argument parser over ``build``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .config import merge_conf
from .errors import ConfigError, MapError
from .log import get_logger
from .mapsources import BagSpec, Frame, folder_images, frames_from_bag, frames_from_images, read_pose_csv

if TYPE_CHECKING:
    pass

# Heavy modules (torch via the extractor, faiss via mapdb, OpenCV, rosbags) are imported inside
# the functions that need them: `structvpr --help` imports this module and must stay instant.

log = get_logger(__name__)

AUTO_IVFFLAT_AT = 50_000  # index "auto": flat below this many keyframes, ivfflat from it up
TRAINED_INDEXES = ("ivfflat", "ivfpq")
INDEXES = ("auto", "flat", "ivfflat", "ivfpq", "hnsw")
FEATURES = ("sift", "orb", "none")

# The model block is shared with loop_eval (a map and its queries must use one model).
MODEL_CONF = {
    "checkpoint": None,  # StructVPR RGB checkpoint; None = the ImageNet-initialised branch
    "image_size": (640, 480),  # network input (W, H): the paper's
    "device": "auto",  # auto, cpu or cuda[:N]
    "backend": "auto",  # auto, torch, onnxruntime or tensorrt
    "batch_size": 8,  # images per forward pass
}

default_conf = {
    "model": dict(MODEL_CONF),
    "index": "auto",  # auto (flat below AUTO_IVFFLAT_AT keyframes, else ivfflat), flat, ivfflat, ivfpq, hnsw
    "verification": {
        "features": "sift",  # local features stored for geometric verification: sift, orb or none
        "max_features": 1000,  # per keyframe (~130 KB each for SIFT)
    },
    "thinning": {  # bags only: which recorded frames become keyframes
        "min_interval_s": 0.0,
        "min_distance_m": 0.0,  # travelled metres, when poses are known
    },
    "session": None,  # session name stored with the keyframes; None = the source's name
    "progress": True,  # tqdm bar on stderr
}


def _check_conf(conf: dict) -> None:
    """Range checks that fail before any model is loaded (the components check the rest)."""
    if conf["index"] not in INDEXES:
        raise ConfigError(f"conf.index: expected one of {list(INDEXES)}, got {conf['index']!r}")
    if conf["verification"]["features"] not in FEATURES:
        raise ConfigError(
            f"conf.verification.features: expected one of {list(FEATURES)}, got {conf['verification']['features']!r}"
        )
    for key, value in conf["thinning"].items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ConfigError(f"conf.thinning.{key}: must be a finite number >= 0, got {value!r}")


def auto_index(total: int) -> str:
    """The index type ``index: auto`` picks for a map of ``total`` keyframes."""
    return "ivfflat" if total >= AUTO_IVFFLAT_AT else "flat"


def choose_index(index: str, total: int) -> str:
    """``index`` with "auto" resolved; ``ConfigError`` when an IVF index would have too little to train on."""
    from .mapdb import MIN_TRAIN

    if index == "auto":
        index = auto_index(total)
    if index in TRAINED_INDEXES and total < MIN_TRAIN:
        raise ConfigError(f"index {index} needs at least {MIN_TRAIN} images to train, the source has {total}")
    return index


def make_extractor(model: dict, image_size: tuple[int, int] | None = None):
    """The Extractor a ``model`` conf block describes, to build a map with (``image_size`` overrides it).

    A query encoder (a low-quality-query student, ``Extractor.query_encoder_for``) is refused with
    a ``ConfigError``: its descriptors are trained to meet its teacher's in the teacher's map, so
    the map is built by the teacher and the student only queries it.
    """
    from .extractor import Extractor
    from .fingerprint import describe_model
    from .weights import weights_name

    size = image_size or model["image_size"]
    extractor = Extractor(
        model["checkpoint"],
        device=model["device"],
        image_size=(int(size[0]), int(size[1])),
        batch_size=model["batch_size"],
        backend=model["backend"],
    )
    if extractor.query_encoder_for is not None:
        raise ConfigError(
            f"{model['checkpoint']}: a query encoder (low-quality-query student of "
            f"{describe_model(extractor.query_encoder_for, weights_name(extractor.query_encoder_for))}) "
            "does not build maps: build the map with "
            f"its teacher, then query it with --query-checkpoint {model['checkpoint']}"
        )
    return extractor


def make_verifier(features: str, max_features: int | None = None, ransac: str = "homography"):
    """The GeometricVerifier for ``features`` (None for "none"); validates its settings.

    ``max_features`` None keeps VerifyConfig's default (queries may keep more than keyframes store).
    """
    if features == "none":
        return None
    from .verify import GeometricVerifier, VerifyConfig

    extra = {} if max_features is None else {"max_features": max_features}
    return GeometricVerifier(VerifyConfig(feature=features, ransac=ransac, **extra))


def add_frames(
    mapdb,
    extractor,
    frames: Iterable[Frame],
    verifier=None,
    batch_size: int = 8,
    total: int | None = None,
    progress: bool = True,
) -> int:
    """Embed ``frames`` in batches (with local features when ``verifier``) and add them to ``mapdb``.

    Unreadable images raise one ImageError naming them all (after the first, the remaining frames
    are still read to find the others, but nothing more is embedded or added).
    """
    import sys

    from tqdm import tqdm

    from .images import UnreadableImages

    n = 0
    batch: list[Frame] = []
    bar = tqdm(total=total, desc="build-map", unit="img", disable=not progress, file=sys.stderr)
    failures = UnreadableImages(total or 0)  # "N of total images are unreadable"

    def flush():
        nonlocal n
        images = [failures.load(fr.load) for fr in batch]
        if failures:
            bar.update(len(batch))
            batch.clear()
            return
        desc = extractor.embed(images)
        feats = [verifier.extract_features(im) for im in images] if verifier is not None else None
        mapdb.add(desc, [fr.keyframe for fr in batch], local_features=feats)
        n += len(batch)
        bar.update(len(batch))
        batch.clear()

    try:
        for item in frames:
            batch.append(Frame(*item))
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
    finally:
        bar.close()
    failures.raise_if_any()
    return n


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


@dataclass(frozen=True)
class MapBuild:
    """What ``build`` did: the saved map and the numbers ``structvpr build-map`` reports."""

    path: Path
    keyframes: int  # in the map
    added: int  # by this build
    dim: int
    index: str
    features: str
    size_bytes: int
    seconds: float


def _open_source(source: Path | BagSpec, conf: dict, poses: Path | None) -> tuple[Iterator[Frame], int]:
    """The source's frames and their count (which picks the auto index and sizes the progress bar)."""
    if isinstance(source, BagSpec):
        from .bagio import count_images

        if not source.image_topic:
            raise ConfigError(f"{source.path}: a bag source needs an image topic")
        if poses is not None:
            raise ConfigError("a pose CSV applies to an images folder, not a bag (use the bag's pose topic)")
        session = conf["session"] or source.path.resolve().name
        thin = conf["thinning"]
        return (
            frames_from_bag(source, session, thin["min_interval_s"], thin["min_distance_m"]),
            count_images(source.path, source.image_topic),
        )
    source = Path(source)
    images = folder_images(source)
    session = conf["session"] or source.resolve().name
    table = read_pose_csv(poses) if poses is not None else None
    return frames_from_images(images, table, session), len(images)


def _new_or_existing_map(out: Path, extractor, conf: dict, index: str | None):
    """The map to add to: ``out`` loaded (same model) when ``index`` is None (appending), else a new one."""
    from .mapdb import MapDatabase

    wanted = conf["verification"]["features"]
    if index is None:
        mapdb = MapDatabase.load(out, expected_fingerprint=extractor.fingerprint)
        stored = mapdb.meta.get("features", "none")
        if stored != wanted and len(mapdb):
            log.warning("the map stores %s features; using %s (not %s)", stored, stored, wanted)
        return mapdb
    checkpoint = conf["model"]["checkpoint"]
    meta = {
        "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else None,
        "features": wanted,
        "max_features": conf["verification"]["max_features"],
    }
    # A batch build trains an IVF index once, at the end, on all its descriptors (nlist sized for
    # the whole map) instead of auto-training early on the first 50k.
    params = {"auto_train_at": 0} if index in TRAINED_INDEXES else None
    return MapDatabase.create(extractor.fingerprint, extractor.dim, index, params, meta=meta)


def build(
    source: Path | BagSpec,
    out: Path,
    conf: dict | None = None,
    *,
    poses: Path | None = None,
    append: bool = False,
    overwrite: bool = False,
) -> MapBuild:
    """Build (or with ``append`` extend) the map at ``out`` from ``source``; see ``build_map``."""
    t0 = time.perf_counter()
    conf = merge_conf(default_conf, conf)
    _check_conf(conf)
    out = Path(out)
    if append and overwrite:
        raise ConfigError("append and overwrite exclude each other")
    if out.exists() and not (append or overwrite):
        raise MapError(f"{out}: already exists (use --overwrite to replace it or --append to add to it)")
    from .mapdb.storage import check_writable

    check_writable(out.absolute())  # a read-only location fails now, not after the embedding
    if not append:  # fail on bad verification settings before the model loads
        make_verifier(conf["verification"]["features"], conf["verification"]["max_features"])

    frames, total = _open_source(source, conf, poses)
    index = None if append else choose_index(conf["index"], total)
    extractor = make_extractor(conf["model"])
    mapdb = _new_or_existing_map(out, extractor, conf, index)
    features = mapdb.meta.get("features", "none")
    verifier = make_verifier(features, mapdb.meta.get("max_features", conf["verification"]["max_features"]))
    log.debug("building %s from %s: %d frames, index %s, features %s", out, source, total, mapdb.index_type, features)

    n = add_frames(mapdb, extractor, frames, verifier, conf["model"]["batch_size"], total, conf["progress"])
    if n == 0:
        raise MapError(f"{source.path if isinstance(source, BagSpec) else source}: no frames to add")
    if not mapdb.trained:
        mapdb.train()
    path = mapdb.save(out)
    result = MapBuild(
        path, len(mapdb), n, mapdb.dim, mapdb.index_type, features, dir_size(path), time.perf_counter() - t0
    )
    mapdb.close()
    return result


def build_map(
    source: Path | BagSpec,
    out: Path,
    conf: dict | None = None,
    *,
    poses: Path | None = None,
    append: bool = False,
    overwrite: bool = False,
) -> Path:
    """A map database at ``out`` from an images folder or a ``BagSpec``; returns the map directory.

    ``conf`` overrides ``default_conf`` (unknown keys are errors). ``poses``: a pose CSV for an
    images folder (``read_pose_csv``). ``out`` must not exist unless ``overwrite`` (replace it,
    atomically) or ``append`` (add to it; the map's model and stored feature type are kept).
    """
    return build(source, out, conf, poses=poses, append=append, overwrite=overwrite).path


def main(conf: dict | None, source: Path | BagSpec, out: Path, **kwargs) -> Path:
    """hloc-style entry (configuration first): ``build_map(source, out, conf, **kwargs)``."""
    return build_map(source, out, conf, **kwargs)
