"""Named errors raised by the project, defined in one place.

Library code raises these instead of ``assert`` or ``sys.exit`` so callers can
catch precisely what went wrong; every message names the offending value.
"""

from __future__ import annotations

__all__ = [
    "DeepfakeDataError",
    "ConfigError",
    "StorageError",
    "CorruptSampleError",
    "StoreVersionError",
    "IncompleteStoreError",
    "VideoDecodeError",
    "DatasetError",
]


class DeepfakeDataError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(DeepfakeDataError, ValueError):
    """A configuration value or key is invalid; the message names it."""


class StorageError(DeepfakeDataError):
    """A store cannot be opened, written or read for a reason other than a bad record."""


class CorruptSampleError(StorageError):
    """A stored record is damaged: bad magic, version, checksum, size or shape.

    Attributes:
        key: The key of the damaged record, when known.
        reason: A short description of the fault.
    """

    def __init__(self, key: str | None, reason: str | None = None) -> None:
        if reason is None:
            # One argument: a finished message, as torch re-raises a worker's exception.
            self.key, self.reason = None, str(key)
            super().__init__(str(key))
            return
        self.key = key
        self.reason = reason
        where = f"sample {key!r}" if key is not None else "record"
        super().__init__(f"corrupt {where}: {reason}")

    def __reduce__(self):  # keep the two-argument form picklable across DataLoader workers
        return (type(self), (self.key, self.reason))


class StoreVersionError(StorageError):
    """A store (or record) was written by an unsupported format version."""


class IncompleteStoreError(StorageError):
    """A store lacks its metadata or completion marker where one is required."""


class VideoDecodeError(DeepfakeDataError):
    """A video file cannot be opened or decoded; the message gives the reason."""


class DatasetError(DeepfakeDataError):
    """A raw dataset tree or its metadata file is missing or malformed."""
