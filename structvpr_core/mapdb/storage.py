"""The on-disk map format: a directory written crash-safely, recovered after a crash, checked on load.

A map is a directory::

    MAPDIR/manifest.json      format + version, model fingerprint, dim, index type/params,
                              counts, creation time, sizes and sha256 of the other files, and
                              its own sha256 (``integrity``: checked on load with its schema)
    MAPDIR/index.faiss        the faiss index (position p holds keyframe id p + 1)
    MAPDIR/keyframes.sqlite   one row per keyframe: id, stamp, pose, gps, session, source,
                              compact local features (npz bytes) for geometric verification

Crash safety (write aside, rename, recover). ``save_map_dir`` never changes a map's files in
place: (1) it writes everything into ``PATH.structvpr-new`` and fsyncs it (manifest last, so a
directory with a manifest is complete); (2) renames an existing ``PATH`` to ``PATH.structvpr-old``;
(3) renames the new directory to ``PATH``; (4) removes the old one. A crash during (1) leaves
``PATH`` intact (the next save removes the half-written directory); a failure in (3) is undone by
renaming the old directory back; a crash between (2) and (3) leaves no ``PATH``, and ``recover``
(run by every load) renames the complete leftover back in place, preferring the new one. Whatever
the moment of the crash, a loadable map remains. Tested by making the renames fail (test_mapdb).
"""

from __future__ import annotations

import errno as _errno
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from ..atomic import fsync_dir, fsync_file
from ..errors import MapError
from ..fingerprint import refusal
from ..log import get_logger
from ..weights import weights_name
from .index import INDEX_TYPES
from .integrity import CHECKSUMS_KEY, check_seal, file_sha256, seal, validate_manifest

log = get_logger(__name__)

FORMAT = "structvpr-map"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
DB_FILE = "keyframes.sqlite"
DATA_FILES = (INDEX_FILE, DB_FILE)
NEW_SUFFIX = ".structvpr-new"  # sibling directories used by the atomic swap in save_map_dir()
OLD_SUFFIX = ".structvpr-old"


def build_manifest(
    *,
    fingerprint: dict,
    dim: int,
    index_type: str,
    trained: bool,
    params: dict,
    keyframes: int,
    with_local_features: int,
    sessions: list[str],
    meta: dict,
    created: str,
    saved: str,
) -> dict:
    """The manifest's JSON; ``save_map_dir`` adds the sizes of the files it wrote under ``files``."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "descriptor_dim": dim,
        "index": {"type": index_type, "trained": trained, "params": params},
        "counts": {"keyframes": keyframes, "with_local_features": with_local_features, "sessions": sessions},
        "meta": meta,
        "created": created,
        "saved": saved,
    }


def _sibling(target: Path, suffix: str) -> Path:
    return target.with_name(target.name + suffix)


def human_bytes(n: float) -> str:
    """``n`` bytes for a person: B, KB, MB or GB with one decimal."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GB"


def _reason(e: BaseException, path: Path | None = None) -> str:
    if isinstance(e, (FileExistsError, NotADirectoryError)) and path is not None:
        for ancestor in (path, *path.parents):  # a file where a directory should be
            if ancestor.exists():
                if not ancestor.is_dir():
                    return f"{ancestor} is a file, not a directory"
                break
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = str(e).strip().splitlines()
    return (text[-1] if text else type(e).__name__)[:160]


def _free_bytes(directory: Path) -> int | None:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def _write_failure(target: Path, e: BaseException, needed: int | None) -> MapError:
    """The one-line MapError for a save that failed while writing: no space (how much it needed,
    how much is free), a read-only or forbidden location, or the error itself."""
    free = _free_bytes(target.parent)
    errno_ = getattr(e, "errno", None)
    full = errno_ in (_errno.ENOSPC, _errno.EDQUOT, _errno.EFBIG) or "full" in str(e).lower()
    if full or (needed is not None and free is not None and free < needed):
        space = f"; it needs about {human_bytes(needed)}" if needed else ""
        left = f", {human_bytes(free)} free there" if free is not None else ""
        return MapError(f"{target}: no space left to save the map ({_reason(e)}){space}{left}; nothing was changed")
    if errno_ in (_errno.EROFS, _errno.EACCES, _errno.EPERM, _errno.EEXIST, _errno.ENOTDIR):
        return MapError(f"{target}: cannot save the map there ({_reason(e, target.parent)}); nothing was changed")
    return MapError(f"{target}: the map could not be saved ({type(e).__name__}: {_reason(e)}); nothing was changed")


