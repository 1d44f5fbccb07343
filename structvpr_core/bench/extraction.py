"""Extraction speed, batch 1, per runtime, precision and input size (and int8's Recall@1 change on Corridor).

Every variant is timed through the public ``Extractor.embed([image])`` on the same real frame
(already at the input size), so pre-processing is included alike for all. The repeats are
interleaved (one block of each variant in turn) so that a shared machine's load shifts all
variants alike and the ratios stay meaningful (see ``time_interleaved``). Each variant's
descriptors of the 8 parity frames are compared with PyTorch's (``min_cosine_to_torch``): the
targets count only variants that pass ``runtime_choice.MIN_COSINE`` (int8 aside).

- torch_eager: PyTorch as written (BatchNorm separate, default memory layout);
- torch_channels_last: the Extractor's PyTorch backend (BatchNorm folded, channels_last);
- onnxruntime_fp32: ONNX Runtime on the fp32 export;
- openvino_fp32 / openvino_bf16 / openvino_fp16: OpenVINO's CPU plugin on the same file at that
  inference precision (a precision the CPU does not offer is reported as skipped);
- onnxruntime_int8: ONNX Runtime's quantiser (``structvpr export --int8 --int8-method ort``) on ONNX Runtime;
- onnxruntime_int8_nncf / openvino_int8_nncf: the NNCF export (``--int8``'s default: accuracy
  control) on ONNX Runtime / OpenVINO; calibrated on Corridor reference frames, or on synthetic
  noise images when absent (labelled);
- auto: ``Extractor()`` with every option at its default, measuring its choice afresh (a cache
  of its own): the choice and why are reported;
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
    "openvino_fp32",
    "openvino_bf16",
    "openvino_fp16",
    "onnxruntime_int8",
    "onnxruntime_int8_nncf",
    "openvino_int8_nncf",
    "auto",
    "structvpr_pp_onnxruntime_fp32",
)
FLOAT_RUNTIMES = ("torch_channels_last", "onnxruntime_fp32", "openvino_fp32", "openvino_bf16", "openvino_fp16")
INT8_VARIANTS = tuple(v for v in VARIANTS if "int8" in v)
DEPLOYED_INT8 = "openvino_int8_nncf"  # export --int8's default file on the runtime auto measures faster for it


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
    """{variant: Extractor or {"skipped": reason}} at ``size``."""
    from ..backends.ov_backend import cpu_precisions
    from ..export import write_int8_export
    from ..extractor import Extractor

    fp32 = Extractor(device="cpu", backend="onnxruntime", image_size=size, threads=threads)
    int8 = {}
    for method in ("ort", "nncf"):
        int8[method] = workdir / f"int8_{method}_{size[0]}x{size[1]}.onnx"
        write_int8_export(
            fp32.onnx_path,
            int8[method],
            calibration,
            fingerprint=fp32.fingerprint,
            source=fp32.source,
            image_size=size,
            progress=False,
            method=method,
        )

    def onnx(backend: str, model=None):
        return Extractor(device="cpu", backend=backend, image_size=size, threads=threads, onnx_model=model)

    out = {
        "torch_eager": Extractor(
            device="cpu", backend="torch", image_size=size, channels_last=False, fold_batchnorm=False
        ),
        "torch_channels_last": Extractor(device="cpu", backend="torch", image_size=size),
        "onnxruntime_fp32": fp32,
    }
    offered = cpu_precisions() or ()
    for precision in ("fp32", "bf16", "fp16"):
        backend = "openvino" if precision == "fp32" else f"openvino-{precision}"
        out[f"openvino_{precision}"] = (
            onnx(backend)
            if precision in offered
            else {"skipped": f"OpenVINO offers {', '.join(offered) or 'nothing (not installed)'} on this CPU"}
        )
    out["onnxruntime_int8"] = onnx("onnxruntime", int8["ort"])
    out["onnxruntime_int8_nncf"] = onnx("onnxruntime", int8["nncf"])
    out["openvino_int8_nncf"] = onnx("openvino", int8["nncf"]) if offered else {"skipped": "OpenVINO not installed"}
    out["auto"] = Extractor(image_size=size)
    out["structvpr_pp_onnxruntime_fp32"] = Extractor(
        pp_checkpoint, device="cpu", backend="onnxruntime", image_size=size, threads=threads
    )
    return out


def parity_to_torch(extractors: dict) -> dict:
    """{variant: min cosine to PyTorch (torch_eager) on the parity frames}, for the variants of the
    same model (the StructVPR++ student is another model: not compared)."""
    from ..images import read_image
    from ..paths import parity_images

    frames = [read_image(p) for p in parity_images()]
    reference = extractors["torch_eager"]
    ref = reference.embed(frames)
    return {
        name: float((ex.embed(frames) * ref).sum(axis=1).min())
        for name, ex in extractors.items()
        if ex.fingerprint == reference.fingerprint
    }


def time_interleaved(extractors: dict, image: np.ndarray, repeats: int, warmup: int, block: int = 5) -> dict:
    """Per-variant timings of ``Extractor.embed([image])``, interleaved in blocks (``timing.interleaved``:
    a 0.1 s pause and one untimed call before each block)."""
    from ..timing import interleaved
    from .timing import summarise

    calls = {name: (lambda ex=ex: ex.embed([image])) for name, ex in extractors.items()}
    times = interleaved(calls, repeats, block=block, pause_s=0.1, warmup=warmup)
    out = {}
    for name, t in times.items():
        out[name] = summarise(t["wall_s"])
        # CPU time of the whole process per call: with one thread it is the work itself, much less
        # moved by other processes sharing the machine than the wall time is (with more threads it
        # also counts ONNX Runtime's spinning workers, so compare it at --threads 1 only).
        out[name]["cpu_p50_ms"] = float(np.percentile(np.asarray(t["cpu_s"]) * 1000.0, 50))
    return out


def run(cfg: dict) -> dict:
    import os

    import torch

    threads = int(cfg["threads"])
    torch.set_num_threads(threads)
    out: dict = {"threads": threads, "batch": 1, "variants": list(VARIANTS)}
    with tempfile.TemporaryDirectory(prefix="structvpr-bench-") as tmp:
        # auto measures afresh, as at a first use on this machine (a pinned or cached choice would not say why)
        os.environ["STRUCTVPR_CACHE"] = str(Path(tmp) / "cache")
        os.environ.pop("STRUCTVPR_CPU_RUNTIME", None)
        calibration, calib_source = calibration_images(int(cfg["calibration_images"]), Path(tmp))
        pp_checkpoint = pp_student_checkpoint(Path(tmp))
        out["int8_calibration"] = {"images": len(calibration), "source": calib_source}
        for key in cfg["skipped_sizes"]:
            out[key] = {"skipped": "--quick leaves out the largest input size"}
        for w, h in cfg["sizes"]:
            out[f"{w}x{h}"] = run_size((w, h), cfg, threads, calibration, Path(tmp), pp_checkpoint)
    return out


def run_size(size, cfg: dict, threads: int, calibration, workdir: Path, pp_checkpoint: Path) -> dict:
    from ..backends.runtime_choice import MIN_COSINE

    image, source = bench_image(size)
    made = make_extractors(size, threads, calibration, workdir, pp_checkpoint)
    extractors = {k: v for k, v in made.items() if not isinstance(v, dict)}
    result = time_interleaved(extractors, image, int(cfg["repeats"]), int(cfg["warmup"]))
    result.update({k: v for k, v in made.items() if isinstance(v, dict)})  # the skipped ones, with why
    for name, cos in parity_to_torch(extractors).items():
        result[name]["min_cosine_to_torch"] = cos
    for name, ex in extractors.items():
        result[name]["precision"] = ex.precision
    auto = extractors["auto"]
    choice = auto.runtime_choice or {}
    result["auto"].update(
        backend=auto.backend,
        precision=auto.precision,
        providers=auto.providers,
        chosen=choice.get("chosen", auto.backend),
        why=choice.get("why", "one runtime installed: nothing to measure"),
        measured=choice.get("candidates"),
    )
    p50 = {k: v["p50_ms"] for k, v in result.items() if isinstance(v, dict) and "p50_ms" in v}
    passing = {k: p50[k] for k in FLOAT_RUNTIMES if k in p50 and result[k]["min_cosine_to_torch"] >= MIN_COSINE}
    fastest = min(passing, key=passing.get)
    int8 = {k: p50[k] for k in INT8_VARIANTS if k in p50}
    best8 = min(int8, key=int8.get)
    result["image"] = source
    result["fastest_float_passing_parity"] = fastest
    result["fastest_int8"] = best8
    cpu = {k: v["cpu_p50_ms"] for k, v in result.items() if isinstance(v, dict) and "cpu_p50_ms" in v}
    result["ratios_cpu_time"] = {
        "auto_over_fastest_float": cpu["auto"] / min(cpu[k] for k in passing),
        "int8_speedup_over_fp32": cpu["onnxruntime_fp32"] / min(cpu[k] for k in int8),
        "int8_speedup_per_variant": {k: cpu["onnxruntime_fp32"] / cpu[k] for k in int8},
    }
    result["ratios"] = {
        "auto_over_fastest_float": p50["auto"] / passing[fastest],
        "auto_over_onnxruntime_fp32": p50["auto"] / p50["onnxruntime_fp32"],
        "int8_speedup_over_fp32": p50["onnxruntime_fp32"] / int8[best8],
        "int8_speedup_per_variant": {k: p50["onnxruntime_fp32"] / v for k, v in int8.items()},
        "onnxruntime_fp32_speedup_over_torch_eager": p50["torch_eager"] / p50["onnxruntime_fp32"],
        "channels_last_speedup_over_eager": p50["torch_eager"] / p50["torch_channels_last"],
        "structvpr_pp_over_structvpr_fp32": p50["structvpr_pp_onnxruntime_fp32"] / p50["onnxruntime_fp32"],
    }
    if cfg.get("recall") and tuple(size) == tuple(cfg["recall_size"]):
        result["int8_recall"] = {
            name: int8_recall(extractors["onnxruntime_fp32"], extractors[name])
            for name in INT8_VARIANTS
            if name in extractors
        }
    return result


def int8_recall(fp32, int8) -> dict:
    """Recall@1 change of int8 vs fp32 on the real Corridor set (skipped when it is absent)."""
    from ..data import load_dataset
    from ..export import recall_change
    from ..paths import corridor_if_present

    root = corridor_if_present()
    if root is None:
        return {"skipped": "the Corridor set is not on this machine (set STRUCTVPR_CORRIDOR)"}
    return recall_change(fp32, int8, load_dataset(root))
