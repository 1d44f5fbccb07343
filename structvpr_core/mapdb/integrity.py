"""What makes a map trustworthy on load: the manifest's schema, checksums, sane descriptors.

A saved map carries in its manifest the sha256 of each file (``sha256``) and of the manifest
itself (``manifest_sha256``, over its canonical JSON without that key). On load:

- ``validate_manifest``: types and ranges of every field the code reads (fingerprint, dim, index
  type and parameters, counts, meta.checkpoint/features/max_features, sizes, checksums): a
  one-line ``MapError`` naming the file and the key, never a TypeError deep inside;
- ``check_seal``: the manifest's own checksum (an edited ``fingerprint.input_size`` would
  otherwise silently change the query model's input size); maps written before checksums have
  none and load with a warning;
- each data file is hashed in one streaming pass (``file_sha256``) and compared with the
  manifest before it is parsed: faiss would otherwise trust a damaged header's sizes (the second
  read, by faiss or SQLite, comes from the page cache: as fast as hashing while reading);
- ``check_descriptors``: every stored descriptor finite and of unit norm (within
  ``NORM_TOLERANCE``), on load and on add: garbage or zeroed vectors would otherwise score 1e37
  or 0.0 and pass a ``score > 0.8`` loop-closure rule.

Cost, measured on a synthetic 10 000-keyframe map with 1000 SIFT features a keyframe (index
18 MB, keyframes.sqlite 1.39 GB), one shared CPU core (load average ~4.7, so upper bounds): load
1.8 s with checksums (sha256 ~0.8 GB/s here) against 0.4 s for the same map without them; a map
without stored features is ~30 MB and its hashing costs a few tens of milliseconds.

Nothing here knows the map's classes: storage and the index call these helpers.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

from ..errors import MapError

CHUNK = 1 << 20
NORM_TOLERANCE = 1e-3  # |‖d‖ - 1| allowed for a stored descriptor (float32 rounding is ~1e-7)
SEAL_KEY = "manifest_sha256"
CHECKSUMS_KEY = "sha256"
_HEX64 = re.compile(r"[0-9a-f]{64}")
FEATURE_KINDS = ("sift", "orb", "none")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def manifest_digest(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON (sorted keys, compact) without its own seal."""
    body = {k: v for k, v in manifest.items() if k != SEAL_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def seal(manifest: dict) -> dict:
    """``manifest`` with its ``manifest_sha256``."""
    return {**manifest, SEAL_KEY: manifest_digest(manifest)}


def check_seal(manifest: dict, where: Path) -> bool:
    """True when the manifest is sealed and intact, False for a map saved before checksums;
    MapError naming ``where`` when it was edited after it was saved."""
    stored = manifest.get(SEAL_KEY)
    if stored is None:
        return False
    if stored != manifest_digest(manifest):
        raise MapError(
            f"{where}: edited or damaged since the map was saved (its {SEAL_KEY} does not match its "
            "content); if the edit was intended, check and re-seal it with structvpr map-repair"
        )
    return True


def check_file_digest(path: Path, digest: str, expected: str | None) -> None:
    if expected is not None and digest != expected:
        raise MapError(
            f"{path}: checksum mismatch (sha256 {digest[:12]}…, the manifest says {expected[:12]}…): "
            "the file is damaged or was replaced; restore the map from a copy or rebuild it"
        )


# -- the manifest's schema -------------------------------------------------------------------------


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate_manifest(m: dict, where: Path, *, index_types, files: tuple[str, ...], max_side: int = 8192) -> None:
    """MapError naming ``where`` and the key for the first field of a wrong type or out of range.

    ``index_types``: the index types this structvpr reads; ``files``: the map's data files.
    Unknown keys are allowed (a newer writer may add some); known ones must be right.
    """

    def bad(key: str, rule: str, value) -> MapError:
        shown = json.dumps(value) if isinstance(value, (dict, list, str, int, float, bool, type(None))) else value
        if isinstance(shown, str) and len(shown) > 80:
            shown = shown[:77] + "..."
        return MapError(f"{where}: {key} must be {rule}, got {shown}")

    def need(ok: bool, key: str, rule: str, value) -> None:
        if not ok:
            raise bad(key, rule, value)

    fp = m.get("fingerprint")
    need(isinstance(fp, dict), "fingerprint", "an object", fp)
    need(
        isinstance(fp.get("architecture"), str) and fp["architecture"] != "",
        "fingerprint.architecture",
        "a non-empty string",
        fp.get("architecture"),
    )
    need(
        isinstance(fp.get("weights_sha256"), str) and fp["weights_sha256"] != "",
        "fingerprint.weights_sha256",
        "a non-empty string",
        fp.get("weights_sha256"),
    )
    size = fp.get("input_size")
    need(
        isinstance(size, list) and len(size) == 2 and all(_is_int(v) and 1 <= v <= max_side for v in size),
        "fingerprint.input_size",
        f"[W, H] with W and H in 1..{max_side}",
        size,
    )
    dim = m.get("descriptor_dim")
    need(_is_int(dim) and 1 <= dim <= 65536, "descriptor_dim", "an integer in 1..65536", dim)
    need(
        fp.get("descriptor_dim") == dim,
        "fingerprint.descriptor_dim",
        f"the descriptor_dim {dim}",
        fp.get("descriptor_dim"),
    )

    idx = m.get("index")
    need(isinstance(idx, dict), "index", "an object", idx)
    need(idx.get("type") in index_types, "index.type", f"one of {', '.join(index_types)}", idx.get("type"))
    need(isinstance(idx.get("trained", True), bool), "index.trained", "true or false", idx.get("trained"))
    params = idx.get("params", {})
    need(isinstance(params, dict), "index.params", "an object", params)
    for key, value in params.items():
        low = 0 if key == "auto_train_at" else 1
        need(
            value is None or (_is_int(value) and value >= low),
            f"index.params.{key}",
            f"null or an integer >= {low}",
            value,
        )

    counts = m.get("counts")
    need(isinstance(counts, dict), "counts", "an object", counts)
    n = counts.get("keyframes")
    need(_is_int(n) and n >= 0, "counts.keyframes", "an integer >= 0", n)
    feats = counts.get("with_local_features", 0)
    need(_is_int(feats) and 0 <= feats <= n, "counts.with_local_features", f"an integer in 0..{n}", feats)
    sessions = counts.get("sessions", [])
    need(
        isinstance(sessions, list) and all(isinstance(s, str) for s in sessions),
        "counts.sessions",
        "a list of strings",
        sessions,
    )

    meta = m.get("meta", {})
    need(meta is None or isinstance(meta, dict), "meta", "an object", meta)
    meta = meta or {}
    ckpt = meta.get("checkpoint")
    need(ckpt is None or (isinstance(ckpt, str) and ckpt != ""), "meta.checkpoint", "a file path or null", ckpt)
    kind = meta.get("features", "none")
    need(kind in FEATURE_KINDS, "meta.features", f"one of {', '.join(FEATURE_KINDS)}", kind)
    mx = meta.get("max_features", 1)
    need(_is_int(mx) and mx >= 1, "meta.max_features", "an integer >= 1", mx)

    for key in ("created", "saved"):
        need(isinstance(m.get(key, ""), str), key, "a time string", m.get(key))
    sizes = m.get("files", {})
    need(isinstance(sizes, dict), "files", "an object of file sizes", sizes)
    for name, value in sizes.items():
        need(_is_int(value) and value >= 0, f"files.{name}", "a size in bytes", value)
    sums = m.get(CHECKSUMS_KEY)
    if sums is not None:
        need(
            isinstance(sums, dict) and set(sums) == set(files),
            CHECKSUMS_KEY,
            f"an object with {', '.join(files)}",
            sums,
        )
        for name, value in sums.items():
            need(
                isinstance(value, str) and _HEX64.fullmatch(value) is not None,
                f"{CHECKSUMS_KEY}.{name}",
                "a sha256 (64 hex digits)",
                value,
            )
    digest = m.get(SEAL_KEY)
    need(
        digest is None or (isinstance(digest, str) and _HEX64.fullmatch(digest) is not None),
        SEAL_KEY,
        "a sha256 (64 hex digits)",
        digest,
    )
    need(
        (sums is None) == (digest is None),
        CHECKSUMS_KEY if sums is None else SEAL_KEY,
        "present together with " + (SEAL_KEY if sums is None else CHECKSUMS_KEY),
        sums if sums is None else digest,
    )


# -- descriptors -----------------------------------------------------------------------------------


def bad_descriptors(x: np.ndarray, tol: float = NORM_TOLERANCE) -> np.ndarray:
    """Row indices of ``x`` (n, d) that are not finite or not of unit norm within ``tol``."""
    with np.errstate(over="ignore", invalid="ignore"):
        sq = np.einsum("ij,ij->i", x, x, dtype=np.float64)
        ok = np.isfinite(sq) & (np.abs(np.sqrt(sq) - 1.0) <= tol)
    return np.flatnonzero(~ok)


def describe_bad(x: np.ndarray, rows: np.ndarray, ids: np.ndarray | None = None) -> str:
    """``keyframes 3, 4, 9 (and 12 more): norm 0, nan, 1e+37, not 1`` for the bad ``rows`` of ``x``."""
    shown = rows[:3]
    names = [int(ids[r]) if ids is not None else int(r) + 1 for r in shown]
    with np.errstate(over="ignore", invalid="ignore"):
        norms = [float(np.sqrt(np.dot(x[r].astype(np.float64), x[r].astype(np.float64)))) for r in shown]
    more = f" (and {len(rows) - len(shown)} more)" if len(rows) > len(shown) else ""
    return (
        f"keyframe{'s' if len(rows) > 1 else ''} {', '.join(map(str, names))}{more}: norm "
        f"{', '.join(f'{v:.3g}' for v in norms)}, not 1"
    )


def check_descriptors(x: np.ndarray, where: str, ids: np.ndarray | None = None) -> None:
    """MapError naming ``where`` and the first bad keyframes when a descriptor is not finite and unit-norm."""
    rows = bad_descriptors(x)
    if rows.size:
        raise MapError(f"{where}: descriptors that are not unit vectors ({describe_bad(x, rows, ids)})")
