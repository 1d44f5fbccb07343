"""The ``--max-steps`` budget: stop a run after a number of optimiser steps, as a kill would."""

from __future__ import annotations

from dataclasses import dataclass


class StopRequested(Exception):
    """Raised when the ``--max-steps`` budget of this invocation is used up (a simulated kill)."""


@dataclass
class StepBudget:
    remaining: int | None = None  # None: no limit

    def spend(self) -> None:
        if self.remaining is not None:
            self.remaining -= 1
            if self.remaining <= 0:
                raise StopRequested("stopped after the requested number of steps (--max-steps)")
