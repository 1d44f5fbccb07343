"""``structvpr build-map``: a map database from a folder of images or a rosbag2 recording."""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator

from ._common import add_backend_argument

NAME = "build-map"
HELP = "build a map database (faiss index + SQLite keyframes) from images or a rosbag2 bag"
DESCRIPTION = """\
Build a place map: every image (or every keyframe of a bag) is embedded with the StructVPR RGB
branch and stored with its pose, stamp and (for geometric verification) compact local features.

Sources (one of):
  --images DIR   a plain folder, images sorted by name; or a folder-format root whose
                 database/ holds names '...@UTM_east@UTM_north@...' (their coordinates become
                 the keyframe positions; lat/lon fields, when present, the GPS).
                 --poses CSV adds poses/stamps: a header row with 'image' (file name) and
                 'x','y' [,'z'] [,'qx','qy','qz','qw'] [,'stamp'] columns.
  --bag BAG      a rosbag2 directory (sqlite3 or mcap) with --image-topic (sensor_msgs/Image or
                 CompressedImage) and optionally --pose-topic (PoseStamped, Odometry): poses are
                 interpolated to the image stamps. --min-interval/--min-distance thin the frames.

The model is the ImageNet-initialised RGB branch unless --checkpoint is given; query the map
with the same model (the map records its fingerprint and refuses another).

Index (--index auto, the default: flat below 50 000 keyframes, ivfflat from 50 000 up):
  flat     exact search; p50 7.4 ms at 10^5 keyframes, linear in the map size.
  ivfflat  inverted lists of full vectors (nlist 4*sqrt(N), nprobe 16), trained on the map's
           own descriptors: top-1 agreement 0.998 with exact search at p50 1.65 ms on 10^6
           synthetic 448-d descriptors (docs/performance.md). Memory as flat.
  ivfpq    compressed (56 bytes a keyframe at 448-d) for memory-bound maps; ~0.84 agreement.
  hnsw     graph search without training; slow to build for large maps.

Example:
  structvpr build-map --images data/corridor/ref --out maps/corridor
  structvpr build-map --bag run1 --image-topic /camera/image_raw --pose-topic /odom --out maps/run1
"""

AUTO_IVFFLAT_AT = 50_000   # --index auto: flat below this many keyframes, ivfflat from it up
TRAINED_INDEXES = ("ivfflat", "ivfpq")


def auto_index(total: int) -> str:
    """The index type ``--index auto`` picks for a map of ``total`` keyframes."""
    return "ivfflat" if total >= AUTO_IVFFLAT_AT else "flat"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", type=Path, metavar="DIR", help="folder of images (or folder-format root)")
    src.add_argument("--bag", type=Path, metavar="BAG", help="rosbag2 recording (directory or .mcap/.db3)")
    p.add_argument("--image-topic", metavar="T", help="image topic of --bag")
    p.add_argument("--pose-topic", metavar="P", help="pose topic of --bag (PoseStamped or Odometry)")
    p.add_argument("--poses", type=Path, metavar="CSV", help="poses/stamps of --images (see above)")
    p.add_argument("--out", type=Path, required=True, metavar="MAPDIR", help="map directory to write")
    p.add_argument("--checkpoint", type=Path, metavar="PATH", help="StructVPR RGB checkpoint (default: ImageNet init)")
    p.add_argument("--index", choices=("auto", "flat", "ivfflat", "ivfpq", "hnsw"), default="auto",
                   help=f"faiss index type (default: auto = flat below {AUTO_IVFFLAT_AT} keyframes, "
                        "ivfflat from there; see above)")
    p.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), default=(640, 480),
                   help="network input size (default: 640 480, the paper's)")
    p.add_argument("--features", choices=("sift", "orb", "none"), default="sift",
                   help="local features stored for geometric verification (default: sift)")
    p.add_argument("--max-features", type=int, default=1000,
                   help="local features kept per keyframe (default: 1000; storage ~130 KB each for SIFT)")
    p.add_argument("--session", help="session name stored with the keyframes (default: source name)")
    p.add_argument("--min-interval", type=float, default=0.0, metavar="S",
                   help="bag: minimum seconds between keyframes (default: 0)")
    p.add_argument("--min-distance", type=float, default=0.0, metavar="M",
                   help="bag: minimum travelled metres between keyframes when poses are known (default: 0)")
    p.add_argument("--append", action="store_true", help="add to an existing map at --out (same model)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing map at --out")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)")
    add_backend_argument(p)
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: 8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


