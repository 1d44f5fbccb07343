"""Extraction speed, batch 1, per runtime and input size (and int8's Recall@1 change on Corridor).

Every variant is timed through the public ``Extractor.embed([image])`` on the same real frame
(already at the input size), so pre-processing is included alike for all. The repeats are
interleaved (one call of each variant in turn) so that a shared machine's load shifts all
variants alike and the ratios stay meaningful (see ``time_interleaved``).

- torch_eager: PyTorch as written (BatchNorm separate, default memory layout);
- torch_channels_last: the Extractor's PyTorch backend (BatchNorm folded, channels_last);
- onnxruntime_fp32 / onnxruntime_int8: ONNX Runtime on the fp32 export / its int8 quantisation
  (calibrated on Corridor reference frames, or on synthetic noise images when absent: labelled);
- auto: ``Extractor()`` with every option at its default;
- structvpr_pp_onnxruntime_fp32: ONNX Runtime fp32 on a StructVPR++ student (ImageNet backbone,
  untrained label head, saved to a temporary checkpoint: the weights do not change the cost), to
  compare with onnxruntime_fp32 (StructVPR) in the ratio ``structvpr_pp_over_structvpr_fp32``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

VARIANTS = (
    "torch_eager",
    "torch_channels_last",
    "onnxruntime_fp32",
    "onnxruntime_int8",
    "auto",
    "structvpr_pp_onnxruntime_fp32",
)


def bench_image(size: tuple[int, int]) -> tuple[np.ndarray, str]:
    """A real Corridor frame resized to ``size`` (BGR), or a synthetic one when the data is absent."""
    from ..images import read_image, resize_image
    from ..paths import corridor_if_present

    root = corridor_if_present()
    if root is not None and (root / "query" / "0000050.jpg").is_file():
        path = root / "query" / "0000050.jpg"
        return resize_image(read_image(path), size), str(path)
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "synthetic noise image"


def calibration_images(count: int, workdir: Path) -> tuple[list[Path], str]:
    from ..export import evenly
    from ..images import list_images
    from ..paths import corridor_if_present

    root = corridor_if_present()
    if root is not None:
        return evenly(list_images(root / "ref"), count), f"{root}/ref (real)"
    import cv2

    rng = np.random.default_rng(1)
    paths = []
    for i in range(count):
        p = workdir / f"synthetic_calibration_{i}.png"
        cv2.imwrite(str(p), rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
        paths.append(p)
    return paths, "synthetic noise images"


def pp_student_checkpoint(workdir: Path) -> Path:
    """A StructVPR++ student with the default label settings (ImageNet backbone, seeded random head)."""
    import torch

    from ..checkpoint import save_checkpoint
    from ..models import PP_RGB_ARCHITECTURE, build_pp_student
    from ..slme import label_retrieval_weights

    torch.manual_seed(0)
    model = build_pp_student(pretrained=True, weights=label_retrieval_weights(6)).eval()
    path = workdir / "structvpr_pp_student.pt"
    save_checkpoint(path, model, architecture=PP_RGB_ARCHITECTURE, descriptor_dim=model.dim, config={})
    return path


def make_extractors(size, threads: int, calibration: list[Path], workdir: Path, pp_checkpoint: Path) -> dict:
    from ..export import write_int8_export
    from ..extractor import Extractor

    fp32 = Extractor(device="cpu", backend="onnxruntime", image_size=size, threads=threads)
    int8_path = workdir / f"int8_{size[0]}x{size[1]}.onnx"
    write_int8_export(
        fp32.onnx_path,
        int8_path,
        calibration,
        fingerprint=fp32.fingerprint,
        source=fp32.source,
        image_size=size,
        progress=False,
    )
    return {
        "torch_eager": Extractor(
            device="cpu", backend="torch", image_size=size, channels_last=False, fold_batchnorm=False
        ),
        "torch_channels_last": Extractor(device="cpu", backend="torch", image_size=size),
        "onnxruntime_fp32": fp32,
        "onnxruntime_int8": Extractor(
            device="cpu", backend="onnxruntime", image_size=size, threads=threads, onnx_model=int8_path
        ),
        "auto": Extractor(image_size=size),
        "structvpr_pp_onnxruntime_fp32": Extractor(
            pp_checkpoint, device="cpu", backend="onnxruntime", image_size=size, threads=threads
        ),
    }


def time_interleaved(extractors: dict, image: np.ndarray, repeats: int, warmup: int, block: int = 5) -> dict:
    """Per-variant timings, taken in rounds: each variant in turn runs ``block`` timed calls.

    Interleaving spreads the machine's load changes over all variants. Each block starts with
    a 0.1 s pause and one untimed call: ONNX Runtime's worker threads keep spinning for a
    moment after a run (its default, which makes it ~20 % faster back to back), and that
    must not be billed to the next variant (measured: it slowed a 320×240 run 2×).
    """
    import time

    from .timing import summarise

    calls = {name: (lambda ex=ex: ex.embed([image])) for name, ex in extractors.items()}
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    times = {name: [] for name in calls}
    while min(len(t) for t in times.values()) < repeats:
        for name, fn in calls.items():
            time.sleep(0.1)
            fn()
            for _ in range(min(block, repeats - len(times[name]))):
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
    return {name: summarise(ts) for name, ts in times.items()}


def run(cfg: dict) -> dict:
    import torch

    threads = int(cfg["threads"])
    torch.set_num_threads(threads)
    out: dict = {"threads": threads, "batch": 1, "variants": list(VARIANTS)}
    with tempfile.TemporaryDirectory(prefix="structvpr-bench-") as tmp:
        calibration, calib_source = calibration_images(int(cfg["calibration_images"]), Path(tmp))
        pp_checkpoint = pp_student_checkpoint(Path(tmp))
        out["int8_calibration"] = {"images": len(calibration), "source": calib_source}
        for key in cfg["skipped_sizes"]:
            out[key] = {"skipped": "--quick leaves out the largest input size"}
        for w, h in cfg["sizes"]:
            image, source = bench_image((w, h))
            extractors = make_extractors((w, h), threads, calibration, Path(tmp), pp_checkpoint)
            result = time_interleaved(extractors, image, int(cfg["repeats"]), int(cfg["warmup"]))
            auto = extractors["auto"]
            result["auto"].update(backend=auto.backend, precision=auto.precision, providers=auto.providers)
            p50 = {k: v["p50_ms"] for k, v in result.items()}
            result["image"] = source
            result["ratios"] = {
                "auto_over_onnxruntime_fp32": p50["auto"] / p50["onnxruntime_fp32"],
                "int8_speedup_over_fp32": p50["onnxruntime_fp32"] / p50["onnxruntime_int8"],
                "onnxruntime_fp32_speedup_over_torch_eager": p50["torch_eager"] / p50["onnxruntime_fp32"],
                "channels_last_speedup_over_eager": p50["torch_eager"] / p50["torch_channels_last"],
                "structvpr_pp_over_structvpr_fp32": p50["structvpr_pp_onnxruntime_fp32"] / p50["onnxruntime_fp32"],
            }
            if cfg.get("recall") and (w, h) == tuple(cfg["recall_size"]):
                result["int8_recall"] = int8_recall(extractors["onnxruntime_fp32"], extractors["onnxruntime_int8"])
            out[f"{w}x{h}"] = result
            del extractors
    return out


def int8_recall(fp32, int8) -> dict:
    """Recall@1 change of int8 vs fp32 on the real Corridor set (skipped when it is absent)."""
    from ..data import load_dataset
    from ..export import recall_change
    from ..paths import corridor_if_present

    root = corridor_if_present()
    if root is None:
        return {"skipped": "the Corridor set is not on this machine (set STRUCTVPR_CORRIDOR)"}
    return recall_change(fp32, int8, load_dataset(root))
