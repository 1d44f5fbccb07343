"""One logger per module, all under the ``structvpr`` name, and the CLI's handler for them.

Library code never prints: it logs (``log = get_logger(__name__)``) and returns results; the
``structvpr`` CLI (and ``training/train.py``) show INFO and above on stderr, DEBUG with ``--debug``.
An application embedding the core configures the ``structvpr`` logger as it likes.
"""

from __future__ import annotations

import logging
import sys

ROOT = "structvpr"


def get_logger(module_name: str) -> logging.Logger:
    """``structvpr_core.mapdb.index`` → the logger ``structvpr.mapdb.index``."""
    _, _, rest = module_name.partition(".")
    return logging.getLogger(f"{ROOT}.{rest}" if rest else ROOT)


def configure_cli_logging(prefix: str, debug: bool = False) -> None:
    """Send ``structvpr.*`` records to stderr as ``PREFIX: message`` (``PREFIX: warning: …`` above INFO)."""

    class _Format(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            level = "" if record.levelno <= logging.INFO else f"{record.levelname.lower()}: "
            return f"{prefix}: {level}{record.getMessage()}"

    logger = logging.getLogger(ROOT)
    for h in list(logger.handlers):
        if getattr(h, "_structvpr_cli", False):
            logger.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Format())
    handler._structvpr_cli = True
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    logger.propagate = False
