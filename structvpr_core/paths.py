"""Where things are on disk: the cache of what structvpr can recompute (``$STRUCTVPR_CACHE``, else
``~/.cache/structvpr``) and the small real route shipped in the repository (``datasets/corridor``).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The cache root (descriptor caches, ONNX exports); read at call time so tests can redirect it."""
    return Path(os.environ.get("STRUCTVPR_CACHE") or Path.home() / ".cache" / "structvpr")


def corridor_root() -> Path:
    """The real Corridor route used by the tests, the demo and the parity checks.

    ``$STRUCTVPR_CORRIDOR`` when set, else the copy in a source checkout (``datasets/corridor``).
    """
    env = os.environ.get("STRUCTVPR_CORRIDOR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "datasets" / "corridor"


def corridor_if_present() -> Path | None:
    """``corridor_root()`` when the route is there (its ground truth exists), else None."""
    root = corridor_root()
    return root if (root / "ground_truth.csv").is_file() else None


def parity_images() -> list[Path]:
    """The real frames shipped with the package for runtime parity checks (``assets/parity``), sorted."""
    folder = Path(__file__).resolve().parent / "assets" / "parity"
    return sorted(p for p in folder.glob("*.jpg"))
