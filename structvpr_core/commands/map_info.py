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
    from ..mapdb import MANIFEST, MapDatabase

    mapdb = MapDatabase.load(args.map)   # full validation; MapError with the reason otherwise
    manifest = json.loads((mapdb.path / MANIFEST).read_text(encoding="utf-8"))
    manifest["path"] = str(mapdb.path)
    manifest["size_bytes"] = sum(f.stat().st_size for f in mapdb.path.iterdir() if f.is_file())
    print(json.dumps(manifest, indent=2))
    mapdb.close()
    return 0
