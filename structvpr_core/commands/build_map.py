"""``structvpr build-map``: a map database from a folder of images or a rosbag2 recording."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..mapbuild import AUTO_IVFFLAT_AT, FEATURES, INDEXES
from ._common import add_backend_argument, add_size_argument, model_conf

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
with the same model (the map records its fingerprint and refuses another), or with a query
encoder trained for it (a low-quality-query student: `structvpr query --query-checkpoint`, the
node's query_checkpoint). A query encoder itself is refused here: maps are built by its teacher.

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


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", type=Path, metavar="DIR", help="folder of images (or folder-format root)")
    src.add_argument("--bag", type=Path, metavar="BAG", help="rosbag2 recording (directory or .mcap/.db3)")
    p.add_argument("--image-topic", metavar="T", help="image topic of --bag")
    p.add_argument("--pose-topic", metavar="P", help="pose topic of --bag (PoseStamped or Odometry)")
    p.add_argument("--poses", type=Path, metavar="CSV", help="poses/stamps of --images (see above)")
    p.add_argument("--out", type=Path, required=True, metavar="MAPDIR", help="map directory to write")
    p.add_argument("--checkpoint", type=Path, metavar="PATH", help="StructVPR RGB checkpoint (default: ImageNet init)")
    p.add_argument(
        "--index",
        choices=INDEXES,
        default="auto",
        help=f"faiss index type (default: auto = flat below {AUTO_IVFFLAT_AT} keyframes, "
        "ivfflat from there; see above)",
    )
    add_size_argument(p, "network input size")
    p.add_argument(
        "--features",
        choices=FEATURES,
        default="sift",
        help="local features stored for geometric verification (default: sift)",
    )
    p.add_argument(
        "--max-features",
        type=int,
        default=1000,
        help="local features kept per keyframe (default: 1000; storage ~130 KB each for SIFT)",
    )
    p.add_argument("--session", help="session name stored with the keyframes (default: source name)")
    p.add_argument(
        "--min-interval",
        type=float,
        default=0.0,
        metavar="S",
        help="bag: minimum seconds between keyframes (default: 0)",
    )
    p.add_argument(
        "--min-distance",
        type=float,
        default=0.0,
        metavar="M",
        help="bag: minimum travelled metres between keyframes when poses are known (default: 0)",
    )
    p.add_argument("--append", action="store_true", help="add to an existing map at --out (same model)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing map at --out")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)")
    add_backend_argument(p)
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: 8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def conf_from_args(args) -> dict:
    """The mapbuild configuration the flags describe."""
    return {
        "model": model_conf(args),
        "index": args.index,
        "verification": {"features": args.features, "max_features": args.max_features},
        "thinning": {"min_interval_s": args.min_interval, "min_distance_m": args.min_distance},
        "session": args.session,
        "progress": not args.no_progress,
    }


def run(args) -> int:
    from ..errors import ConfigError
    from ..images import check_input_size
    from ..mapbuild import build
    from ..mapdb.storage import human_bytes
    from ..mapsources import BagSpec

    check_input_size(args.size, "--size")

    # Only the flag combinations are checked here; mapbuild checks the values (and --out).
    if args.bag is not None and not args.image_topic:
        raise ConfigError("--bag needs --image-topic")
    if args.bag is None and (args.image_topic or args.pose_topic):
        raise ConfigError("--image-topic/--pose-topic apply to --bag only")
    if args.poses is not None and args.images is None:
        raise ConfigError("--poses applies to --images only")
    source = BagSpec(args.bag, args.image_topic, args.pose_topic) if args.bag is not None else args.images
    r = build(source, args.out, conf_from_args(args), poses=args.poses, append=args.append, overwrite=args.overwrite)
    print(
        f"map {r.path}: {r.keyframes} keyframes ({r.added} added), dim {r.dim}, index {r.index}, "
        f"features {r.features}, size {human_bytes(r.size_bytes)}, {r.seconds:.1f} s"
    )
    return 0
