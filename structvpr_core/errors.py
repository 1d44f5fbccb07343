"""Exceptions of structvpr_core.

Every error a user can cause (bad input file, bad config, wrong checkpoint) is a
``StructVPRError``: the CLI prints its message on one line and exits non-zero, without a
traceback unless ``--debug`` is given. Anything else is a bug and keeps its traceback.
"""


class StructVPRError(Exception):
    """Base class of user-facing errors."""


class ConfigError(StructVPRError, ValueError):
    """A configuration value or key is invalid."""


class ImageError(StructVPRError, ValueError):
    """An image cannot be read or has an unsupported shape or type."""


class WeightsError(StructVPRError):
    """Pretrained weights are missing, corrupted or fail their checksum."""


class CheckpointError(StructVPRError):
    """A checkpoint is unreadable or does not match the requested model."""


class DatasetError(StructVPRError):
    """A dataset on disk is malformed."""


class MapError(StructVPRError):
    """A map database is missing, corrupted or was built with another model."""


class MissingDependencyError(StructVPRError):
    """An optional package a feature needs is not installed (e.g. PyTorch in a runtime-only install)."""
