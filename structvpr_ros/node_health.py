"""What the node reports in /diagnostics: its health as a level, a message and key values (ROS-free).

A pure function of the node's state, so the order of the rules can be read and tested without
rclpy: a stopped worker first (nothing is processed at all), then repeated frame failures, a
failed map save, no input, occasional failures, else OK with the rates.
"""

from __future__ import annotations

from dataclasses import dataclass

from .frame_failures import ERROR as FAILURES_ERROR
from .frame_failures import WARN as FAILURES_WARN
from .stats import LATENCY_KEYS

OK, WARN, ERROR = "OK", "WARN", "ERROR"


@dataclass
class NodeState:
    """A snapshot of what the node's health depends on."""

    stats: dict  # NodeStats.snapshot()
    worker_alive: bool
    worker_error: str | None
    failures: str  # FrameFailures.status()[0]: frame_failures.OK, WARN or ERROR
    failure_problem: str  # FrameFailures.status()[1]
    recent_failures: int
    last_failure: str
    last_save_error: str | None
    dropped: int
    map_size: int
    mode: str
    device: str
    image_topic: str  # resolved


def health(s: NodeState) -> tuple[str, str, dict[str, str]]:
    """(level OK/WARN/ERROR, message, values) for the node's DiagnosticStatus."""
    stats = s.stats
    if s.worker_error or not s.worker_alive:
        level, message = ERROR, "processing thread stopped (call ~/reset to restart it)"
    elif s.failures == FAILURES_ERROR:
        level, message = ERROR, s.failure_problem
    elif s.last_save_error:
        level, message = ERROR, f"map not saved: {s.last_save_error}"
    elif stats["input_rate_hz"] == 0.0:
        level, message = WARN, f"no images on {s.image_topic}"
    elif s.failures == FAILURES_WARN:
        level, message = WARN, s.failure_problem
    else:
        level = OK
        message = f"processing {stats['processing_rate_hz']:.1f} Hz of {stats['input_rate_hz']:.1f} Hz input"
    values = {
        "input_rate_hz": f"{stats['input_rate_hz']:.2f}",
        "processing_rate_hz": f"{stats['processing_rate_hz']:.2f}",
        "frames_received": stats["received"],
        "frames_processed": stats["processed"],
        "frames_dropped": s.dropped,
        "frames_malformed": stats["malformed"],
        "frames_failed": stats["failed"],
        "recent_failures": s.recent_failures,
        "last_failure": s.last_failure,
        "frames_not_keyframes": stats["skipped"],
        "map_size": s.map_size,
        "mode": s.mode,
        "device": s.device,
        "image_topic": s.image_topic,
    }
    for k in LATENCY_KEYS:
        values[f"{k}_p50"] = f"{stats[f'{k}_p50']:.1f}"
        values[f"{k}_p95"] = f"{stats[f'{k}_p95']:.1f}"
    return level, message, {k: str(v) for k, v in values.items()}
