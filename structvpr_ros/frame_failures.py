"""What the node does with a frame it could not process: count it, log it (rate-limited), report it.

Any exception while a frame is converted, embedded, searched or verified (an ``ImageError`` from a
malformed or oversized image, a ``cv2.error``, an ``sqlite3`` error from a damaged map row, a bug)
costs that frame only: the worker records it here and takes the next one. ROS-free, so the policy
is tested without DDS; the node turns ``status`` into its /diagnostics level.

Policy:
- every failure is counted by the caller (frames_malformed / frames_failed) and recorded here with
  its *cause*: the one-line message of a user-facing error, else ``Type: first line``; failures
  are of one kind when the same exception type was raised by the same line of code;
- logging is rate-limited over all causes (``LogLimiter``: ``burst`` lines, then one per
  ``period_s`` with the number suppressed); the first failure of each kind of unexpected error
  (not a ``StructVPRError``) is logged with its traceback, since it is a bug to report;
- ``status()``: ERROR when one cause failed ``repeat`` or more frames within the last ``window_s``
  (a camera sending only undecodable frames, a damaged map row hit by every query: loop closure
  has stopped although the process runs), WARN when any frame failed within the window, else OK.
  The status clears by itself once the window holds no failure, or at once with ``reset``.
"""

from __future__ import annotations

import re
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass

from structvpr_core.errors import StructVPRError

OK, WARN, ERROR = "ok", "warn", "error"


class LogLimiter:
    """Lets ``burst`` messages through, then one per ``period_s`` (with a suppressed count)."""

    def __init__(self, burst: int = 10, period_s: float = 5.0, clock=time.monotonic) -> None:
        self.burst, self.period_s, self._clock = burst, period_s, clock
        self._sent, self._last, self._suppressed = 0, -float("inf"), 0

    def allow(self) -> tuple[bool, int]:
        """(may log now, how many messages were suppressed since the last one let through)."""
        now = self._clock()
        if self._sent < self.burst or now - self._last >= self.period_s:
            self._sent, self._last = self._sent + 1, now
            suppressed, self._suppressed = self._suppressed, 0
            return True, suppressed
        self._suppressed += 1
        return False, 0


def describe(exc: BaseException) -> str:
    """One line naming what went wrong: a user error's message, else ``Type: first line``."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, StructVPRError):
        line = first or type(exc).__name__
    else:
        line = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def _kind(exc: BaseException, malformed: bool) -> str:
    """The grouping key of a cause: the exception's type and the line that raised it (so that a
    damaged row's text or a frame's size in the message does not split one cause in many); the
    message with numbers blanked for an exception that was never raised."""
    prefix = f"{'malformed' if malformed else 'failed'}:{type(exc).__name__}"
    tb = exc.__traceback__
    if tb is None:
        return f"{prefix}:{re.sub(r'[0-9]+', '#', str(exc))[:120]}"
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{prefix}@{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"


@dataclass(frozen=True)
class Failure:
    when: float  # clock time
    kind: str
    cause: str
    malformed: bool


class FrameFailures:
    """Records per-frame failures; thread-safe (the worker records, the timer reads the status)."""

    def __init__(
        self,
        window_s: float = 30.0,
        repeat: int = 3,
        log_burst: int = 10,
        log_period_s: float = 5.0,
        clock=time.monotonic,
    ) -> None:
        self.window_s, self.repeat, self._clock = window_s, repeat, clock
        self._lock = threading.Lock()
        self._recent: deque[Failure] = deque(maxlen=10_000)  # bounded whatever the failure rate
        self._limiter = LogLimiter(log_burst, log_period_s, clock)
        self._traced: set[str] = set()  # kinds of unexpected errors already logged with a traceback
        self.last: Failure | None = None

    def record(self, exc: BaseException, malformed: bool = False) -> str | None:
        """Record a failed frame; returns the text to log now, or None when rate-limited."""
        kind = _kind(exc, malformed)
        failure = Failure(self._clock(), kind, describe(exc), malformed)
        with self._lock:
            self._recent.append(failure)
            self.last = failure
            ok, suppressed = self._limiter.allow()
            trace = ok and not isinstance(exc, StructVPRError) and kind not in self._traced and len(self._traced) < 100
            if trace:
                self._traced.add(kind)
        if not ok:
            return None
        text = failure.cause
        if suppressed:
            text += f" ({suppressed} more frame failures not logged)"
        if trace:
            text += "\n" + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-6)).rstrip()
        return text

    def _in_window(self) -> list[Failure]:
        horizon = self._clock() - self.window_s
        while self._recent and self._recent[0].when < horizon:
            self._recent.popleft()
        return list(self._recent)

    def status(self) -> tuple[str, str]:
        """(OK | WARN | ERROR, message naming the cause): see the module docstring."""
        with self._lock:
            recent = self._in_window()
        if not recent:
            return OK, ""
        counts: dict[str, int] = {}
        for f in recent:
            counts[f.kind] = counts.get(f.kind, 0) + 1
        worst = max(counts, key=counts.get)
        cause = next(f.cause for f in reversed(recent) if f.kind == worst)
        what = "malformed frames" if worst.startswith("malformed:") else "frames failing"
        n, window = counts[worst], f"{self.window_s:g} s"
        if n >= self.repeat:
            return ERROR, f"{what}: {n} in the last {window} ({len(recent)} failures in all): {cause}"
        return WARN, f"{len(recent)} frame(s) not processed in the last {window}: {cause}"

    def recent_count(self) -> int:
        with self._lock:
            return len(self._in_window())

    def reset(self) -> None:
        """Forget the recent failures (``~/reset``): the status is OK until the next one."""
        with self._lock:
            self._recent.clear()
            self.last = None
