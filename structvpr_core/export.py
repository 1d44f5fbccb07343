"""``structvpr export``: the RGB branch as a deployable ONNX file, checked against PyTorch.

A StructVPR++ student exports the same way; its graph has a second output, ``masks`` (the soft
label masks for a debug view), whose fp32 values must also match PyTorch's.

The pipeline on top of the runners: export the fp32 graph (``backends.onnx_export``), run it
with ONNX Runtime next to PyTorch on real images and refuse to write it unless every descriptor
pair has cosine >= ``FP32_MIN_COSINE``; with int8, quantise it (``backends.int8``) and measure
its parity, speed and Recall@1 change; then install the file and its sidecar atomically. The
file format itself (graph names, sidecar, the check before a file runs) is
``backends.onnx_format``; the measured parity goes into the sidecar's ``parity``.

Results are returned (and logged at debug level); the ``structvpr export`` command prints them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .atomic import fsync_dir
from .backends.onnx_export import export_onnx
from .backends.onnx_format import make_sidecar, sidecar_path, write_sidecar
from .errors import CheckpointError, ConfigError
from .extractor import Extractor
from .images import list_images, read_image
from .log import get_logger
from .paths import corridor_if_present

log = get_logger(__name__)

FP32_MIN_COSINE = 0.999  # parity floor of the fp32 export against PyTorch (the bound)
FP32_MAX_MASK_DIFF = 1e-3  # StructVPR++: largest |difference| of a soft-mask value, fp32 export vs PyTorch
INT8_MAX_RECALL_CHANGE = 0.01  # |ΔRecall@1| the int8 model should stay within (reported, not enforced)
INT8_METHODS = ("nncf", "ort")  # NNCF with accuracy control (default) | ONNX Runtime's quantiser


def evenly(items: list, n: int) -> list:
    """Up to ``n`` items spread evenly over ``items`` (order kept)."""
    if len(items) <= n:
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def choose_calibration_images(folder: str | os.PathLike, count: int) -> list[Path]:
    """Up to ``count`` images of ``folder`` for int8 calibration, spread evenly over it."""
    found = list_images(folder)
    if not found:
        raise ConfigError(f"{folder}: no images for int8 calibration")
    return evenly(found, count)


def load_eval_dataset(spec: str | os.PathLike | None):
    """The dataset for the int8 Recall@1 check: a directory, None for the Corridor set when present, "none" for none."""
    if spec == "none":
        return None
    root = Path(spec) if spec else corridor_if_present()
    if root is None:
        return None
    from .data import load_dataset

    return load_dataset(root)


def choose_parity_images(
    count: int, *, folder: str | os.PathLike | None = None, dataset=None, calibration: list[Path] | None = None
) -> list[Path]:
    """``count`` real images for the parity check: from ``folder``, else ``dataset``, else the calibration images."""
    if folder is not None:
        images = list_images(folder)
        if not images:
            raise ConfigError(f"{folder}: no images for the parity check")
    elif dataset is not None:
        images = list(dataset.database) + list(dataset.queries)
    elif calibration:
        images = list(calibration)
    else:
        raise ConfigError("no real images for the parity check: give --parity-images DIR (or --eval-dataset DIR)")
    return evenly(images, count)


def parity(reference, candidate, paths, progress: bool = False) -> dict:
    """Cosine between two extractors' descriptors of the same images (and, for a StructVPR++
    student, the largest difference between their soft label masks: ``masks_max_abs_diff``)."""
    a = reference.embed_paths(paths, progress=progress)
    b = candidate.embed_paths(paths, progress=progress)
    cos = (a * b).sum(axis=1)
    result = {"images": len(paths), "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}
    if reference.has_masks and candidate.has_masks:
        diff = max(float(np.abs(reference.masks([im]) - candidate.masks([im])).max()) for im in map(read_image, paths))
        result["masks_max_abs_diff"] = diff
    return result


def recall_change(fp32, int8, dataset, progress: bool = False) -> dict:
    """Recall@1 on ``dataset`` with fp32 and int8 descriptors (and int8 queries on an fp32 map)."""
    from .evaluate import recall_at_n

    db32, q32 = (fp32.embed_paths(paths, progress=progress) for paths in (dataset.database, dataset.queries))
    db8, q8 = (int8.embed_paths(paths, progress=progress) for paths in (dataset.database, dataset.queries))
    r32 = recall_at_n(db32, q32, dataset.positives, ns=(1,))[1]
    r8 = recall_at_n(db8, q8, dataset.positives, ns=(1,))[1]
    mixed = recall_at_n(db32, q8, dataset.positives, ns=(1,))[1]
    cos = np.concatenate([(db32 * db8).sum(1), (q32 * q8).sum(1)])
    return {
        "dataset": str(dataset.root),
        "synthetic": bool(getattr(dataset, "synthetic", False)),
        "num_queries": dataset.num_queries,
        "recall@1_fp32": r32,
        "recall@1_int8": r8,
        "delta": r8 - r32,
        "recall@1_int8_queries_fp32_map": mixed,
        "delta_mixed": mixed - r32,
        "descriptor_cosine_mean": float(cos.mean()),
        "descriptor_cosine_min": float(cos.min()),
    }


def int8_runtimes(checkpoint, int8_path: Path, image_size: tuple[int, int], threads: int | None) -> dict:
    """{runtime: Extractor} running the int8 file: ONNX Runtime, and OpenVINO when installed."""
    from .backends.ov_backend import openvino_version

    names = ["onnxruntime"] + (["openvino"] if openvino_version() is not None else [])
    return {
        name: Extractor(
            checkpoint, device="cpu", backend=name, image_size=image_size, onnx_model=int8_path, threads=threads
        )
        for name in names
    }


def time_per_image_ms(extractor, image, repeats: int = 20) -> float:
    """Median wall time of ``extractor.embed([image])`` (after two warm-up runs)."""
    import time

    image = extractor.prepare(image)  # at the input size already: the resize is not timed
    for _ in range(2):
        extractor.embed([image])
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        extractor.embed([image])
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000.0)


def write_int8_export(
    fp32_path: str | os.PathLike,
    out: str | os.PathLike,
    calibration: list[Path],
    *,
    fingerprint: dict,
    source: dict,
    image_size: tuple[int, int],
    fmt: str = "qdq",
    keep_float=None,
    progress: bool = True,
    query_encoder_for: dict | None = None,
    method: str = "ort",
    max_drop: float | None = None,
) -> dict:
    """Quantise the export ``fp32_path`` to ``out`` and write its int8 sidecar; returns the quantisation record.

    ``method``: "ort" (ONNX Runtime's quantiser, ``backends.int8``) or "nncf" (NNCF with accuracy
    control bounded by ``max_drop``, ``backends.int8_nncf``); both write QDQ ONNX.
    """
    from .backends.int8 import DEFAULT_KEEP_FLOAT

    if method not in INT8_METHODS:
        raise ConfigError(f"int8 method: expected one of {', '.join(INT8_METHODS)}, got {method!r}")
    keep = DEFAULT_KEEP_FLOAT if keep_float is None else keep_float
    if method == "nncf":
        from .backends.int8_nncf import DEFAULT_MAX_DROP, quantize_int8_nncf

        if fmt != "qdq":
            raise ConfigError("int8 format: NNCF writes QDQ only")
        quant = quantize_int8_nncf(
            fp32_path,
            out,
            calibration,
            image_size=image_size,
            keep_float=keep,
            max_drop=DEFAULT_MAX_DROP if max_drop is None else max_drop,
            progress=progress,
        )
    else:
        from .backends.int8 import quantize_int8

        quant = quantize_int8(
            fp32_path, out, calibration, image_size=image_size, fmt=fmt, keep_float=keep, progress=progress
        )
    sidecar = make_sidecar(
        out,
        fingerprint=fingerprint,
        source=source,
        precision="int8",
        quantization=quant,
        query_encoder_for=query_encoder_for,
    )
    write_sidecar(out, sidecar)
    return quant


def export_model_files(
    checkpoint: str | os.PathLike | None,
    out: str | os.PathLike,
    *,
    image_size: tuple[int, int] = (640, 480),
    int8: bool = False,
    calibration: list[Path] | None = None,
    int8_format: str = "qdq",
    keep_float=None,
    int8_method: str = "nncf",
    int8_max_drop: float | None = None,
    parity_images: list[Path] | None = None,
    eval_dataset=None,
    threads: int | None = None,
    progress: bool = True,
) -> dict:
    """Export ``checkpoint`` (None = ImageNet weights) to ``out`` + sidecar; returns the sidecar.

    The fp32 export must match PyTorch (min cosine >= FP32_MIN_COSINE on ``parity_images``) or
    nothing is written. With ``int8`` the quantised model is written instead, calibrated on
    ``calibration``; its parity, speed and (with ``eval_dataset``) Recall@1 change are recorded
    in the sidecar's ``parity`` (keys fp32, int8, speed, recall).
    """
    import tempfile
    import time

    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise CheckpointError(f"{out}: the output file must end in .onnx")
    if not parity_images:
        raise CheckpointError("no images for the parity check (give --parity-images DIR)")
    if int8 and not calibration:
        raise CheckpointError("--int8 needs calibration images (--calibration DIR)")
    out.parent.mkdir(parents=True, exist_ok=True)
    reference = Extractor(checkpoint, device="cpu", backend="torch", image_size=image_size, channels_last=False)
    fp = reference.fingerprint
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out.parent) as tmp:
        fp32_path = Path(tmp) / "fp32.onnx"
        export_onnx(reference.model, fp32_path, image_size=image_size)
        write_sidecar(
            fp32_path,
            make_sidecar(
                fp32_path, fingerprint=fp, source=reference.source, query_encoder_for=reference.query_encoder_for
            ),
        )
        ort32 = Extractor(
            checkpoint,
            device="cpu",
            backend="onnxruntime",
            image_size=image_size,
            onnx_model=fp32_path,
            threads=threads,
        )
        par32 = parity(reference, ort32, parity_images, progress)
        log.debug("fp32 parity: %s", par32)
        if not par32["min_cosine"] >= FP32_MIN_COSINE:
            raise CheckpointError(
                f"{out}: not written: the fp32 export does not match PyTorch (min cosine "
                f"{par32['min_cosine']:.6f} < {FP32_MIN_COSINE})"
            )
        if not par32.get("masks_max_abs_diff", 0.0) <= FP32_MAX_MASK_DIFF:
            raise CheckpointError(
                f"{out}: not written: the fp32 export's label masks differ from PyTorch's by "
                f"{par32['masks_max_abs_diff']:.2e} > {FP32_MAX_MASK_DIFF}"
            )
        result = {"fp32": par32}
        final, precision, quant = fp32_path, "fp32", None
        if int8:
            int8_path = Path(tmp) / "int8.onnx"
            quant = write_int8_export(
                fp32_path,
                int8_path,
                calibration,
                fingerprint=fp,
                source=reference.source,
                image_size=image_size,
                fmt=int8_format,
                keep_float=keep_float,
                progress=progress,
                query_encoder_for=reference.query_encoder_for,
                method=int8_method,
                max_drop=int8_max_drop,
            )
            runs8 = int8_runtimes(checkpoint, int8_path, image_size, threads)
            result["int8"] = parity(reference, runs8["onnxruntime"], parity_images, progress)
            log.debug("int8 parity: %s", result["int8"])
            image = read_image(parity_images[0])
            time_per_image_ms(ort32, image, repeats=3)  # ONNX Runtime's spinning threads of the
            t32 = time_per_image_ms(ort32, image)  # parity runs settle first
            t8 = {}
            for name, ex in runs8.items():
                time.sleep(0.1)
                t8[name] = time_per_image_ms(ex, image)
            fastest = min(t8, key=t8.get)
            result["speed"] = {
                "fp32_ms": t32,
                "int8_ms": t8[fastest],
                "int8_runtime": fastest,
                "int8_ms_per_runtime": t8,
                "speedup": t32 / t8[fastest],
                "threads": ort32.runner.threads,
            }
            log.debug("speed: %s", result["speed"])
            if fastest != "onnxruntime":
                result[f"int8_{fastest}"] = parity(reference, runs8[fastest], parity_images, progress)
            if eval_dataset is not None:
                rc = recall_change(ort32, runs8[fastest], eval_dataset, progress)
                rc["int8_runtime"] = fastest
                result["recall"] = rc
                log.debug("Recall@1 change: %s", rc)
                if abs(rc["delta"]) > INT8_MAX_RECALL_CHANGE:
                    log.warning(
                        "int8 Recall@1 |change| > %.0f point: check the int8 model on your own data before "
                        "deploying it",
                        100 * INT8_MAX_RECALL_CHANGE,
                    )
            final, precision = int8_path, "int8"
        sidecar = make_sidecar(
            final,
            fingerprint=fp,
            source=reference.source,
            precision=precision,
            quantization=quant,
            parity=result,
            query_encoder_for=reference.query_encoder_for,
        )
        os.replace(final, out)  # same directory: atomic
        write_sidecar(out, sidecar)
    fsync_dir(out.parent)
    _readable(out, sidecar_path(out))
    return sidecar


def _readable(*paths: Path) -> None:
    """Temporary files are created private (0600); a model to deploy gets the umask's mode like any file."""
    umask = os.umask(0)
    os.umask(umask)
    for p in paths:
        os.chmod(p, 0o666 & ~umask)
