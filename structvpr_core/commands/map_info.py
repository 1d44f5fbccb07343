"""``structvpr map-info``: print a map's manifest (after checking the map loads), or check all of it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "map-info"
HELP = "print the manifest of a map database (model fingerprint, index, counts); --verify checks all of it"
DESCRIPTION = """\
Load MAPDIR (checking its files, as the node and 'query' would) and print its manifest as
JSON: format version, model fingerprint (architecture, weights hash, input size, descriptor
dim), index type and parameters, keyframe counts, creation time, file sizes and checksums.

--verify checks everything instead and prints one line per check: the manifest's schema and
its own checksum, each file's size and sha256, every descriptor finite and of unit norm, the
keyframe database (SQLite's integrity check, every row and every local-feature set decoded).
It goes on after a problem where it can, and exits 1 if any check failed. A map saved before
checksums existed is checked as far as it can be; `structvpr map-repair` then adds them.

Example:
  structvpr map-info maps/corridor
  structvpr map-info --verify maps/corridor
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("map", type=Path, metavar="MAPDIR", help="map directory (build-map)")
    p.add_argument("--verify", action="store_true", help="check every file and record of the map (see above)")


def run(args) -> int:
    if args.verify:
        from ..mapdb import verify_map

        report = verify_map(args.map)
        for line in report.checked:
            print(f"ok   {line}")
        for line in report.problems:
            print(f"BAD  {line}")
        if report.ok:
            extra = "" if report.sealed else " (no checksums: add them with structvpr map-repair)"
            print(f"{report.path}: every check passes{extra}")
            return 0
        print(f"{report.path}: {len(report.problems)} problem(s)")
        return 1

    from ..mapquery import map_info

    print(json.dumps(map_info(args.map), indent=2))
    return 0
