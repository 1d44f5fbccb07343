"""``structvpr export``: the RGB branch as a deployable ONNX model (fp32 or int8) with its sidecar."""

from __future__ import annotations

NAME = "export"
HELP = "export the RGB branch (descriptor head included) to ONNX, fp32 or int8, with a parity check"
DESCRIPTION = """\
Export the StructVPR RGB branch, with its descriptor head (global max pooling, per-level L2
normalisation, concatenation, final L2 normalisation) inside the graph, to an ONNX file with a
dynamic batch axis (opset 17). Beside it, MODEL.onnx.json (the sidecar) records the input
(float32 NCHW RGB, (pixel/255 - mean)/std with the ImageNet mean/std, fixed W x H), the
descriptor dim, the model fingerprint (maps built with PyTorch stay valid), the precision, the
source checkpoint, both files' sha256 and the measured parity.

The fp32 export is compared with PyTorch on real images and is not written unless the cosine of
every descriptor pair is >= 0.999. With --int8 the model is statically quantised with ONNX
Runtime (int8 per-channel weights, uint8 activations, MinMax calibration on --calibration
images; the first stage stays float) and the int8 model is written; its cosine to PyTorch,
its speed against fp32, and the Recall@1 change on --eval-dataset are printed.

Use the file with: structvpr embed|build-map|query|eval --checkpoint MODEL.onnx (and the node's
checkpoint parameter); the Extractor runs it with ONNX Runtime (or TensorRT on CUDA).

examples:
  structvpr export --imagenet --out mobilenetv2.onnx
  structvpr export --checkpoint run/student.pt --size 320 240 --out student_320.onnx
  structvpr export --checkpoint run/student.pt --int8 --calibration my_route/images --out student_int8.onnx
"""


def add_arguments(parser) -> None:
    from pathlib import Path

    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="PATH", help="trained RGB-branch checkpoint (.pt)")
    src.add_argument("--imagenet", action="store_true", help="the ImageNet-initialised RGB branch (no VPR training)")
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="output format (default: onnx)")
    parser.add_argument("--out", required=True, type=Path, metavar="MODEL.onnx",
                        help="output model; MODEL.onnx.json is written beside it (both atomically)")
    parser.add_argument("--size", nargs=2, type=int, default=(640, 480), metavar=("W", "H"),
                        help="input size the model is exported for (default: 640 480)")
    parser.add_argument("--int8", action="store_true", help="write a statically quantised int8 model")
    parser.add_argument("--calibration", type=Path, metavar="DIR",
                        help="images for int8 calibration (use images of the deployment's kind; required with --int8)")
    parser.add_argument("--calibration-count", type=int, default=200, metavar="N",
                        help="calibration images used, spread evenly over DIR (default: 200)")
    parser.add_argument("--int8-format", choices=["qdq", "qoperator"], default="qdq",
                        help="ONNX quantisation format (default qdq: as fast here, and portable to TensorRT)")
    parser.add_argument("--int8-float", nargs="*", choices=["stem", "heads"], default=None, metavar="PART",
                        help="parts kept in float in the int8 model: stem (first stage), heads (layers "
                             "max-pooled into the descriptor); none given = all int8 (default: stem)")
    parser.add_argument("--eval-dataset", metavar="DIR",
                        help="dataset for the int8 Recall@1 change (default: the Corridor set when present; "
                             "'none' to skip)")
    parser.add_argument("--parity-images", type=Path, metavar="DIR",
                        help="real images for the parity check (default: from the eval dataset, else --calibration)")
    parser.add_argument("--parity-count", type=int, default=32, metavar="N",
                        help="images used for the parity check (default: 32)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="ONNX Runtime threads for the checks (default: PyTorch's thread count)")
    parser.add_argument("--no-progress", action="store_true", help="do not show progress bars")


def run(args) -> int:
    from pathlib import Path

    from ..errors import ConfigError
    from ..export import default_eval_dataset, evenly, export_model_files
    from ..images import list_images

    w, h = args.size
    if w < 32 or h < 32:
        raise ConfigError(f"--size: width and height must be >= 32, got {w} {h}")
    if args.calibration_count < 1 or args.parity_count < 1:
        raise ConfigError("--calibration-count and --parity-count must be >= 1")
    if args.calibration is not None and not args.int8:
        raise ConfigError("--calibration is only used with --int8")
    calibration = None
    if args.int8:
        if args.calibration is None:
            raise ConfigError("--int8 needs --calibration DIR (images of the kind the robot will see)")
        found = list_images(args.calibration)
        if not found:
            raise ConfigError(f"{args.calibration}: no images for int8 calibration")
        calibration = evenly(found, args.calibration_count)

    dataset = None
    if args.eval_dataset != "none":
        root = Path(args.eval_dataset) if args.eval_dataset else default_eval_dataset()
        if root is not None:
            from ..data import load_dataset

            dataset = load_dataset(root)
    if args.parity_images is not None:
        parity_images = list_images(args.parity_images)
        if not parity_images:
            raise ConfigError(f"{args.parity_images}: no images for the parity check")
    elif dataset is not None:
        parity_images = list(dataset.database) + list(dataset.queries)
    elif calibration:
        parity_images = calibration
    else:
        raise ConfigError("no real images for the parity check: give --parity-images DIR (or --eval-dataset DIR)")
    parity_images = evenly(parity_images, args.parity_count)

    sidecar = export_model_files(None if args.imagenet else args.checkpoint, args.out, image_size=(w, h),
                                 int8=args.int8, calibration=calibration, int8_format=args.int8_format,
                                 keep_float=None if args.int8_float is None else tuple(args.int8_float),
                                 parity_images=parity_images, eval_dataset=dataset if args.int8 else None,
                                 threads=args.threads, progress=not args.no_progress)
    print(f"wrote {args.out} ({sidecar['precision']}, {sidecar['architecture']}, {w}x{h} -> "
          f"{sidecar['descriptor_dim']}-d, sha256 {sidecar['onnx_sha256'][:12]}) and {args.out}.json")
    return 0
