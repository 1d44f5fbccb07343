"""``structvpr map-info``: print a map's manifest (after checking the map loads)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "map-info"
HELP = "print the manifest of a map database (model fingerprint, index, counts)"
DESCRIPTION = """\
Load MAPDIR (checking its files, as the node and 'query' would) and print its manifest as
JSON: format version, model fingerprint (architecture, weights hash, input size, descriptor
dim), index type and parameters, keyframe counts, creation time, file sizes.

Example:
  structvpr map-info maps/corridor
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("map", type=Path, metavar="MAPDIR", help="map directory (build-map)")


def run(args) -> int:
    from ..mapquery import map_info

    print(json.dumps(map_info(args.map), indent=2))
    return 0
