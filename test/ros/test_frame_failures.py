"""The node's per-frame failure policy (structvpr_ros/frame_failures.py), without ROS."""

from __future__ import annotations

import sqlite3

from structvpr_core.errors import ImageError, MapError
from structvpr_ros.frame_failures import ERROR, OK, WARN, FrameFailures, LogLimiter, describe


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _raised(exc: Exception) -> Exception:
    try:
        raise exc
    except Exception as e:
        return e


def test_a_cause_that_repeats_is_an_error_naming_it_and_clears_with_time_or_reset():
    clock = Clock()
    f = FrameFailures(window_s=30.0, repeat=3, clock=clock)
    assert f.status() == (OK, "")
    f.record(ImageError("compressed image: header claims 40000×30000 pixels"), malformed=True)
    level, message = f.status()
    assert level == WARN and "40000×30000" in message
    for stamp in (17, 18):  # numbers differ, the cause is the same kind
        clock.t += 1
        f.record(MapError(f"map.sqlite: keyframe {stamp} is damaged"))
    assert f.status()[0] == WARN  # two kinds, neither three times
    clock.t += 1
    f.record(_raised(sqlite3.OperationalError("Could not decode to UTF-8 column 'source' with text 'x'")))
    f.record(_raised(sqlite3.OperationalError("Could not decode to UTF-8 column 'source' with text 'y'")))
    f.record(_raised(sqlite3.OperationalError("Could not decode to UTF-8 column 'source' with text 'z'")))
    level, message = f.status()
    assert level == ERROR
    assert message.startswith("frames failing: 3 in the last 30 s (6 failures in all): OperationalError: Could not")
    assert f.last.cause.startswith("OperationalError: Could not decode")
    clock.t += 31  # nothing failed for a whole window
    assert f.status() == (OK, "")
    for _ in range(3):
        f.record(ImageError("compressed image: not a readable image"), malformed=True)
    assert f.status()[0] == ERROR and f.status()[1].startswith("malformed frames: 3")
    f.reset()
    assert f.status() == (OK, "") and f.last is None and f.recent_count() == 0


def test_logging_is_rate_limited_and_a_bug_shows_its_traceback_once():
    clock = Clock()
    f = FrameFailures(log_burst=2, log_period_s=5.0, clock=clock)
    first = f.record(_raised(ValueError("cannot reshape array of size 7 into shape (3,3)")))
    assert first.startswith("ValueError: cannot reshape") and "Traceback" in first
    second = f.record(_raised(ValueError("cannot reshape array of size 8 into shape (3,3)")))
    assert second is not None and "Traceback" not in second  # same kind: traced once
    assert f.record(MapError("x")) is None and f.record(MapError("y")) is None  # beyond the burst
    clock.t += 5
    third = f.record(MapError("map: keyframe 3 missing"))
    assert third == "map: keyframe 3 missing (2 more frame failures not logged)"
    assert f.recent_count() == 5  # counted whether logged or not


def test_describe_is_one_line():
    assert describe(MapError("a\nb")) == "a"
    assert describe(KeyError("k")) == "KeyError: 'k'"
    assert describe(RuntimeError()) == "RuntimeError"
    assert len(describe(ValueError("x" * 1000))) == 300


def test_log_limiter_counts_what_it_suppressed():
    clock = Clock()
    lim = LogLimiter(burst=1, period_s=2.0, clock=clock)
    assert lim.allow() == (True, 0)
    assert lim.allow() == (False, 0)
    assert lim.allow() == (False, 0)
    clock.t += 2
    assert lim.allow() == (True, 2)
