"""Which runtime embeds the images: the choice behind ``Extractor(backend=...)``.

A pure function of the request, the device and what is installed (ONNX Runtime's execution
providers, OpenVINO's CPU precisions), so the policy is testable on any machine:

============== ======================================= =========================================
backend        on the CPU                              on CUDA (untested here: no GPU)
============== ======================================= =========================================
auto           the fastest installed CPU runtime that  PyTorch with a TensorRT EP when installed,
               passes parity, *measured* on first use  else PyTorch CUDA (half precision with
               (``runtime_choice``): ONNX Runtime,     ``half=True``)
               OpenVINO fp32 / bf16 / fp16; PyTorch
               with a warning when neither is installed
torch          PyTorch                                 PyTorch CUDA
onnxruntime    ONNX Runtime, CPU EP                    ONNX Runtime, CUDA EP (onnxruntime-gpu)
openvino       OpenVINO CPU plugin, fp32               error: OpenVINO runs on the CPU here
openvino-bf16  OpenVINO, bf16 inference precision      error
openvino-fp16  OpenVINO, fp16 inference precision      error
tensorrt       error: needs CUDA                       ONNX Runtime, TensorRT EP (+ CUDA, CPU)
============== ======================================= =========================================

Why not ONNX Runtime's CUDA EP under ``auto``: for MobileNetV2 it is no faster than PyTorch
with cuDNN, and PyTorch already gives half precision; TensorRT is the one that is. Why ``auto``
measures on the CPU instead of ranking the runtimes here: which one is fastest depends on the
CPU (AMX, AVX-512, VNNI), the input size and the versions, by up to 2x either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import ConfigError
from .onnx_format import INPUT_NAME

BACKENDS = ("auto", "torch", "onnxruntime", "openvino", "openvino-bf16", "openvino-fp16", "tensorrt")
# The OpenVINO backends and the inference precision each asks of the CPU plugin.
OPENVINO_BACKENDS = {"openvino": "fp32", "openvino-bf16": "bf16", "openvino-fp16": "fp16"}
CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
TRT_EP = "TensorrtExecutionProvider"


@dataclass(frozen=True)
class BackendPlan:
    """The resolved choice: ``runtime`` is "torch", "onnxruntime" or "openvino"; ``providers`` the ORT
    ones, in order; ``precision`` OpenVINO's inference precision. ``candidates``: with ``auto`` on the
    CPU, the backends to measure (``runtime_choice``) when there is more than one; the plan's own
    runtime is then only the fallback."""

    runtime: str
    providers: tuple = ()
    warning: str | None = None  # said once to the user when ``auto`` had to settle for less
    name: str = field(default="")  # what the extractor reports: one of BACKENDS but auto
    precision: str = "fp32"  # OpenVINO's inference precision (fp32 | bf16 | fp16)
    candidates: tuple[str, ...] = ()

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
    openvino_precisions: Sequence[str] | None = None,
    int8: bool = False,
) -> BackendPlan:
    """Resolve ``backend`` for ``device_type`` ("cpu"/"cuda").

    ``available_providers``: ``onnxruntime.get_available_providers()``, or None when
    onnxruntime is not installed. ``openvino_precisions``: ``ov_backend.cpu_precisions()``, or
    None when OpenVINO is not installed. ``onnx_only``: the model is an ONNX file (no PyTorch
    weights), so PyTorch cannot run it. ``int8``: the ONNX file is an int8 export (``auto`` then
    measures no reduced float precision on top of it). ``input_shape`` (C, H, W) sizes
    TensorRT's optimisation profile.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    have = set(available_providers or ())
    ort_missing = available_providers is None
    cuda = device_type == "cuda"

    if backend in OPENVINO_BACKENDS:
        return _openvino_plan(backend, cuda, openvino_precisions)
    if backend == "auto" and not cuda:
        candidates = cpu_candidates(ort_missing, openvino_precisions, int8)
        if len(candidates) > 1:
            return BackendPlan("onnxruntime", (CPU_EP,), candidates=candidates)
        if candidates == ("openvino",):  # OpenVINO but no ONNX Runtime
            return BackendPlan("openvino", name="openvino")

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


def cpu_candidates(ort_missing: bool, openvino_precisions: Sequence[str] | None, int8: bool) -> tuple[str, ...]:
    """The CPU backends ``auto`` measures: ONNX Runtime and OpenVINO at each precision the CPU offers
    (only fp32 on an int8 export: its float parts stay as exported), in a fixed order."""
    out = [] if ort_missing else ["onnxruntime"]
    for name, precision in OPENVINO_BACKENDS.items():
        if openvino_precisions is not None and precision in openvino_precisions and (precision == "fp32" or not int8):
            out.append(name)
    return tuple(out)


def _openvino_plan(backend: str, cuda: bool, openvino_precisions: Sequence[str] | None) -> BackendPlan:
    precision = OPENVINO_BACKENDS[backend]
    if cuda:
        raise ConfigError(f"backend {backend!r}: OpenVINO runs on the CPU here; use device cpu")
    if openvino_precisions is None:
        raise ConfigError(f"backend {backend!r}: the openvino package is not installed (pip install openvino)")
    if precision not in openvino_precisions:
        raise ConfigError(
            f"backend {backend!r}: this CPU offers OpenVINO {', '.join(openvino_precisions)} only "
            "(bf16 needs AVX-512 BF16 or AMX, fp16 AVX-512 FP16 or AMX-FP16)"
        )
    return BackendPlan("openvino", name=backend, precision=precision)


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
