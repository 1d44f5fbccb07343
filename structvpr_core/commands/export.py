"""``structvpr export``: the RGB branch as a deployable ONNX model (fp32 or int8) with its sidecar."""

from __future__ import annotations

from ._common import add_size_argument

NAME = "export"
HELP = "export the RGB branch or StructVPR++ student (head included) to ONNX, fp32 or int8, with a parity check"
DESCRIPTION = """\
Export the StructVPR RGB branch, with its descriptor head (global max pooling, per-level L2
normalisation, concatenation, final L2 normalisation) inside the graph, to an ONNX file with a
dynamic batch axis (opset 17). Beside it, MODEL.onnx.json (the sidecar) records the input
(float32 NCHW RGB, (pixel/255 - mean)/std with the ImageNet mean/std, fixed W x H), the
descriptor dim, the model fingerprint (maps built with PyTorch stay valid), the precision, the
source checkpoint, both files' sha256 and the measured parity. A StructVPR++ student
(--checkpoint of architecture structvpr-pp-rgb-mobilenetv2) exports its label head too, with
its soft label masks as a second output "masks" (N, C, H/16, W/16) for the debug view; the
runners take the "descriptor" output by name.

The fp32 export is compared with PyTorch on real images and is not written unless the cosine of
every descriptor pair is >= 0.999. With --int8 the model is statically quantised (QDQ ONNX) and
the int8 model is written: by default with NNCF (bias correction, and accuracy control: the
layers that cost descriptor fidelity most go back to float until the mean cosine to fp32 on the
calibration images is within --int8-max-drop), or with ONNX Runtime's quantiser (--int8-method
ort: int8 per-channel weights, uint8 activations, MinMax); the first stage stays float. Its
cosine to PyTorch, its speed against fp32 on ONNX Runtime and OpenVINO, and the Recall@1 change
on --eval-dataset (int8 map and queries, and int8 queries on an fp32 map) are printed.

Use the file with: structvpr embed|build-map|query|eval --checkpoint MODEL.onnx (and the node's
checkpoint parameter); the Extractor runs it with ONNX Runtime or OpenVINO (auto: the faster
on this CPU, see docs/performance.md), or TensorRT on CUDA.

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
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="MODEL.onnx",
        help="output model; MODEL.onnx.json is written beside it (both atomically)",
    )
    add_size_argument(parser, "input size the model is exported for")
    parser.add_argument("--int8", action="store_true", help="write a statically quantised int8 model")
    parser.add_argument(
        "--calibration",
        type=Path,
        metavar="DIR",
        help="images for int8 calibration (use images of the deployment's kind; required with --int8)",
    )
    parser.add_argument(
        "--calibration-count",
        type=int,
        default=200,
        metavar="N",
        help="calibration images used, spread evenly over DIR (default: 200)",
    )
    parser.add_argument(
        "--int8-method",
        choices=["nncf", "ort"],
        default="nncf",
        help="quantiser: nncf (NNCF with accuracy control: layers that cost descriptor fidelity go back to "
        "float; default) or ort (ONNX Runtime's quantiser, MinMax)",
    )
    parser.add_argument(
        "--int8-max-drop",
        type=float,
        default=None,
        metavar="D",
        help="nncf: largest drop of the mean cosine to fp32 on the calibration images (default 0.0005)",
    )
    parser.add_argument(
        "--int8-format",
        choices=["qdq", "qoperator"],
        default="qdq",
        help="ONNX quantisation format (default qdq: as fast here, and portable to TensorRT)",
    )
    parser.add_argument(
        "--int8-float",
        nargs="*",
        choices=["stem", "heads"],
        default=None,
        metavar="PART",
        help="parts kept in float in the int8 model: stem (first stage), heads (layers "
        "max-pooled into the descriptor); none given = all int8 (default: stem)",
    )
    parser.add_argument(
        "--eval-dataset",
        metavar="DIR",
        help="dataset for the int8 Recall@1 change (default: the Corridor set when present; 'none' to skip)",
    )
    parser.add_argument(
        "--parity-images",
        type=Path,
        metavar="DIR",
        help="real images for the parity check (default: from the eval dataset, else --calibration)",
    )
    parser.add_argument(
        "--parity-count", type=int, default=32, metavar="N", help="images used for the parity check (default: 32)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="ONNX Runtime threads for the checks (default: PyTorch's thread count)",
    )
    parser.add_argument("--no-progress", action="store_true", help="do not show progress bars")


def run(args) -> int:
    from ..errors import ConfigError
    from ..export import choose_calibration_images, choose_parity_images, export_model_files, load_eval_dataset
    from ..images import check_input_size

    w, h = check_input_size(args.size, "--size")
    if args.calibration_count < 1 or args.parity_count < 1:
        raise ConfigError("--calibration-count and --parity-count must be >= 1")
    if args.calibration is not None and not args.int8:
        raise ConfigError("--calibration is only used with --int8")
    if args.int8 and args.calibration is None:
        raise ConfigError("--int8 needs --calibration DIR (images of the kind the robot will see)")
    calibration = choose_calibration_images(args.calibration, args.calibration_count) if args.int8 else None
    dataset = load_eval_dataset(args.eval_dataset)
    parity_images = choose_parity_images(
        args.parity_count, folder=args.parity_images, dataset=dataset, calibration=calibration
    )

    sidecar = export_model_files(
        None if args.imagenet else args.checkpoint,
        args.out,
        image_size=(w, h),
        int8=args.int8,
        calibration=calibration,
        int8_format=args.int8_format,
        int8_method=args.int8_method,
        int8_max_drop=args.int8_max_drop,
        keep_float=None if args.int8_float is None else tuple(args.int8_float),
        parity_images=parity_images,
        eval_dataset=dataset if args.int8 else None,
        threads=args.threads,
        progress=not args.no_progress,
    )
    for line in report(sidecar["parity"], (w, h), None if dataset is None else dataset.name):
        print(line)
    print(
        f"wrote {args.out} ({sidecar['precision']}, {sidecar['architecture']}, {w}x{h} -> "
        f"{sidecar['descriptor_dim']}-d, sha256 {sidecar['onnx_sha256'][:12]}) and {args.out}.json"
    )
    return 0


def report(parity: dict, size: tuple[int, int], dataset_name: str | None) -> list[str]:
    """The measured parity (the sidecar's ``parity``) as the lines the user reads."""
    from ..export import FP32_MIN_COSINE

    p = parity["fp32"]
    lines = [
        f"parity fp32 ONNX Runtime vs PyTorch on {p['images']} real images: cosine min {p['min_cosine']:.6f} "
        f"mean {p['mean_cosine']:.6f} (bound >= {FP32_MIN_COSINE})"
    ]
    if "masks_max_abs_diff" in p:
        lines.append(f"label masks fp32 vs PyTorch: max |difference| {p['masks_max_abs_diff']:.2e}")
    if "int8" in parity:
        p = parity["int8"]
        lines.append(f"parity int8 vs PyTorch: cosine min {p['min_cosine']:.4f} mean {p['mean_cosine']:.4f}")
        if "masks_max_abs_diff" in p:
            lines.append(f"label masks int8 vs PyTorch: max |difference| {p['masks_max_abs_diff']:.3f}")
    if "speed" in parity:
        t = parity["speed"]
        per_runtime = ", ".join(f"{k} {v:.1f} ms" for k, v in t.get("int8_ms_per_runtime", {}).items())
        lines.append(
            f"speed at {size[0]}x{size[1]}, batch 1: fp32 (ONNX Runtime) {t['fp32_ms']:.1f} ms, int8 "
            f"{t['int8_ms']:.1f} ms on {t.get('int8_runtime', 'onnxruntime')} ({t['speedup']:.2f}x)"
            + (f"; int8 per runtime: {per_runtime}" if per_runtime else "")
        )
    if "recall" in parity:
        rc = parity["recall"]
        tag = " (synthetic)" if rc["synthetic"] else ""
        lines.append(
            f"Recall@1 on {dataset_name}{tag} ({rc['num_queries']} queries): fp32 {rc['recall@1_fp32']:.3f}, "
            f"int8 {rc['recall@1_int8']:.3f} (change {100 * rc['delta']:+.1f} points); int8 queries on an "
            f"fp32 map {rc['recall@1_int8_queries_fp32_map']:.3f} ({100 * rc['delta_mixed']:+.1f} points)"
        )
    return lines
