"""Timing several ways of doing the same thing, fairly, on a machine that may be shared.

``interleaved`` runs the candidates in turn, a block of calls each, so that load changes on the
machine spread over all of them. Each block starts with a pause and one untimed call: ONNX
Runtime's worker threads keep spinning for a moment after a run (its default, which makes it
~20 % faster back to back), and that must not be billed to the next candidate (measured: it
slowed a 320×240 run 2×). Used by ``auto``'s runtime choice (``backends.runtime_choice``) and
the extraction benchmark (``bench.extraction``).
"""

from __future__ import annotations

import time
from collections.abc import Callable


def interleaved(
    calls: dict[str, Callable[[], object]], repeats: int, *, block: int, pause_s: float, warmup: int = 0
) -> dict[str, dict[str, list[float]]]:
    """``{name: {"wall_s": [...], "cpu_s": [...]}}``: ``repeats`` timed calls of each, in blocks.

    ``cpu_s`` is the process CPU time per call (all threads of the process).
    """
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    out = {name: {"wall_s": [], "cpu_s": []} for name in calls}
    while min(len(t["wall_s"]) for t in out.values()) < repeats:
        for name, fn in calls.items():
            time.sleep(pause_s)
            fn()  # untimed: caches, and the previous candidate's spinning threads settle
            for _ in range(min(block, repeats - len(out[name]["wall_s"]))):
                c, t = time.process_time(), time.perf_counter()
                fn()
                out[name]["wall_s"].append(time.perf_counter() - t)
                out[name]["cpu_s"].append(time.process_time() - c)
    return out
