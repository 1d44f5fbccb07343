"""``structvpr map-repair``: add checksums to an older map, or re-seal a manifest edited on purpose."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "map-repair"
HELP = "add checksums to a map saved without them, or re-seal a manifest edited on purpose"
DESCRIPTION = """\
Check MAPDIR fully (as map-info --verify) and, when every check passes, make it verifiable:

  - a map saved by an older structvpr (no checksums): its files' sha256 and the manifest's own
    checksum are written into manifest.json (the data files are not touched);
  - a manifest edited by hand (its checksum no longer matches) whose files still match theirs:
    re-sealed as edited, only with --accept-edited-manifest (the manifest must pass its schema).

What it does not do, and why: rebuild a damaged file. The descriptors are stored only in
index.faiss (keyframes.sqlite holds the keyframe metadata and local features, no descriptors),
and the keyframe metadata only in keyframes.sqlite, so neither can be recovered from the other.
Restore a copy of the map, or rebuild it with `structvpr build-map --overwrite`.

Example:
  structvpr map-repair maps/old_corridor
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("map", type=Path, metavar="MAPDIR", help="map directory (build-map)")
    p.add_argument(
        "--accept-edited-manifest",
        action="store_true",
        help="re-seal a manifest edited by hand when the files match their checksums",
    )


def run(args) -> int:
    from ..mapdb import repair_map

    print(repair_map(args.map, accept_edited_manifest=args.accept_edited_manifest))
    return 0
