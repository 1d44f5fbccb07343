"""Pittsburgh (and Tokyo 24/7) in the NetVLAD layout: a MATLAB ``dbStruct`` plus image folders.

``<root>/datasets/pitts30k_test.mat`` (or ``pitts250k_*``, ``tokyo247.mat``…) holds a struct
``dbStruct`` with fields whichSet, dbImageFns, utmDb (2×N), qImageFns, utmQ (2×M), numImages,
numQueries, posDistThr (25 m), posDistSqThr, nonTrivPosDistSqThr (100 m², i.e. the 10 m
training positives). Database images are ``<root>/<dbImageFn>``, queries
``<root>/queries_real/<qImageFn>``. ``root`` may also be the .mat file itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .dataset import SPLITS, PlaceDataset, radius_neighbours

FIELDS = ("whichSet", "dbImageFns", "utmDb", "qImageFns", "utmQ")


def looks_like(root: Path) -> bool:
    """A .mat file itself, or a ``datasets/`` folder holding one."""
    if root.is_file():
        return root.suffix.lower() == ".mat"
    return (root / "datasets").is_dir() and any((root / "datasets").glob("*.mat"))


def find_mat(root: Path, split: str) -> Path:
    """The dbStruct file of ``split`` under ``root/datasets`` (pitts30k before pitts250k)."""
    folder = root / "datasets"
    if not folder.is_dir():
        raise DatasetError(f"{folder}: missing folder (Pittsburgh layout needs datasets/*.mat)")
    mats = sorted(folder.glob("*.mat"))
    matching = [m for m in mats if m.stem.endswith(f"_{split}")]
    unsplit = [m for m in mats if not any(m.stem.endswith(f"_{s}") for s in SPLITS)]
    if not matching and len(unsplit) == 1:
        matching = unsplit  # e.g. tokyo247.mat: one file, no split in its name
    if not matching:
        raise DatasetError(
            f"{folder}: no .mat file for split {split!r} (found: {', '.join(m.name for m in mats) or 'none'})"
        )
    matching.sort(key=lambda m: (not m.name.startswith("pitts30k"), m.name))
    return matching[0]


def _strings(value, path: Path, name: str) -> list[str]:
    items = np.atleast_1d(np.asarray(value, dtype=object)).ravel()
    out = []
    for item in items:
        item = item.item() if isinstance(item, np.ndarray) and item.size == 1 else item
        if not isinstance(item, str) or not item:
            raise DatasetError(f"{path}: dbStruct.{name} must be a cell array of file names")
        out.append(item)
    return out


def _utm(value, n: int, path: Path, name: str) -> np.ndarray:
    try:
        utm = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: dbStruct.{name} is not numeric") from None
    if utm.size != 2 * n:
        raise DatasetError(f"{path}: dbStruct.{name} has {utm.size} values, expected 2×{n}")
    utm = utm.reshape(2, n).T if utm.ndim != 2 or utm.shape[0] == 2 else utm
    if not np.all(np.isfinite(utm)):
        raise DatasetError(f"{path}: dbStruct.{name} contains NaN or infinity")
    return np.ascontiguousarray(utm)


def read_dbstruct(path: Path) -> dict:
    """The fields of ``dbStruct`` in ``path``, checked (file names, 2×N UTM arrays, thresholds)."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=True)
    except NotImplementedError:
        raise DatasetError(f"{path}: MATLAB v7.3 (HDF5) files are not supported; re-save with -v7") from None
    except Exception as e:  # scipy raises assorted errors on corrupt files
        raise DatasetError(f"{path}: not a readable MATLAB file ({type(e).__name__}: {e})") from None
    if "dbStruct" not in mat:
        raise DatasetError(f"{path}: no variable 'dbStruct'")
    s = mat["dbStruct"]
    names = s.dtype.names or ()
    missing = [f for f in FIELDS if f not in names]
    if missing:
        raise DatasetError(f"{path}: dbStruct has no field {missing[0]!r}")
    s = s.reshape(-1)[0] if s.ndim else s[()]
    db, q = _strings(s["dbImageFns"], path, "dbImageFns"), _strings(s["qImageFns"], path, "qImageFns")

    def scalar(name, default):
        if name not in names:
            return default
        try:
            return float(np.asarray(s[name]).reshape(-1)[0])
        except (TypeError, ValueError, IndexError):
            raise DatasetError(f"{path}: dbStruct.{name} is not a number") from None

    return {
        "whichSet": str(s["whichSet"]),
        "dbImageFns": db,
        "qImageFns": q,
        "utmDb": _utm(s["utmDb"], len(db), path, "utmDb"),
        "utmQ": _utm(s["utmQ"], len(q), path, "utmQ"),
        "posDistThr": scalar("posDistThr", 25.0),
        "nonTrivPosDistSqThr": scalar("nonTrivPosDistSqThr", 100.0),
    }


def load_pitts(
    root: Path,
    split: str = "test",
    pos_dist_m: float = 25.0,
    mat: str | Path | None = None,
    queries_dir: str = "queries_real",
) -> PlaceDataset:
    root = Path(root)
    if mat is not None:
        mat_path = Path(mat)
    elif root.is_file():
        mat_path, root = root, (root.parent.parent if root.parent.name == "datasets" else root.parent)
    else:
        mat_path = find_mat(root, split)
    if not mat_path.is_file():
        raise DatasetError(f"{mat_path}: no such .mat file")
    s = read_dbstruct(mat_path)
    database = [root / f for f in s["dbImageFns"]]
    queries = [root / queries_dir / f for f in s["qImageFns"]]
    for p in database + queries:
        if not p.is_file():
            raise DatasetError(f"{mat_path}: names a missing image {p}")
    return PlaceDataset(
        name=mat_path.stem,
        root=root,
        database=database,
        queries=queries,
        positives=radius_neighbours(s["utmDb"], s["utmQ"], pos_dist_m),
        db_coords=s["utmDb"],
        q_coords=s["utmQ"],
        kind="geo",
        format="pitts",
        split=s["whichSet"] or split,
        meta={
            "source": str(mat_path),
            "pos_dist_m": pos_dist_m,
            "mat_pos_dist_m": s["posDistThr"],
            "train_pos_dist_m": float(np.sqrt(s["nonTrivPosDistSqThr"])),
        },
    )
