"""The ONNX files the Extractor exports on first use, cached by model fingerprint.

``$STRUCTVPR_CACHE/onnx/`` (default ``~/.cache/structvpr/onnx/``) holds
``<architecture>-<weights sha256[:16]>-<W>x<H>-v<export format>.onnx`` and its sidecar. Two
processes starting at once (the node and a CLI command) do not clash: the export happens under
a file lock (``filelock``, a PyTorch dependency) and lands by atomic rename, and a reader that
finds a complete, valid pair uses it without waiting. A damaged cache entry is exported again
with a warning (it is a cache); a damaged file the user named is an error instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..errors import CheckpointError
from ..log import get_logger
from ..paths import cache_root
from .onnx_export import export_onnx
from .onnx_format import FORMAT_VERSION, check_onnx_model, make_sidecar, sidecar_path, write_sidecar

log = get_logger(__name__)
LOCK_TIMEOUT_S = 600.0  # an export takes seconds; a lock held this long belongs to a hung process


def cache_dir() -> Path:
    return cache_root() / "onnx"


def trt_cache_dir() -> Path:
    """Where TensorRT keeps its engines and timing cache (beside the ONNX cache)."""
    return cache_root() / "tensorrt"


def cache_path(fingerprint: dict, directory: str | os.PathLike | None = None) -> Path:
    w, h = fingerprint["input_size"]
    name = (
        f"{fingerprint['architecture']}-{fingerprint['weights_sha256'][:16]}-{int(w)}x{int(h)}-v{FORMAT_VERSION}.onnx"
    )
    return Path(directory) / name if directory is not None else cache_dir() / name


def cached_onnx(
    fingerprint: dict,
    build_model: Callable[[], object],
    *,
    source: dict,
    query_encoder_for: dict | None = None,
    directory: str | os.PathLike | None = None,
) -> tuple[Path, bool]:
    """The cached ONNX file for ``fingerprint`` (exported from ``build_model()`` when absent).

    Returns (path, whether it was exported now). The fingerprint is checked against the
    sidecar either way. ``query_encoder_for`` (a student's teacher) is recorded in the sidecar.
    """
    from filelock import FileLock, Timeout

    path = cache_path(fingerprint, directory)
    size = tuple(fingerprint["input_size"])
    if path.is_file() and sidecar_path(path).is_file():
        try:
            check_onnx_model(path, expected_fingerprint=fingerprint, image_size=size)
            return path, False
        except CheckpointError:
            pass  # half-replaced or damaged: take the lock and look again
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S):
            if path.is_file() and sidecar_path(path).is_file():
                try:
                    check_onnx_model(path, expected_fingerprint=fingerprint, image_size=size)
                    return path, False  # another process exported it while we waited
                except CheckpointError as e:
                    log.warning("cached ONNX model is damaged, exporting it again: %s", e)
            export_onnx(build_model(), path, image_size=size)
            sidecar = make_sidecar(path, fingerprint=fingerprint, source=source, query_encoder_for=query_encoder_for)
            write_sidecar(path, sidecar)
            return path, True
    except Timeout:
        raise CheckpointError(
            f"{path}.lock: held by another process for over {LOCK_TIMEOUT_S:.0f} s; "
            "delete the lock file if no structvpr process is running"
        ) from None
    except OSError as e:
        raise CheckpointError(
            f"{path}: cannot write the ONNX cache ({e.strerror}); set STRUCTVPR_CACHE to a "
            "writable directory or use backend torch"
        ) from None
