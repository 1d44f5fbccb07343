"""``structvpr masks``: the soft label masks of a StructVPR++ student as coloured overlays (PNG)."""

from __future__ import annotations

from ._common import add_backend_argument, add_size_argument

NAME = "masks"
HELP = "draw a StructVPR++ student's soft label masks over images (coloured PNG overlays)"
DESCRIPTION = """\
For each IMAGE write OUT/<name>_masks.png: the image at the network input size with the
student's soft label masks drawn over it, one colour per label (vegetation green, dynamic red,
sky blue, ground purple, buildings orange, other grey; for C = 3: sky_ground blue, dynamic red,
static orange), mixed by the mask values, and a legend strip with each label's share of the
image. The masks come out of the student's own forward pass (its label head, stride 16): no
segmentation network runs. It shows what the model takes for each label; it is not a
segmentation to rely on.

The checkpoint must be a StructVPR++ student (training with model.label_features), a .pt or
its .onnx export. IMAGE may be a file or a directory (all images directly inside, by name).

examples:
  structvpr masks datasets/corridor/query --checkpoint runs/pp/stage2/best.pt --size 160 120 --out masks/
  structvpr masks frame.png --checkpoint student_pp.onnx --out masks/ --alpha 0.6
"""


def add_arguments(parser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files or directories of images")
    parser.add_argument("--checkpoint", required=True, metavar="PATH", help="StructVPR++ student (.pt or .onnx)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (created if absent)")
    add_size_argument(parser, "network input size; images are resized to it and the overlay has it")
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of the colours over the image (default 0.5)")
    parser.add_argument("--no-legend", action="store_true", help="no legend strip under the picture")
    parser.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="where the network runs; auto = cuda when available (default: auto)",
    )
    add_backend_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")


def run(args) -> int:
    from ..maskview import write_mask_overlays
    from .embed import collect_images

    paths = collect_images(args.images)
    conf = {
        "image_size": tuple(args.size),
        "alpha": args.alpha,
        "legend": not args.no_legend,
        "device": args.device,
        "backend": args.backend,
    }
    results = write_mask_overlays(paths, args.checkpoint, args.out, conf, progress=not args.no_progress)
    for r in results:
        top = sorted(r["presence"].items(), key=lambda kv: -kv[1])[:3]
        print(f"{r['overlay']}: " + ", ".join(f"{name} {share:.0%}" for name, share in top))
    print(f"wrote {len(results)} overlays to {args.out}")
    return 0
