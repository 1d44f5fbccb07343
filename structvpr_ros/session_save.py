"""Saving a mapping session at shutdown so that its keyframes are never silently lost (ROS-free)."""

from __future__ import annotations

import time
from pathlib import Path


def save_session(mapdb, target: str | Path, log) -> str | None:
    """Save ``mapdb`` to ``target``, or else to a fallback location named in the log (beside the
    map, then under $STRUCTVPR_CACHE). Returns None when saved to ``target``, else the error the
    node exits with. ``log``: anything with ``info`` and ``error`` (rclpy's or logging's)."""
    from structvpr_core.mapdb.storage import fallback_locations

    target = Path(target)
    try:
        saved, failures = mapdb.save_or_fallback(target, fallback_locations(target, time.strftime("%Y%m%d-%H%M%S")))
    except Exception as e:  # MapError: nowhere worked (or a bug): the keyframes are lost, say so loudly
        log.error(f"could not save the map, its {len(mapdb)} keyframes are lost: {e}")
        return f"could not save the map to {target}: {e}"
    if not failures:
        log.info(f"saved {len(mapdb)} keyframes to {target}")
        return None
    for failure in failures:
        log.error(f"could not save the map: {failure}")
    log.error(
        f"the session's {len(mapdb)} keyframes were saved to {saved} instead: move it to {target} "
        f"or start the node with map_path:={saved}"
    )
    return f"could not save the map to {target} ({failures[0]}); saved to {saved} instead"
