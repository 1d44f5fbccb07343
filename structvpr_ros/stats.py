"""Running figures of the node for /diagnostics: rates, latency percentiles, drops.

Latencies are kept over the last ``window`` processed frames (bounded memory whatever the
run length); rates are measured between two consecutive ``snapshot`` calls.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

LATENCY_KEYS = ("extract_ms", "search_ms", "verify_ms", "end_to_end_ms")


class NodeStats:
    def __init__(self, window: int = 200, clock=time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._lat = {k: deque(maxlen=window) for k in LATENCY_KEYS}
        self.received = 0
        self.processed = 0
        self.malformed = 0
        self.failed = 0
        self.skipped = 0
        self._last_snapshot = clock()
        self._last_received = 0
        self._last_processed = 0

    def on_received(self) -> None:
        with self._lock:
            self.received += 1

    def on_malformed(self) -> None:
        with self._lock:
            self.malformed += 1

    def on_skipped(self) -> None:
        with self._lock:
            self.skipped += 1

    def on_failed(self) -> None:
        with self._lock:
            self.failed += 1

    def on_processed(self, extract_ms: float, search_ms: float, verify_ms: float, end_to_end_ms: float) -> None:
        with self._lock:
            self.processed += 1
            for k, v in zip(LATENCY_KEYS, (extract_ms, search_ms, verify_ms, end_to_end_ms), strict=True):
                self._lat[k].append(float(v))

    def percentiles(self, key: str, qs=(50, 95)) -> tuple[float, ...]:
        with self._lock:
            values = list(self._lat[key])
        if not values:
            return tuple(float("nan") for _ in qs)
        return tuple(float(v) for v in np.percentile(values, qs))

    def snapshot(self) -> dict:
        """Current figures; input and processing rates are over the time since the last call."""
        now = self._clock()
        with self._lock:
            dt = max(now - self._last_snapshot, 1e-9)
            rx_hz = (self.received - self._last_received) / dt
            proc_hz = (self.processed - self._last_processed) / dt
            self._last_snapshot, self._last_received, self._last_processed = now, self.received, self.processed
            out = {
                "input_rate_hz": rx_hz,
                "processing_rate_hz": proc_hz,
                "received": self.received,
                "processed": self.processed,
                "malformed": self.malformed,
                "failed": self.failed,
                "skipped": self.skipped,
            }
        for k in LATENCY_KEYS:
            p50, p95 = self.percentiles(k)
            out[f"{k}_p50"], out[f"{k}_p95"] = p50, p95
        return out
