"""Where structvpr keeps what it can recompute: ``$STRUCTVPR_CACHE``, else ``~/.cache/structvpr``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The cache root (descriptor caches, ONNX exports); read at call time so tests can redirect it."""
    return Path(os.environ.get("STRUCTVPR_CACHE") or Path.home() / ".cache" / "structvpr")
