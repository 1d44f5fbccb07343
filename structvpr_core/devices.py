"""Torch device selection: one rule for the extractor, training and the node; and PyTorch itself.

PyTorch is optional at run time: a runtime-only install (``pip install ".[runtime]"``, see the
README) runs an exported ``.onnx`` model with ONNX Runtime and has no torch. There
``resolve_device`` still answers for the CPU (``auto`` and ``cpu``, as a ``CpuDevice``), and
``require_torch`` is how a torch-only feature (a ``.pt`` checkpoint, the ImageNet model, backend
torch, CUDA through torch, export, training) asks for it: a one-line ``MissingDependencyError``
naming what to install instead of an ImportError traceback.

Where PyTorch is installed but not yet imported (a node or a CLI command running an exported
model), ``auto`` and ``cpu`` still answer without importing it when no NVIDIA device is present
(``cuda_device_present`` asks the driver directly): importing torch costs ~470 MB of resident
memory that a process running ONNX Runtime or OpenVINO never needs. The torch paths turn the
``CpuDevice`` into a ``torch.device`` when they start (``as_torch_device``).
"""

from __future__ import annotations

import ctypes
import re
import sys

from .errors import ConfigError, MissingDependencyError

INSTALL_TORCH = 'pip install ".[train]" (or the full requirements.txt)'
_DEVICE = re.compile(r"^(?:auto|cpu(?::\d+)?|cuda(?::\d+)?)$")


class CpuDevice:
    """What ``resolve_device`` returns for the CPU without PyTorch: ``type`` and ``index`` as a torch.device has."""

    type = "cpu"
    index = None

    def __str__(self) -> str:
        return "cpu"

    __repr__ = __str__


def torch_available() -> bool:
    """Whether PyTorch can be imported (it is then imported)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def require_torch(what: str):
    """The ``torch`` module, or MissingDependencyError naming ``what`` needs it and how to install it."""
    try:
        import torch
    except ImportError:
        raise MissingDependencyError(
            f"{what} needs PyTorch, which is not installed (a runtime-only install runs exported .onnx "
            f"models only: `structvpr export` makes one where PyTorch is); install it with {INSTALL_TORCH}"
        ) from None
    return torch


def cuda_device_present() -> bool:
    """Whether the NVIDIA driver reports at least one device, asked through libcuda (no PyTorch import)."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        try:
            count = ctypes.c_int(0)
            return lib.cuInit(0) == 0 and lib.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
        except AttributeError:  # pragma: no cover - not a CUDA driver library
            return False
    return False


def as_torch_device(device):
    """``device`` as a ``torch.device`` (a ``CpuDevice`` becomes ``torch.device("cpu")``)."""
    torch = require_torch(f"device {device}")
    return device if isinstance(device, torch.device) else torch.device(str(device))


def resolve_device(device: str):
    """``auto`` → cuda when available, else cpu; an explicit cuda without CUDA is a ConfigError.

    A ``torch.device`` when PyTorch is already imported or CUDA is asked for or present; else
    ``auto`` and ``cpu`` give a ``CpuDevice`` (see the module docstring). Without PyTorch, ``cuda``
    is a MissingDependencyError (CUDA runs through PyTorch here).
    """
    if not isinstance(device, str) or not _DEVICE.match(device):
        _bad(device)
    if not device.startswith("cuda") and "torch" not in sys.modules:
        if device != "auto" or not cuda_device_present():
            return CpuDevice()
        if not torch_available():
            return CpuDevice()
    torch = require_torch(f"device {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        _bad(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device: {device!r} requested but CUDA is not available on this machine (use --device cpu or auto)"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device: {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type != "cpu":
        _bad(device)
    return dev


def _bad(device):
    raise ConfigError(f"device: expected auto, cpu or cuda[:N], got {device!r}")
