"""Every dataset format in one table, ``format → (looks_like, load)``, and ``load_dataset`` over it.

Adding a format is one reader module with ``looks_like(root) -> bool`` and
``load_<format>(root, split, pos_dist_m, **options) -> PlaceDataset``, and one row below.
The readers never import this module (they import ``dataset`` for ``PlaceDataset``), so the
table can import all of them without a cycle.

``--format auto`` asks the rows in table order and takes the first whose ``looks_like`` accepts
the root: the most specific layout first, so a root that fits two of them is read as the
stricter one: pitts (a .mat file or ``datasets/*.mat``), msls (``train_val/`` or city folders
with ``postprocessed.csv``), vpr-bench (``ref/`` + ``query/``), folder (``database/``, possibly
under split folders), nordland (two season folders: names common enough to come last).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from ..errors import DatasetError
from . import folder, msls, nordland, pitts, vprbench
from .dataset import SPLITS, PlaceDataset


class Loader(NamedTuple):
    looks_like: Callable[[Path], bool]  # cheap: directory layout only, no image is read
    load: Callable[..., PlaceDataset]  # (root, split=, pos_dist_m=, **format options)


# In detection order (see the module docstring).
LOADERS: dict[str, Loader] = {
    "pitts": Loader(pitts.looks_like, pitts.load_pitts),
    "msls": Loader(msls.looks_like, msls.load_msls),
    "vpr-bench": Loader(vprbench.looks_like, vprbench.load_vprbench),
    "folder": Loader(folder.looks_like, folder.load_folder),
    "nordland": Loader(nordland.looks_like, nordland.load_nordland),
}
FORMATS = tuple(LOADERS)


def detect_format(root: str | Path) -> str:
    """Guess the format of the dataset at ``root`` from its layout (no image is read)."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: no such dataset directory")
    if root.is_file() and root.suffix.lower() != ".mat":
        raise DatasetError(f"{root}: a dataset is a directory (or a Pittsburgh .mat file)")
    for name, loader in LOADERS.items():
        if loader.looks_like(root):
            return name
    raise DatasetError(
        f"{root}: cannot tell the dataset format (expected database/ + queries/, ref/ + query/, "
        f"datasets/*.mat, train_val/<city>/ or two Nordland season folders); pass --format"
    )


def load_dataset(
    root: str | Path, format: str = "auto", split: str = "test", pos_dist_m: float = 25.0, **options
) -> PlaceDataset:
    """Read the dataset at ``root`` in ``format`` ("auto" detects it) as a checked ``PlaceDataset``.

    ``split`` selects train/val/test where the format has splits; ``pos_dist_m`` is the positive
    radius of geographic formats (25 m, the community's convention). Format-specific options:
    folder: none; pitts: ``mat`` (path of the dbStruct file); msls: ``cities`` (list), ``exclude_panos``;
    nordland: ``database_name``, ``query_name``, ``frame_tolerance`` (frames, default 10).
    """
    root = Path(root)
    if format == "auto":
        format = detect_format(root)
    if format not in LOADERS:
        raise DatasetError(f"unknown dataset format {format!r} (known: auto, {', '.join(FORMATS)})")
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
    if not root.exists():
        raise DatasetError(f"{root}: no such dataset directory")
    if not (pos_dist_m > 0):
        raise DatasetError(f"positive radius must be > 0 m, got {pos_dist_m}")
    try:
        dataset = LOADERS[format].load(root, split=split, pos_dist_m=pos_dist_m, **options)
    except TypeError as e:
        # An option meant for another format: name it instead of a Python traceback.
        if "unexpected keyword" in str(e):
            raise DatasetError(f"format {format}: {e}") from None
        raise
    return dataset.check()
