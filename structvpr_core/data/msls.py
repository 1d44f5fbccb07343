"""Mapillary Street-Level Sequences (MSLS), official layout, image-to-image task.

``<root>/train_val/<city>/{database,query}/`` each hold ``images/<key>.jpg``,
``postprocessed.csv`` (columns ``,key,easting,northing,…``: UTM of every image) and
``raw.csv`` (``,key,lon,lat,ca,captured_at,pano``). Cities follow the official split of
mapillary_sls: ``train`` → the 22 training cities, ``val`` → cph and sf. The official test
cities come without coordinates, so ``split="test"`` reads the validation cities, which is what
the community reports as "MSLS val". Cities missing on disk are skipped (downloads are often
partial); none present is an error. Panoramas are excluded (``raw.csv`` pano=True), as in
mapillary_sls. Cities named explicitly (``cities=``) must all exist. Positives: database images
of the same city within ``pos_dist_m`` (25 m), by distance only (as the community evaluates
MSLS). Each image's compass angle (``ca`` of ``raw.csv``, degrees) is kept as ``db_heading`` /
``q_heading`` (NaN where ``raw.csv`` or the value is missing), so a trainer can also require
similar view directions (``mining.max_view_angle_deg``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .dataset import PlaceDataset, radius_neighbours

CITIES = {
    "train": [
        "trondheim",
        "london",
        "boston",
        "melbourne",
        "amsterdam",
        "helsinki",
        "tokyo",
        "toronto",
        "saopaulo",
        "moscow",
        "zurich",
        "paris",
        "bangkok",
        "budapest",
        "austin",
        "berlin",
        "ottawa",
        "phoenix",
        "goa",
        "amman",
        "nairobi",
        "manila",
    ],
    "val": ["cph", "sf"],
    "test": ["miami", "athens", "buenosaires", "stockholm", "bengaluru", "kampala"],
}
SIDES = ("database", "query")
# Cities are concatenated into one coordinate array; each is shifted this far east so that a
# radius search never pairs images of two cities (UTM zones reuse the same numbers).
CITY_SHIFT_M = 1.0e7


def cities_dir(root: Path) -> Path:
    return root / "train_val" if (root / "train_val").is_dir() else root


def looks_like(root: Path) -> bool:
    """A ``train_val/`` folder, or city folders whose sides hold ``postprocessed.csv``."""
    base = cities_dir(root)
    if base != root:
        return True
    try:
        children = [c for c in root.iterdir() if c.is_dir()]
    except OSError:
        return False
    return any((c / side / "postprocessed.csv").is_file() for c in children for side in SIDES)


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise DatasetError(f"{path}: missing column {missing[0]!r}")
            return list(reader)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror})") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"{path}: not a readable CSV file ({e})") from None


def _heading(value: str | None, where: str) -> float:
    """A compass angle from raw.csv in [0, 360) degrees; NaN when the cell is empty or absent."""
    text = (value or "").strip()
    if not text or text.lower() == "nan":
        return float("nan")
    try:
        angle = float(text)
    except ValueError:
        raise DatasetError(f"{where}: compass angle 'ca' is not a number ({text!r})") from None
    return angle % 360.0 if np.isfinite(angle) else float("nan")


def read_raw(folder: Path, exclude_panos: bool) -> tuple[set[str], dict[str, float]]:
    """Panorama keys and compass angles (degrees, NaN if unknown) from ``raw.csv``; empty when it is absent."""
    raw = folder / "raw.csv"
    if not raw.is_file():
        return set(), {}
    rows = _read_csv(raw, ("key", "pano") if exclude_panos else ("key",))
    panos = {r["key"] for r in rows if exclude_panos and r["pano"].strip().lower() == "true"}
    headings = {r["key"]: _heading(r.get("ca"), f"{raw}:{line}") for line, r in enumerate(rows, start=2)}
    return panos, headings


def read_side(folder: Path, exclude_panos: bool = True) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """Images, UTM coordinates and compass angles (degrees, NaN if unknown) of one ``database`` or ``query`` folder."""
    post = folder / "postprocessed.csv"
    if not post.is_file():
        raise DatasetError(f"{post}: missing (MSLS needs postprocessed.csv with easting/northing)")
    rows = _read_csv(post, ("key", "easting", "northing"))
    panos, compass = read_raw(folder, exclude_panos)
    paths, coords, headings = [], [], []
    for line, row in enumerate(rows, start=2):
        if row["key"] in panos:
            continue
        try:
            east, north = float(row["easting"]), float(row["northing"])
        except (TypeError, ValueError):
            raise DatasetError(f"{post}:{line}: easting/northing are not numbers") from None
        image = folder / "images" / f"{row['key']}.jpg"
        if not image.is_file():
            raise DatasetError(f"{post}:{line}: names a missing image {image}")
        paths.append(image)
        coords.append((east, north))
        headings.append(compass.get(row["key"], float("nan")))
    if not paths:
        raise DatasetError(f"{post}: no images")
    return paths, np.asarray(coords, dtype=np.float64), np.asarray(headings, dtype=np.float64)


def load_msls(
    root: Path,
    split: str = "test",
    pos_dist_m: float = 25.0,
    cities: list[str] | None = None,
    exclude_panos: bool = True,
) -> PlaceDataset:
    root = Path(root)
    base = cities_dir(root)
    used_split = "val" if split == "test" else split
    wanted = list(cities) if cities else CITIES[used_split]
    present = [c for c in wanted if (base / c).is_dir()]
    if cities and len(present) < len(wanted):
        missing = next(c for c in wanted if c not in present)
        raise DatasetError(f"{base / missing}: city folder missing")
    if not present:
        raise DatasetError(f"{base}: none of the {used_split} cities present (expected e.g. {base / wanted[0]})")
    database, queries, db_coords, q_coords, positives = [], [], [], [], []
    db_heading, q_heading = [], []
    for k, city in enumerate(present):
        db_paths, db_utm, db_ca = read_side(base / city / "database", exclude_panos)
        q_paths, q_utm, q_ca = read_side(base / city / "query", exclude_panos)
        offset = len(database)
        positives += [p + offset for p in radius_neighbours(db_utm, q_utm, pos_dist_m)]
        shift = np.array([k * CITY_SHIFT_M, 0.0])
        database += db_paths
        queries += q_paths
        db_coords.append(db_utm + shift)
        q_coords.append(q_utm + shift)
        db_heading.append(db_ca)
        q_heading.append(q_ca)
    return PlaceDataset(
        name=f"msls-{used_split}",
        root=root,
        database=database,
        queries=queries,
        positives=positives,
        db_coords=np.concatenate(db_coords),
        q_coords=np.concatenate(q_coords),
        kind="geo",
        format="msls",
        split=used_split,
        db_heading=np.concatenate(db_heading),
        q_heading=np.concatenate(q_heading),
        meta={"source": str(base), "cities": present, "pos_dist_m": pos_dist_m, "city_shift_m": CITY_SHIFT_M},
    )