# -- sources -----------------------------------------------------------------------------------

def _read_pose_csv(path: Path) -> dict[str, dict]:
    from ..errors import DatasetError
    from ..geometry import Pose

    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror})") from None
    if not rows or "image" not in rows[0]:
        raise DatasetError(f"{path}: needs a header row with an 'image' column (and x,y[,z][,qx,qy,qz,qw][,stamp])")
    out = {}
    for i, r in enumerate(rows, start=2):
        try:
            kf: dict = {}
            if r.get("x") not in (None, "") and r.get("y") not in (None, ""):
                q = tuple(float(r[k]) for k in ("qx", "qy", "qz", "qw")) if r.get("qw") not in (None, "") else (0, 0, 0, 1)
                kf["pose"] = Pose((float(r["x"]), float(r["y"]), float(r.get("z") or 0.0)), q)
            if r.get("stamp") not in (None, ""):
                kf["stamp"] = float(r["stamp"])
        except (ValueError, KeyError) as e:
            raise DatasetError(f"{path}: line {i}: bad number ({e})") from None
        out[r["image"]] = kf
    return out


def _folder_keyframe(p: Path) -> dict:
    """Pose (UTM east, north, 0) and GPS (lat, lon) from a folder-format name, when present."""
    from ..geometry import Pose

    fields = p.name.split("@")
    kf: dict = {}
    try:
        east, north = float(fields[1]), float(fields[2])
        if math.isfinite(east) and math.isfinite(north):
            kf["pose"] = Pose((east, north, 0.0))
        lat, lon = float(fields[5]), float(fields[6])
        if -90 <= lat <= 90 and -180 <= lon <= 180:
            kf["gps"] = (lat, lon)
    except (IndexError, ValueError):
        pass
    return kf


def folder_images(folder: Path) -> list[Path]:
    from ..errors import ImageError
    from ..images import list_images

    images = list_images(folder)
    if not images and (folder / "database").is_dir():
        images = list_images(folder / "database")   # a folder-format root
    if not images:
        raise ImageError(f"{folder}: no images")
    return images


def folder_frames(images: list[Path], poses: dict[str, dict] | None, session: str) -> Iterator[tuple]:
    """(image loader, keyframe dict) per image, read lazily."""
    from ..images import read_image

    for p in images:
        kf = _folder_keyframe(p) if "@" in p.name else {}
        if poses is not None:
            kf.update(poses.get(p.name, {}))
        kf.update(session=session, source=str(p.resolve()))
        yield (lambda p=p: read_image(p)), kf


def bag_frames(bag: Path, image_topic: str, pose_topic: str | None, session: str,
               min_interval: float, min_distance: float) -> Iterator[tuple]:
    from ..bagio import read_frames
    from ..loopclosure import KeyframePolicy

    policy = KeyframePolicy(min_interval, min_distance)
    for fr in read_frames(bag, image_topic, pose_topic):
        if not policy.due(fr.stamp, fr.pose):
            continue
        policy.accept(fr.stamp)   # no descriptor novelty test in batch building
        yield (lambda im=fr.image: im), {"stamp": fr.stamp, "pose": fr.pose, "session": session,
                                         "source": fr.source}


# -- building ----------------------------------------------------------------------------------

