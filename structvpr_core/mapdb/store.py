"""The keyframe store: one SQLite row per keyframe (stamp, pose, GPS, session, source, local features).

Keyframes loaded from a saved map stay in its file, opened read-only (``immutable=1``: no locks,
no journal, since saves never change a map's files in place but swap directories). Keyframes
added since go to a private temporary SQLite database until the next save writes both into one
new file. Ids start at 1 and are consecutive, so the loaded file holds ids ``1..base_count``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

from ..errors import MapError
from ..geometry import Pose
from .keyframe import Keyframe

SCHEMA = """
CREATE TABLE IF NOT EXISTS keyframes (
    id INTEGER PRIMARY KEY,
    stamp REAL,
    px REAL, py REAL, pz REAL, qx REAL, qy REAL, qz REAL, qw REAL,
    lat REAL, lon REAL,
    session TEXT NOT NULL,
    source TEXT NOT NULL,
    features BLOB
);
"""
COLUMNS = "id, stamp, px, py, pz, qx, qy, qz, qw, lat, lon, session, source"
_INSERT = f"INSERT INTO keyframes ({COLUMNS}, features) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"


def row_to_keyframe(row) -> Keyframe:
    kid, stamp, px, py, pz, qx, qy, qz, qw, lat, lon, session, source = row
    pose = None if px is None else Pose((px, py, pz), (qx, qy, qz, qw))
    gps = None if lat is None else (lat, lon)
    return Keyframe(int(kid), stamp, pose, gps, session, source)


def _row(kid: int, k: Keyframe, feat: Any) -> tuple:
    p = k.pose
    if feat is not None and not isinstance(feat, (bytes, bytearray, memoryview)):
        feat = feat.to_bytes()
    return (
        kid,
        k.stamp,
        *(p.position if p else (None,) * 3),
        *(p.orientation if p else (None,) * 4),
        *(k.gps if k.gps else (None, None)),
        k.session,
        k.source,
        None if feat is None else sqlite3.Binary(feat),
    )


def open_readonly(f: Path) -> sqlite3.Connection:
    """``f`` opened read-only after checking it has the keyframes table (MapError naming ``f`` if not)."""
    uri = f"file:{f.as_posix()}?mode=ro&immutable=1"
    try:
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        cols = [r[1] for r in conn.execute("PRAGMA table_info(keyframes)")]
    except sqlite3.DatabaseError as e:
        raise MapError(f"{f}: not a keyframe database ({e})") from None
    expected = [c.strip() for c in COLUMNS.split(",")] + ["features"]
    if cols != expected:
        conn.close()
        raise MapError(f"{f}: no keyframes table with the expected columns (foreign SQLite file?)")
    return conn


class KeyframeStore:
    """Keyframes by id: a saved file (read-only) plus those added since. Not locked: the map locks."""

    def __init__(self):
        self._base: sqlite3.Connection | None = None
        self._base_file: Path | None = None
        self._base_count = 0
        self._new = sqlite3.connect("", check_same_thread=False)  # "": private temporary file
        self._new.executescript(SCHEMA)
        self.count = 0
        self.num_with_features = 0

    def _where(self, kid: int) -> str:
        """Where keyframe ``kid`` lives, for messages: the saved file, or ``map`` (not saved yet)."""
        return str(self._base_file) if self._base_file and kid <= self._base_count else "map"

    # -- writing -------------------------------------------------------------------------------

    def insert(self, keyframes: Sequence[Keyframe], local_features: Sequence[Any] | None = None) -> list[int]:
        """Store ``keyframes`` under the next ids and return them.

        ``local_features``: per keyframe a ``verify.LocalFeatures``, raw bytes, or None.
        """
        first = self.count + 1
        ids = list(range(first, first + len(keyframes)))
        rows = [
            _row(kid, k, None if local_features is None else local_features[i])
            for i, (kid, k) in enumerate(zip(ids, keyframes, strict=True))
        ]
        with self._new:
            self._new.executemany(_INSERT, rows)
        self.count += len(rows)
        self.num_with_features += sum(r[-1] is not None for r in rows)
        return ids

    def write(self, dest: Path) -> None:
        """Write every keyframe into a new SQLite file ``dest`` (journal mode DELETE: one file)."""
        out = sqlite3.connect(str(dest))
        try:
            if self._base is not None:
                self._base.backup(out)  # page copy of the loaded keyframes
            else:
                out.executescript(SCHEMA)
            rows = self._new.execute(f"SELECT {COLUMNS}, features FROM keyframes ORDER BY id")
            with out:
                out.executemany(_INSERT, rows)
            out.execute("PRAGMA journal_mode=DELETE")
        finally:
            out.close()

    def estimated_bytes(self) -> int:
        """About the size of the file ``write`` makes: the loaded file plus the keyframes added since."""
        base = self._base_file.stat().st_size if self._base_file is not None and self._base_file.exists() else 0
        pages, page_size = (self._new.execute(f"PRAGMA {k}").fetchone()[0] for k in ("page_count", "page_size"))
        return base + pages * page_size

    def rebase(self, f: Path) -> None:
        """After a save: read every keyframe from the saved file ``f`` and empty the in-memory part."""
        if self._base is not None:
            self._base.close()
        self._base = open_readonly(f)
        self._base_file = f
        self._base_count = self.count
        self._new.execute("DELETE FROM keyframes")
        self._new.commit()

    # -- loading -------------------------------------------------------------------------------

    def attach(self, f: Path, count: int) -> list[tuple[float | None, str]]:
        """Use the saved file ``f`` as the loaded keyframes, checking it holds exactly ids 1..``count``.

        Returns each keyframe's ``(stamp, session)`` in id order. MapError naming ``f`` otherwise.
        """
        self._base = open_readonly(f)
        try:
            n_rows, max_id, n_feat = self._base.execute(
                "SELECT COUNT(*), COALESCE(MAX(id), 0), COUNT(features) FROM keyframes"
            ).fetchone()
            if n_rows != count or max_id != count:
                raise MapError(f"{f}: holds {n_rows} keyframes (max id {max_id}), manifest says {count}")
            stamps = self._base.execute("SELECT stamp, session FROM keyframes ORDER BY id").fetchall()
        except (sqlite3.DatabaseError, MapError) as e:
            self._base.close()
            self._base = None
            if isinstance(e, MapError):
                raise
            raise MapError(f"{f}: unreadable keyframe database ({e})") from None
        self._base_file = f
        self.count = self._base_count = count
        self.num_with_features = n_feat
        return stamps

    # -- reading -------------------------------------------------------------------------------

    def _conn_for(self, kid: int) -> sqlite3.Connection:
        if not 1 <= kid <= self.count:
            raise KeyError(f"no keyframe with id {kid} (map has ids 1..{self.count})")
        return self._base if kid <= self._base_count else self._new

    def _fetch(self, kid: int, columns: str):
        """The row of keyframe ``kid``; MapError naming the file and the keyframe when SQLite cannot
        read it (a damaged row or page: invalid text, a malformed database image)."""
        conn = self._conn_for(kid)
        try:
            return conn.execute(f"SELECT {columns} FROM keyframes WHERE id = ?", (kid,)).fetchone()
        except sqlite3.Error as e:
            reason = str(e).splitlines()[0][:100] if str(e) else type(e).__name__
            raise MapError(
                f"{self._where(kid)}: keyframe {kid} is unreadable ({type(e).__name__}: {reason}); "
                "check the map with structvpr map-info --verify"
            ) from None

    def keyframe(self, kid: int) -> Keyframe:
        row = self._fetch(kid, COLUMNS)
        if row is None:
            raise MapError(f"{self._where(kid)}: keyframe {kid} missing")
        try:
            return row_to_keyframe(row)
        except (TypeError, ValueError) as e:  # e.g. a pose column holding text
            raise MapError(f"{self._where(kid)}: keyframe {kid} holds invalid values ({e})") from None

    def local_features(self, kid: int):
        """The stored ``verify.LocalFeatures`` of keyframe ``kid``, or None if none were stored."""
        from ..verify import LocalFeatures  # lazy: verify imports OpenCV

        row = self._fetch(kid, "features")
        if row is None or row[0] is None:
            return None
        try:
            return LocalFeatures.from_bytes(bytes(row[0]))
        except Exception as e:  # ValueError, KeyError, zipfile.BadZipFile, EOFError ...: whatever a bad blob raises
            raise MapError(f"{self._where(kid)}: local features of keyframe {kid} are corrupted ({e})") from None

    def keyframes(self) -> Iterator[Keyframe]:
        """Every keyframe in id order; the rows are read now, the Keyframes made as iterated."""
        parts = [
            conn.execute(f"SELECT {COLUMNS} FROM keyframes ORDER BY id").fetchall()
            for conn in (self._base, self._new)
            if conn is not None
        ]
        return (row_to_keyframe(row) for row in chain.from_iterable(parts))

    def close(self) -> None:
        if self._base is not None:
            self._base.close()
            self._base = None
        self._new.close()
