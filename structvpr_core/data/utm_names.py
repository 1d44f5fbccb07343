"""Coordinates in file names, the community folder format's ``@UTM_east@UTM_north@…`` convention.

A name is ``@east@north@zone_number@zone_letter@lat@lon@…@.jpg``: fields split on ``@``, field 1
and 2 the UTM easting and northing in metres, 5 and 6 latitude and longitude in degrees (any of
the later fields may be empty or something else, e.g. the synthetic set's place and view).
This is the one place that reads or writes such names: the folder reader, the synthetic
generator and map building (poses from names) all go through it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

from ..errors import DatasetError


class NameCoordinates(NamedTuple):
    east: float  # UTM metres, as written (may be NaN or infinite: see ``parse_utm``)
    north: float
    lat_lon: tuple[float, float] | None  # (lat, lon) in degrees when fields 5 and 6 hold a valid pair


def parse_name(name: str | Path) -> NameCoordinates | None:
    """The coordinates a file name carries; None when fields 1 and 2 are not numbers."""
    fields = Path(name).name.split("@")
    try:
        east, north = float(fields[1]), float(fields[2])
    except (IndexError, ValueError):
        return None
    try:
        lat, lon = float(fields[5]), float(fields[6])
        lat_lon = (lat, lon) if -90 <= lat <= 90 and -180 <= lon <= 180 else None
    except (IndexError, ValueError):
        lat_lon = None
    return NameCoordinates(east, north, lat_lon)


def parse_utm(path: Path) -> tuple[float, float]:
    """UTM (east, north) from a name ``…@east@north@…``; ``DatasetError`` naming the file otherwise."""
    coords = parse_name(path)
    if coords is None:
        raise DatasetError(f"{path}: name does not carry coordinates as '@UTM_east@UTM_north@'")
    if not (math.isfinite(coords.east) and math.isfinite(coords.north)):
        raise DatasetError(f"{path}: coordinates in the name are not finite")
    return coords.east, coords.north


def utm_name(east: float, north: float, *fields: str) -> str:
    """``@east@north@field…@`` (centimetre precision), without extension: the inverse of ``parse_name``."""
    return "@".join(["", f"{east:.2f}", f"{north:.2f}", *fields, ""])