def add_frames(mapdb, extractor, frames: Iterable[tuple], verifier=None, batch_size: int = 8,
               total: int | None = None, progress: bool = True) -> int:
    """Embed ``frames`` ((loader, keyframe dict) pairs) in batches and add them to ``mapdb``."""
    from tqdm import tqdm

    n = 0
    batch: list[tuple] = []
    bar = tqdm(total=total, desc="build-map", unit="img", disable=not progress, file=sys.stderr)

    def flush():
        nonlocal n
        images = [load() for load, _ in batch]
        desc = extractor.embed(images)
        feats = [verifier.extract_features(im) for im in images] if verifier is not None else None
        mapdb.add(desc, [kf for _, kf in batch], local_features=feats)
        n += len(batch)
        bar.update(len(batch))
        batch.clear()

    try:
        for item in frames:
            batch.append(item)
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
    finally:
        bar.close()
    return n


def make_verifier(features: str, max_features: int):
    if features == "none":
        return None
    from ..verify import GeometricVerifier, VerifyConfig

    return GeometricVerifier(VerifyConfig(feature=features, max_features=max_features))


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GB"


def run(args) -> int:
    from ..errors import ConfigError, MapError
    from ..extractor import Extractor
    from ..mapdb import MIN_TRAIN, MapDatabase

    t0 = time.perf_counter()
    if args.bag is not None and not args.image_topic:
        raise ConfigError("--bag needs --image-topic")
    if args.bag is None and (args.image_topic or args.pose_topic):
        raise ConfigError("--image-topic/--pose-topic apply to --bag only")
    if args.poses is not None and args.images is None:
        raise ConfigError("--poses applies to --images only")
    if args.append and args.overwrite:
        raise ConfigError("--append and --overwrite exclude each other")
    if args.batch_size < 1 or args.max_features < 8:
        raise ConfigError("--batch-size must be >= 1 and --max-features >= 8")
    if args.out.exists() and not (args.append or args.overwrite):
        raise MapError(f"{args.out}: already exists (use --overwrite to replace it or --append to add to it)")

    # Count the frames first: it picks the auto index type and sizes the progress bar.
    if args.images is not None:
        images = folder_images(args.images)
        total = len(images)
        session = args.session or args.images.resolve().name
        poses = _read_pose_csv(args.poses) if args.poses else None
        frames = folder_frames(images, poses, session)
    else:
        from ..bagio import count_images
        total = count_images(args.bag, args.image_topic)
        session = args.session or args.bag.resolve().name
        frames = bag_frames(args.bag, args.image_topic, args.pose_topic, session,
                            args.min_interval, args.min_distance)

    extractor = Extractor(args.checkpoint, device=args.device, image_size=tuple(args.size),
                          batch_size=args.batch_size, backend=args.backend)
    if args.append:
        mapdb = MapDatabase.load(args.out, expected_fingerprint=extractor.fingerprint)
        features = mapdb.meta.get("features", "none")
        if features != args.features and len(mapdb):
            print(f"structvpr build-map: note: the map stores {features} features; using {features}",
                  file=sys.stderr)
    else:
        index = args.index
        if index == "auto":
            index = auto_index(total)
        if index in TRAINED_INDEXES and total < MIN_TRAIN:
            raise ConfigError(f"--index {index} needs at least {MIN_TRAIN} images to train, the source has {total}")
        features = args.features
        meta = {"checkpoint": str(args.checkpoint.resolve()) if args.checkpoint else None,
                "features": features, "max_features": args.max_features}
        # A batch build trains an IVF index once, at the end, on all its descriptors (nlist
        # sized for the whole map) instead of auto-training early on the first 50k.
        params = {"auto_train_at": 0} if index in TRAINED_INDEXES else None
        mapdb = MapDatabase.create(extractor.fingerprint, extractor.dim, index, params, meta=meta)
    verifier = make_verifier(features, mapdb.meta.get("max_features", args.max_features))

    n = add_frames(mapdb, extractor, frames, verifier, args.batch_size, total, not args.no_progress)
    if n == 0:
        raise MapError(f"{args.bag or args.images}: no frames to add")
    if not mapdb.trained:
        mapdb.train()
    out = mapdb.save(args.out)
    size = dir_size(out)
    elapsed = time.perf_counter() - t0
    print(f"map {out}: {len(mapdb)} keyframes ({n} added), dim {mapdb.dim}, index {mapdb.index_type}, "
          f"features {features}, size {human_bytes(size)}, {elapsed:.1f} s")
    return 0