def save_map_dir(
    target: Path, write_files: Callable[[Path], None], manifest: dict, needed_bytes: int | None = None
) -> None:
    """Make ``target`` (absolute) the map that ``write_files(dir)`` writes, by the protocol above.

    ``write_files`` writes ``INDEX_FILE`` and ``DB_FILE`` into the directory it is given.
    A failure is a MapError saying why (no space: ``needed_bytes``, the map's estimated size,
    against what is free) after the half-written directory is removed; ``target`` is unchanged.
    """
    new, old = _sibling(target, NEW_SUFFIX), _sibling(target, OLD_SUFFIX)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if new.exists():
            shutil.rmtree(new)  # a stale half-written directory from an earlier crash
        new.mkdir()
    except OSError as e:
        raise _write_failure(target, e, needed_bytes) from None
    try:
        write_files(new)
        manifest = dict(
            manifest,
            files={name: (new / name).stat().st_size for name in DATA_FILES},
            **{CHECKSUMS_KEY: {name: file_sha256(new / name) for name in DATA_FILES}},
        )
        for name in DATA_FILES:
            fsync_file(new / name)
        (new / MANIFEST).write_text(json.dumps(seal(manifest), indent=2) + "\n", encoding="utf-8")
        fsync_file(new / MANIFEST)
        fsync_dir(new)
    except BaseException as e:
        shutil.rmtree(new, ignore_errors=True)  # never leave a half-written map filling the disk
        if isinstance(e, Exception):
            raise _write_failure(target, e, needed_bytes) from e
        raise
    try:
        if target.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
        os.replace(new, target)
        fsync_dir(target.parent)
    except BaseException as e:
        if not target.exists() and old.exists():
            try:
                os.replace(old, target)  # undo step (2) when step (3) failed
            except OSError:
                pass  # both complete maps stay beside target: recover() puts one back on load
        if isinstance(e, OSError):
            raise MapError(f"{target}: could not move the saved map in place ({_reason(e)})") from e
        raise
    shutil.rmtree(old, ignore_errors=True)
    log.debug("saved map %s (%s keyframes)", target, manifest["counts"]["keyframes"])


def check_writable(target: Path, needed_bytes: int = 0) -> None:
    """MapError when a map cannot be saved at ``target``: a probe file is created (with some data)
    and removed where saving writes (beside ``target``); too little free space for ``needed_bytes``
    is refused too. Missing parent directories are created, as saving would."""
    parent = target.parent
    probe = parent / f".{target.name}.structvpr-probe-{os.getpid()}"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(bytes(65536))
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise MapError(
            f"{target}: the map cannot be saved there ({_reason(e, parent)}): choose a writable location"
        ) from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    free = _free_bytes(parent)
    if needed_bytes and free is not None and free < needed_bytes:
        raise MapError(
            f"{target}: {human_bytes(free)} free in {parent}, saving this map needs about {human_bytes(needed_bytes)}"
        )


def fallback_locations(target: Path, when: str) -> list[Path]:
    """Where a map that could not be saved at ``target`` goes instead, in order: beside it with the
    time ``when`` in its name, then under the cache root (``$STRUCTVPR_CACHE``)."""
    from ..paths import cache_root

    name = f"{target.name}.unsaved-{when}"
    return [target.with_name(name), cache_root() / "unsaved-maps" / name]


def _is_complete(d: Path) -> bool:
    try:
        read_manifest(d)
    except MapError:
        return False
    return all((d / n).is_file() for n in (INDEX_FILE, DB_FILE))


def recover(path: Path) -> Path:
    """``path``, or if it is missing after a crash inside a save, the complete leftover put back there."""
    if path.exists():
        return path
    for cand in (_sibling(path, NEW_SUFFIX), _sibling(path, OLD_SUFFIX)):
        if cand.is_dir() and _is_complete(cand):
            try:
                os.replace(cand, path)
                fsync_dir(path.parent)
                log.warning("recovered map %s from %s (an earlier save was interrupted)", path, cand.name)
                return path
            except OSError:
                return cand  # read-only location: load the leftover in place
    raise MapError(f"{path}: no such map directory")


def read_manifest(path: Path) -> dict:
    """The manifest of the map directory ``path``, checked for format, version and the keys load needs."""
    if not path.is_dir():
        raise MapError(f"{path}: not a directory (a map is a directory made by 'structvpr build-map')")
    mf = path / MANIFEST
    if not mf.is_file():
        raise MapError(f"{mf}: missing (not a structvpr map directory, or an incomplete one)")
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MapError(f"{mf}: unreadable or corrupted ({type(e).__name__})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise MapError(f"{mf}: not a structvpr map manifest (format {found!r})")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise MapError(f"{mf}: map format version {version!r}, this structvpr reads version {FORMAT_VERSION}")
    validate_manifest(manifest, mf, index_types=INDEX_TYPES, files=DATA_FILES)
    return manifest


def check_manifest_seal(path: Path, manifest: dict) -> bool:
    """True when the manifest carries checksums and is intact; False for a map saved before
    checksums existed (it loads, unverified); MapError when the manifest was edited."""
    return check_seal(manifest, path / MANIFEST)


def file_checksums(manifest: dict) -> dict[str, str | None]:
    """The sha256 the manifest records for each data file (None each for a map saved without)."""
    sums = manifest.get(CHECKSUMS_KEY) or {}
    return {name: sums.get(name) for name in DATA_FILES}


def check_files(path: Path, manifest: dict) -> None:
    """MapError naming the file when the index or keyframe file is missing or not the size saved."""
    sizes = manifest.get("files", {})
    for name in (INDEX_FILE, DB_FILE):
        f = path / name
        if not f.is_file():
            raise MapError(f"{f}: missing (the map is incomplete)")
        size = f.stat().st_size
        if name in sizes and size != sizes[name]:
            raise MapError(f"{f}: size {size} bytes, manifest says {sizes[name]} (truncated or replaced file)")


def check_fingerprint(
    expected: dict, found: dict, where: str, query_encoder_for: dict | None = None, map_name: str | None = None
) -> None:
    """MapError when the model ``expected`` may not query the map built by ``found`` (``fingerprint.accepts``).

    A plain model: expected vs found per key. A query encoder (``query_encoder_for``: its teacher):
    the map's model (``map_name``, e.g. its checkpoint) and the teacher, both named.
    """
    reason = refusal(
        found,
        expected,
        query_encoder_for,
        map_name=map_name or weights_name(found),
        teacher_name=weights_name(query_encoder_for),
    )
    if reason:
        raise MapError(f"{where}: {reason}")
