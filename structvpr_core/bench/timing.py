"""Repeated timing and its summary (p50 / p95 / min / mean over the repeats, in milliseconds)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def summarise(times_s) -> dict:
    t = np.asarray(times_s, dtype=np.float64) * 1000.0
    return {
        "p50_ms": float(np.percentile(t, 50)),
        "p95_ms": float(np.percentile(t, 95)),
        "min_ms": float(t.min()),
        "mean_ms": float(t.mean()),
        "repeats": len(t),
    }


def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 2) -> dict:
    """Wall time of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return summarise(times)
