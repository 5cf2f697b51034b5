"""The errors of dupwatch.index: each one names the file or index and the cause."""

from __future__ import annotations

import os


class DupwatchError(Exception):
    """Base of every error dupwatch raises on purpose."""


class FingerprintError(DupwatchError):
    """A file could not be fingerprinted; `path` and `reason` say which and why."""

    def __init__(self, path: str | os.PathLike | bytes, reason: str) -> None:
        self.path = os.fsdecode(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple:
        # Rebuilt from (path, reason) when it crosses from a worker process.
        return type(self), (self.path, self.reason)


class MissingFile(FingerprintError):
    """The file does not exist (or vanished while being read)."""


class UnreadableFile(FingerprintError):
    """The file exists but cannot be read (permissions, a folder, a device, an I/O error)."""


class EmptyFile(FingerprintError):
    """The file has zero bytes."""


class NotAnImage(FingerprintError):
    """Pillow does not recognise the bytes as an image (its reason starts NOT_AN_IMAGE)."""


NOT_AN_IMAGE = "not an image"


def stored_failure(path: str | os.PathLike | bytes, reason: str) -> FingerprintError:
    """A failure read back from the index (which keeps its reason only) as the error it was:
    NotAnImage when the reason says so, so that `scan` keeps counting it apart."""
    kind = NotAnImage if reason.startswith(NOT_AN_IMAGE) else FingerprintError
    return kind(path, reason)


class TruncatedImage(FingerprintError):
    """The image is recognised but its data ends early or is corrupt."""


class DecompressionBomb(FingerprintError):
    """The image declares more pixels than the configured limit."""


class TooLarge(FingerprintError):
    """The file has more bytes than the configured limit."""


class StoreError(DupwatchError):
    """Base for problems with an index on disk."""


class IndexMismatch(StoreError):
    """The index was built with other hash parameters or a newer schema."""


class IndexLocked(StoreError):
    """Another process holds the index for writing."""


class NotIndexed(DupwatchError):
    """A path asked about is not in the index."""
