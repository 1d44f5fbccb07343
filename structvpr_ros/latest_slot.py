"""A one-slot mailbox between the camera callback and the processing thread.

Processing must never queue behind the camera: when a frame arrives while an older one is
still waiting, the older one is replaced (and counted as dropped). The consumer always gets
the newest frame, so latency stays bounded by one processing time whatever the input rate.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """Thread-safe holder of the newest item; ``put`` never blocks, ``take`` waits."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._has_item = False
        self._closed = False
        self.received = 0  # items offered with put()
        self.dropped = 0  # items replaced before anyone took them

    def put(self, item: T) -> bool:
        """Store ``item``; returns True when it replaced an item nobody had taken."""
        with self._cond:
            replaced = self._has_item
            self._item, self._has_item = item, True
            self.received += 1
            if replaced:
                self.dropped += 1
            self._cond.notify()
            return replaced

    def take(self, timeout: float | None = None) -> T | None:
        """Remove and return the newest item; None after ``timeout`` seconds or once closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._has_item or self._closed, timeout):
                return None
            if not self._has_item:
                return None
            item, self._item, self._has_item = self._item, None, False
            return item

    def close(self) -> None:
        """Wake every waiting ``take`` (it returns None) so the consumer thread can stop."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
