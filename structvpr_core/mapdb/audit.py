"""A full check of a map directory (``structvpr map-info --verify``) and what can be repaired.

``MapDatabase.load`` stops at the first problem and reads only what a search needs (the keyframe
rows are read when a candidate names them). ``verify_map`` goes on after a problem where it can
and reads everything: the manifest (schema, its own checksum), each file's size and sha256, the
index (type, dim, count, every descriptor finite and unit-norm, ids), the keyframe database
(SQLite's own integrity check, every row decoded, every stored local-feature set decoded).

``repair_map`` (``structvpr map-repair``) does what is safe: it seals an older map (adds the
checksums it was saved without) or, when asked, re-seals a manifest edited by hand, both only
when every other check passes. It does not rebuild a damaged file: the descriptors live only in
index.faiss (keyframes.sqlite holds metadata and local features, no descriptors) and the keyframe
metadata only in keyframes.sqlite, so neither can be recovered from the other; the way back is
a copy of the map or ``structvpr build-map --overwrite`` from the images.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import atomic_write_text
from ..errors import MapError
from .index import DescriptorIndex
from .integrity import CHECKSUMS_KEY, SEAL_KEY, check_file_digest, file_sha256, seal
from .storage import DATA_FILES, DB_FILE, INDEX_FILE, MANIFEST, check_manifest_seal, file_checksums, read_manifest
from .store import COLUMNS, open_readonly, row_to_keyframe

_SHOWN = 5  # damaged rows named in a report before "and N more"


@dataclass
class MapReport:
    path: Path
    checked: list[str] = field(default_factory=list)  # what passed, one line each
    problems: list[str] = field(default_factory=list)  # what failed, one line each, naming the file
    sealed: bool = False  # the manifest carries checksums (a map saved before them does not)
    manifest_only: bool = False  # the only problem is a manifest edited after it was saved

    @property
    def ok(self) -> bool:
        return not self.problems


def _rows_named(ids: list[int]) -> str:
    more = f" and {len(ids) - _SHOWN} more" if len(ids) > _SHOWN else ""
    return ", ".join(map(str, ids[:_SHOWN])) + more


def _check_keyframes(f: Path, count: int, report: MapReport) -> None:
    from ..verify import LocalFeatures  # lazy: OpenCV

    try:
        conn = open_readonly(f)
    except MapError as e:
        report.problems.append(str(e))
        return
    try:
        quick = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
        if quick != ["ok"]:
            report.problems.append(f"{f}: SQLite integrity check failed ({'; '.join(quick[:3])[:200]})")
        bad_rows, bad_features, n, with_features, last_id = [], [], 0, 0, 0
        for (kid,) in conn.execute("SELECT id FROM keyframes ORDER BY id"):
            n += 1
            if kid != last_id + 1:
                report.problems.append(f"{f}: keyframe ids are not 1..{count} (id {kid} after {last_id})")
                break
            last_id = kid
            try:
                row_to_keyframe(conn.execute(f"SELECT {COLUMNS} FROM keyframes WHERE id = ?", (kid,)).fetchone())
            except Exception:  # sqlite3.Error (undecodable text), TypeError/ValueError (a wrong type)
                bad_rows.append(kid)
                continue
            try:
                (blob,) = conn.execute("SELECT features FROM keyframes WHERE id = ?", (kid,)).fetchone()
                if blob is not None:
                    with_features += 1
                    LocalFeatures.from_bytes(bytes(blob))
            except Exception:
                bad_features.append(kid)
        if n != count:
            report.problems.append(f"{f}: holds {n} keyframes, the manifest says {count}")
        if bad_rows:
            report.problems.append(f"{f}: {len(bad_rows)} unreadable keyframe row(s): ids {_rows_named(bad_rows)}")
        if bad_features:
            report.problems.append(
                f"{f}: {len(bad_features)} corrupted local-feature set(s): ids {_rows_named(bad_features)}"
            )
        if not bad_rows and not bad_features and n == count:
            report.checked.append(f"{f}: {n} keyframe rows and {with_features} local-feature sets decode")
    except sqlite3.Error as e:
        report.problems.append(f"{f}: unreadable keyframe database ({e})")
    finally:
        conn.close()


def verify_map(path: str | os.PathLike) -> MapReport:
    """Check everything in the map directory ``path`` (it is not changed); see the module docstring."""
    path = Path(path).absolute()
    report = MapReport(path)
    try:
        manifest = read_manifest(path)
        report.checked.append(f"{path / MANIFEST}: format, version and schema")
    except MapError as e:
        report.problems.append(str(e))
        return report  # without a valid manifest nothing else can be checked against anything
    try:
        report.sealed = check_manifest_seal(path, manifest)
        report.checked.append(
            f"{path / MANIFEST}: "
            + ("its checksum matches" if report.sealed else "saved without checksums (an older map)")
        )
    except MapError as e:
        report.problems.append(str(e))
        report.sealed = True
    sums = file_checksums(manifest)
    sizes = manifest.get("files", {})
    intact = {}
    for name in DATA_FILES:
        f = path / name
        if not f.is_file():
            report.problems.append(f"{f}: missing (the map is incomplete)")
            intact[name] = False
            continue
        size = f.stat().st_size
        if name in sizes and size != sizes[name]:
            report.problems.append(f"{f}: size {size} bytes, manifest says {sizes[name]} (truncated or replaced)")
            intact[name] = False
            continue
        try:
            if sums[name] is not None:
                check_file_digest(f, file_sha256(f), sums[name])
                report.checked.append(f"{f}: sha256 matches")
            intact[name] = True
        except MapError as e:
            report.problems.append(str(e))
            intact[name] = False

    count = manifest["counts"]["keyframes"]
    if intact[INDEX_FILE]:  # a file known to be damaged is not parsed
        idx = manifest["index"]
        try:
            index = DescriptorIndex(idx["type"], manifest["descriptor_dim"], idx.get("params"), use_gpu=False)
            index.read(path / INDEX_FILE, trained=bool(idx.get("trained", True)))
            if index.ntotal != count:
                raise MapError(f"{path / INDEX_FILE}: holds {index.ntotal} descriptors, manifest says {count}")
            index.check_integrity(str(path / INDEX_FILE))
            report.checked.append(f"{path / INDEX_FILE}: {idx['type']} index of {count} finite unit descriptors")
        except MapError as e:
            report.problems.append(str(e))
    if intact[DB_FILE]:
        _check_keyframes(path / DB_FILE, count, report)
    edited = [p for p in report.problems if p.startswith(f"{path / MANIFEST}: edited")]
    report.manifest_only = bool(edited) and len(edited) == len(report.problems)
    return report


def repair_map(path: str | os.PathLike, *, accept_edited_manifest: bool = False) -> str:
    """Seal an older map, or re-seal a hand-edited manifest (``accept_edited_manifest``), when every
    other check passes; returns what was done. MapError saying why not otherwise."""
    report = verify_map(path)
    mf = report.path / MANIFEST
    if report.ok and report.sealed:
        return f"{report.path}: nothing to repair (every check passes)"
    if report.manifest_only and not accept_edited_manifest:
        raise MapError(
            f"{mf}: edited since the map was saved, the files match their checksums: if the edit was "
            "intended (the manifest passes its schema), re-seal it with --accept-edited-manifest"
        )
    if not (report.ok or report.manifest_only):
        damaged = {n for n in DATA_FILES for p in report.problems if p.startswith(str(report.path / n))}
        why = []
        if INDEX_FILE in damaged:
            why.append(
                f"{INDEX_FILE} is damaged and the descriptors are stored nowhere else "
                f"({DB_FILE} holds keyframe metadata and local features only)"
            )
        if DB_FILE in damaged:
            why.append(f"{DB_FILE} is damaged and the keyframe metadata is stored nowhere else")
        if not why:
            why.append("; ".join(report.problems))
        raise MapError(
            f"{report.path}: cannot be repaired: {'; '.join(why)}; restore a copy or rebuild it with "
            "structvpr build-map --overwrite"
        )
    manifest = json.loads(mf.read_text(encoding="utf-8"))
    manifest.pop(SEAL_KEY, None)
    manifest["files"] = {name: (report.path / name).stat().st_size for name in DATA_FILES}
    manifest[CHECKSUMS_KEY] = {name: file_sha256(report.path / name) for name in DATA_FILES}
    atomic_write_text(mf, json.dumps(seal(manifest), indent=2) + "\n")
    if report.manifest_only:
        return f"{mf}: re-sealed as edited (every other check passes)"
    return f"{report.path}: checksums added (every check passes)"
