"""``structvpr embed``: global descriptors of images, written as one (N, D) float32 .npy file."""

from __future__ import annotations

from ._common import add_backend_argument, add_size_argument

NAME = "embed"
HELP = "compute StructVPR global descriptors of images and save them as an (N, D) .npy file"
DESCRIPTION = """\
Compute the StructVPR RGB-branch descriptor of every image and save them, in order, as one
(N, D) float32 array (rows L2-normalised, so a dot product is the cosine similarity).

IMAGE may be a file or a directory; a directory contributes all images directly inside it,
sorted by name. Without --checkpoint the ImageNet-initialised MobileNetV2 (448-d) is used
(no VPR training: a baseline).

examples:
  structvpr embed photos/ --out photos.npy
  structvpr embed a.jpg b.png --checkpoint run/student.pt --device cpu --out ab.npy
"""


def add_arguments(parser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files or directories of images")
    parser.add_argument("--out", required=True, metavar="F.npy", help="output .npy file (written atomically)")
    parser.add_argument(
        "--checkpoint", metavar="PATH", help="trained RGB-branch checkpoint (default: ImageNet MobileNetV2 weights)"
    )
    parser.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="where the network runs; auto = cuda when available (default: auto)",
    )
    add_backend_argument(parser)
    add_size_argument(parser, "network input size, images are resized to it")
    parser.add_argument("--batch-size", type=int, default=8, metavar="N", help="images per step (default: 8)")
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")


def collect_images(items) -> list:
    """Expand IMAGE arguments: files as given, directories to their images sorted by name."""
    from pathlib import Path

    from ..errors import ImageError
    from ..images import list_images

    paths = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise ImageError(f"{p}: directory contains no images")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        else:
            raise ImageError(f"{p}: no such image file or directory")
    return paths


def run(args) -> int:
    import time

    import numpy as np

    from ..atomic import atomic_write
    from ..extractor import Extractor
    from ..images import check_input_size

    check_input_size(args.size, "--size")  # before any image is read or model loaded

    paths = collect_images(args.images)
    start = time.perf_counter()
    extractor = Extractor(
        args.checkpoint,
        device=args.device,
        image_size=tuple(args.size),
        batch_size=args.batch_size,
        backend=args.backend,
    )
    descriptors = extractor.embed_paths(paths, progress=not args.no_progress)

    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: np.save(path) would append ".npy" to the temp name
            np.save(f, descriptors)

    atomic_write(args.out, write)
    seconds = time.perf_counter() - start
    print(
        f"embedded {len(paths)} images -> {args.out} ({descriptors.shape[0]}x{descriptors.shape[1]} float32, "
        f"{extractor.fingerprint['architecture']}, {extractor.device.type}, "
        f"{args.size[0]}x{args.size[1]}, {seconds:.1f} s)"
    )
    return 0
