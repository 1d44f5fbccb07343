"""Torch device selection: one rule for the extractor, training and the node; and PyTorch itself.

PyTorch is optional at run time: a runtime-only install (``pip install ".[runtime]"``, see the
README) runs an exported ``.onnx`` model with ONNX Runtime and has no torch. There
``resolve_device`` still answers for the CPU (``auto`` and ``cpu``, as a ``CpuDevice``), and
``require_torch`` is how a torch-only feature (a ``.pt`` checkpoint, the ImageNet model, backend
torch, CUDA through torch, export, training) asks for it: a one-line ``MissingDependencyError``
naming what to install instead of an ImportError traceback.
"""

from __future__ import annotations

import re

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


def resolve_device(device: str):
    """``auto`` → cuda when available, else cpu; an explicit cuda without CUDA is a ConfigError.

    A ``torch.device``; without PyTorch, ``auto`` and ``cpu`` give a ``CpuDevice`` and ``cuda``
    is a MissingDependencyError (CUDA runs through PyTorch here).
    """
    if not isinstance(device, str) or not _DEVICE.match(device):
        _bad(device)
    if not device.startswith("cuda") and not torch_available():
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
