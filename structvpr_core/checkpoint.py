"""Model checkpoints: the weights plus what is needed to rebuild and check the model.

A checkpoint is a ``torch.save`` file of plain data only (so it loads with
``weights_only=True``)::

    {"format": "structvpr-checkpoint", "format_version": 1,
     "architecture": "structvpr-rgb-mobilenetv2" | "structvpr-seg-mobilenetl" |
                     "structvpr-pp-rgb-mobilenetv2" | "structvpr-pp-seg-mobilenetl",
     "descriptor_dim": 448 | 480 | 448 + C·d_l | 480 + C·d_l, "model_args": {...constructor kwargs...},
     "config": {...the job's config...}, "state_dict": {...}, "extra": {...} | None,
     "query_encoder_for": {...a model fingerprint...} | None}

``query_encoder_for`` marks a low-quality-query student: a query encoder for the maps built by
the model with that fingerprint (its teacher); see ``fingerprint.accepts``.

Writing is atomic. Loading refuses a file that is unreadable, truncated, not a structvpr
checkpoint, or of another architecture than the caller asked for.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .atomic import atomic_write
from .config import to_dict
from .errors import CheckpointError
from .fingerprint import fingerprint_subset

FORMAT = "structvpr-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("architecture", "descriptor_dim", "config", "state_dict")


def save_checkpoint(
    path: str | os.PathLike,
    model,
    *,
    architecture: str,
    descriptor_dim: int,
    config: Any,
    extra: dict | None = None,
    query_encoder_for: dict | None = None,
) -> None:
    """Write ``model``'s weights with its architecture name, descriptor size and config (atomic).

    ``config`` may be a dataclass or plain data; it is stored as plain data. ``extra`` holds any
    further plain data (epoch, metrics, optimiser state for resuming, ...).
    """
    from .devices import require_torch
    from .models import DIMS
    from .models import descriptor_dim as expected_dim

    torch = require_torch("saving a checkpoint")
    if architecture not in DIMS:
        raise CheckpointError(f"{path}: unknown architecture {architecture!r} (known: {', '.join(DIMS)})")
    model_args = dict(model.init_kwargs()) if hasattr(model, "init_kwargs") else {}
    dim = expected_dim(architecture, model_args)
    if descriptor_dim != dim:
        raise CheckpointError(f"{path}: architecture {architecture} has descriptor dim {dim}, got {descriptor_dim}")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": architecture,
        "descriptor_dim": int(descriptor_dim),
        "model_args": model_args,
        "config": to_dict(config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": to_dict(extra) if extra is not None else None,
        "query_encoder_for": fingerprint_subset(query_encoder_for) if query_encoder_for is not None else None,
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(
    path: str | os.PathLike, *, expected_architecture: str | None = None, map_location: str = "cpu"
) -> dict:
    """Read a checkpoint safely (``weights_only=True``) and check it.

    Raises ``CheckpointError`` (naming the file) when it is missing, unreadable, truncated, not a
    structvpr checkpoint, of an architecture other than ``expected_architecture``, or holds a
    weight with NaN or infinity.
    """
    import pickle
    import zipfile

    from .devices import require_torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    torch = require_torch(f"{path}: a PyTorch checkpoint")
    corrupted = CheckpointError(f"{path}: not a readable checkpoint (corrupted or truncated file)")
    # torch.save writes a zip archive: a truncated one has lost its central directory, and
    # torch does not check the archive's CRC-32s, so damaged tensor bytes would load silently.
    if not zipfile.is_zipfile(path):
        raise corrupted
    try:
        with zipfile.ZipFile(path) as archive:
            if archive.testzip() is not None:
                raise corrupted
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
        raise corrupted from None
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: refused by the safe loader (weights_only=True): it holds objects "
            f"other than tensors and plain data, so it is not a structvpr checkpoint"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile):
        raise corrupted from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        raise CheckpointError(f"{path}: not a structvpr checkpoint (expected keys {', '.join(REQUIRED_KEYS)})")
    if ckpt.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {ckpt['format_version']} is newer than this "
            f"structvpr reads ({FORMAT_VERSION})"
        )
    architecture = ckpt["architecture"]
    if expected_architecture is not None and architecture != expected_architecture:
        raise CheckpointError(
            f"{path}: checkpoint holds architecture {architecture!r}, but {expected_architecture!r} was requested"
        )
    state = ckpt["state_dict"]
    if isinstance(state, dict):
        for name, tensor in state.items():
            if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise CheckpointError(
                    f"{path}: weight {name!r} holds NaN or infinity (a diverged training run?): "
                    "every descriptor would be NaN"
                )
    ckpt.setdefault("extra", None)
    ckpt.setdefault("query_encoder_for", None)
    ckpt.setdefault("model_args", {})
    return ckpt


def build_model_from_checkpoint(path: str | os.PathLike, *, expected_architecture: str | None = None):
    """The model stored in a checkpoint, weights loaded, in eval mode, on the CPU."""
    from .models import ARCHITECTURES, RGB_ARCHITECTURES

    ckpt = load_checkpoint(path, expected_architecture=expected_architecture)
    architecture = ckpt["architecture"]
    if architecture not in ARCHITECTURES:
        raise CheckpointError(f"{path}: unknown architecture {architecture!r} (known: {', '.join(ARCHITECTURES)})")
    cls = ARCHITECTURES[architecture]
    kwargs = dict(ckpt["model_args"])
    if architecture in RGB_ARCHITECTURES:
        kwargs["pretrained"] = False  # the checkpoint's weights replace the ImageNet ones
    try:
        model = cls(**kwargs)
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{path}: weights do not fit architecture {architecture!r} ({str(e).splitlines()[0][:200]})"
        ) from None
    if ckpt["descriptor_dim"] != model.dim:
        raise CheckpointError(
            f"{path}: descriptor_dim {ckpt['descriptor_dim']} does not match {architecture!r} ({model.dim})"
        )
    return model.eval()
