"""Per-keyframe stamps and sessions as numpy arrays, so temporal exclusion needs no SQL query.

Position p holds keyframe id p + 1, like the faiss index. The detector asks, for every query in
online mapping, for the ids of its own session newer than a time: a vectorised comparison over
these arrays instead of a query against the keyframe store.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class GrowArray:
    """Append-only numpy array with amortised growth."""

    def __init__(self, dtype):
        self._a = np.zeros(64, dtype=dtype)
        self.n = 0

    def extend(self, values) -> None:
        values = np.asarray(values, dtype=self._a.dtype)
        need = self.n + len(values)
        if need > len(self._a):
            grown = np.zeros(max(need, 2 * len(self._a)), dtype=self._a.dtype)
            grown[: self.n] = self._a[: self.n]
            self._a = grown
        self._a[self.n : need] = values
        self.n = need

    @property
    def values(self) -> np.ndarray:
        return self._a[: self.n]


class SessionStamps:
    """The stamp (NaN = none) and session of every keyframe, in id order. Not locked: the map locks."""

    def __init__(self):
        self._stamps = GrowArray(np.float64)
        self._sessions = GrowArray(np.int32)  # small codes, see _codes
        self._codes: dict[str, int] = {}

    def extend(self, stamps: Iterable[float | None], sessions: Iterable[str]) -> None:
        """Append the stamps and sessions of the next keyframes (two sequences of equal length)."""
        self._stamps.extend([np.nan if st is None else st for st in stamps])
        self._sessions.extend([self._codes.setdefault(se, len(self._codes)) for se in sessions])

    @property
    def sessions(self) -> list[str]:
        """The session names seen so far, sorted."""
        return sorted(self._codes)

    def recent_ids(self, session: str, newer_than: float) -> np.ndarray:
        """Ids of keyframes of ``session`` with stamp > ``newer_than``."""
        code = self._codes.get(session)
        if code is None:
            return np.zeros(0, dtype=np.int64)
        mask = (self._sessions.values == code) & (self._stamps.values > newer_than)  # NaN compares False
        return np.flatnonzero(mask).astype(np.int64) + 1
