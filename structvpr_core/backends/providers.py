"""Which runtime embeds the images: the choice behind ``Extractor(backend=...)``.

A pure function of the request, the device and the ONNX Runtime execution providers that are
installed, so the policy is testable on any machine:

============ ===================================== =========================================
backend      on the CPU                            on CUDA (untested here: no GPU)
============ ===================================== =========================================
auto         ONNX Runtime (CPU EP); PyTorch with a TensorRT EP when installed, else PyTorch CUDA
             warning when onnxruntime is missing   (half precision with ``half=True``)
torch        PyTorch                               PyTorch CUDA
onnxruntime  ONNX Runtime, CPU EP                  ONNX Runtime, CUDA EP (onnxruntime-gpu)
tensorrt     error: needs CUDA                     ONNX Runtime, TensorRT EP (+ CUDA, CPU)
============ ===================================== =========================================

Why not ONNX Runtime's CUDA EP under ``auto``: for MobileNetV2 it is no faster than PyTorch
with cuDNN, and PyTorch already gives half precision; TensorRT is the one that is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import ConfigError
from .onnx_format import INPUT_NAME

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
TRT_EP = "TensorrtExecutionProvider"


@dataclass(frozen=True)
class BackendPlan:
    """The resolved choice: ``runtime`` is "torch" or "onnxruntime"; ``providers`` the ORT ones, in order."""

    runtime: str
    providers: tuple = ()
    warning: str | None = None  # said once to the user when ``auto`` had to settle for less
    name: str = field(default="")  # what the extractor reports: torch | onnxruntime | tensorrt

    def __post_init__(self):
        if not self.name:
            object.__setattr__(self, "name", self.runtime)


def plan_backend(
    backend: str,
    device_type: str,
    available_providers: Sequence[str] | None,
    *,
    device_index: int | None = None,
    onnx_only: bool = False,
    half: bool = False,
    trt_cache_dir: str | None = None,
    max_batch: int = 8,
    input_shape: tuple[int, int, int] | None = None,
) -> BackendPlan:
    """Resolve ``backend`` for ``device_type`` ("cpu"/"cuda").

    ``available_providers``: ``onnxruntime.get_available_providers()``, or None when
    onnxruntime is not installed. ``onnx_only``: the model is an ONNX file (no PyTorch weights),
    so PyTorch cannot run it. ``input_shape`` (C, H, W) sizes TensorRT's optimisation profile.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    have = set(available_providers or ())
    ort_missing = available_providers is None
    cuda = device_type == "cuda"

    if backend == "torch":
        if onnx_only:
            raise ConfigError(
                "backend 'torch' cannot run an ONNX model file; use auto, onnxruntime or tensorrt "
                "(or give the .pt checkpoint)"
            )
        return BackendPlan("torch")
    if backend == "tensorrt" or (backend == "auto" and cuda and TRT_EP in have):
        if not cuda:
            raise ConfigError("backend 'tensorrt' needs a CUDA device (device: cuda)")
        if ort_missing or TRT_EP not in have:
            raise ConfigError(
                "backend 'tensorrt': onnxruntime has no TensorrtExecutionProvider here; install "
                "onnxruntime-gpu and TensorRT (see docs/performance.md)"
            )
        return BackendPlan(
            "onnxruntime",
            (
                _trt_provider(device_index, half, trt_cache_dir, max_batch, input_shape),
                _cuda_provider(device_index),
                CPU_EP,
            ),
            name="tensorrt",
        )
    if backend == "onnxruntime" or onnx_only or (backend == "auto" and not cuda):
        if ort_missing:
            if backend == "auto" and not onnx_only:
                return BackendPlan(
                    "torch",
                    warning="onnxruntime is not installed: running PyTorch on the CPU, "
                    "about 2x slower (pip install onnxruntime)",
                )
            raise ConfigError(
                "the onnxruntime package is not installed (pip install onnxruntime, or onnxruntime-gpu for CUDA)"
            )
        if cuda:
            if CUDA_EP not in have:
                raise ConfigError(
                    "onnxruntime has no CUDAExecutionProvider here: install onnxruntime-gpu, "
                    "or use device cpu / backend torch"
                )
            return BackendPlan("onnxruntime", (_cuda_provider(device_index), CPU_EP))
        return BackendPlan("onnxruntime", (CPU_EP,))
    return BackendPlan("torch")  # auto on CUDA without TensorRT


def _cuda_provider(device_index: int | None):
    return (CUDA_EP, {"device_id": int(device_index or 0)})


def _trt_provider(device_index, half, cache_dir, max_batch, input_shape):
    # untested here (no GPU). Engines are built on first run (minutes) and cached on disk, keyed
    # by the model; the profile covers batch 1..max_batch at the model's fixed image size.
    opts = {"device_id": int(device_index or 0), "trt_fp16_enable": bool(half)}
    if cache_dir:
        opts.update(
            trt_engine_cache_enable=True,
            trt_engine_cache_path=str(cache_dir),
            trt_timing_cache_enable=True,
            trt_timing_cache_path=str(cache_dir),
        )
    if input_shape is not None:
        c, h, w = input_shape
        one, most = f"{INPUT_NAME}:1x{c}x{h}x{w}", f"{INPUT_NAME}:{max(1, int(max_batch))}x{c}x{h}x{w}"
        opts.update(trt_profile_min_shapes=one, trt_profile_opt_shapes=one, trt_profile_max_shapes=most)
    return (TRT_EP, opts)


def available_providers() -> list[str] | None:
    """ONNX Runtime's execution providers on this machine, or None when it is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return list(onnxruntime.get_available_providers())
