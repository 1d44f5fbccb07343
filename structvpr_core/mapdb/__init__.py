"""The map database: global descriptors in a faiss index, keyframe metadata in SQLite.

``MapDatabase`` (``database``) composes the rooms of this package:

- ``index``: the faiss index (flat, ivfflat, ivfpq, hnsw), its training and GPU copy;
  ``search``: the batched and the filtered search, exclusion of ids inside faiss;
- ``store``: the SQLite keyframe store (``keyframe``: a keyframe's metadata);
- ``stamps``: per-keyframe stamps and sessions for temporal exclusion;
- ``storage``: the directory format (manifest.json, index.faiss, keyframes.sqlite), its
  crash-safe save, recovery after an interrupted save, and the checks made on load;
  ``integrity``: the manifest's schema, the checksums, the descriptor sanity check;
- ``audit``: the full check of a map (``map-info --verify``) and the safe repairs (``map-repair``).

This file only re-exports the public names; the modules above never import it.
"""

from ..errors import MapError
from ..geometry import Pose
from .audit import MapReport, repair_map, verify_map
from .database import MapDatabase
from .index import INDEX_TYPES, IVF_TYPES, MIN_TRAIN
from .keyframe import Keyframe
from .storage import DB_FILE, FORMAT, FORMAT_VERSION, INDEX_FILE, MANIFEST, NEW_SUFFIX, OLD_SUFFIX

__all__ = [
    "DB_FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "INDEX_FILE",
    "INDEX_TYPES",
    "IVF_TYPES",
    "MANIFEST",
    "MIN_TRAIN",
    "NEW_SUFFIX",
    "OLD_SUFFIX",
    "Keyframe",
    "MapDatabase",
    "MapError",
    "MapReport",
    "Pose",
    "repair_map",
    "verify_map",
]
