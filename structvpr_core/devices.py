"""Torch device selection: one rule for the extractor, training and the node."""

from __future__ import annotations

from .errors import ConfigError


def resolve_device(device: str):
    """``auto`` → cuda when available, else cpu; an explicit cuda without CUDA is a ConfigError."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device: expected auto, cpu or cuda[:N], got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device: {device!r} requested but CUDA is not available on this machine (use --device cpu or auto)"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device: {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type != "cpu":
        raise ConfigError(f"device: expected auto, cpu or cuda[:N], got {device!r}")
    return dev
