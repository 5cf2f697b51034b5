"""A full disk under the index: telling it from other write errors, and when to try again.

The writer pauses indexing when an index write fails for want of space (queries and status
go on: they only read), and resumes once space is back, reconciling every watched folder
so that nothing that arrived meanwhile is lost.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Iterator

import lmdb

log = logging.getLogger(__name__)

LOW_SPACE_BYTES = 4 << 20  # a failed index write with less free than this: the disk is full
RESUME_SPACE_BYTES = 4 << 20  # freed since the pause before indexing is tried again
RETRY_S = 60.0  # tried again this often anyway: a quota does not show in statvfs
CHECK_S = 1.0  # how often the free space is looked at while paused

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(error: BaseException, folder: str) -> bool:
    """Whether `error`, raised by a write to the index in `folder`, means its disk is full.

    LMDB says ENOSPC, or, when its last write was cut short by a full disk, "Input/output
    error" (EIO): then the free space left decides.
    """
    for cause in _causes(error):
        if isinstance(cause, lmdb.DiskError):
            return True
        if isinstance(cause, OSError) and cause.errno in _NO_SPACE:
            return True
        if isinstance(cause, lmdb.Error):
            text = str(cause)
            if any(os.strerror(code) in text for code in _NO_SPACE):
                return True
            # Only a plain errno error (EIO) can be a short write; MapFull, BadValsize and
            # the other LMDB conditions have classes of their own.
            return type(cause) is lmdb.Error and free_bytes(folder) < LOW_SPACE_BYTES
    return False


def free_bytes(folder: str) -> int:
    """Bytes an unprivileged writer may still use on the file system of `folder` (0 when
    it cannot be asked)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def _causes(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


class DiskFull:
    """The paused state of one index's writer: why, and when to try again."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.reason: str | None = None  # None: not paused
        self._free_at_pause = 0
        self._retry_at = 0.0

    def pause(self, error: BaseException) -> None:
        """Record a write that failed for want of space; logs once per pause."""
        if self.reason is None:
            log.error(
                "%s: no space left on the disk of the index (%s); indexing is paused until "
                "space is freed, queries and status still work",
                self.folder,
                error,
            )
        self.reason = f"{self.folder}: no space left on device"
        self._free_at_pause = free_bytes(self.folder)
        self._retry_at = time.monotonic() + RETRY_S

    def may_resume(self) -> bool:
        """True when space was freed since the pause (or RETRY_S passed): clears the pause."""
        free = free_bytes(self.folder)
        if free < self._free_at_pause + RESUME_SPACE_BYTES and time.monotonic() < self._retry_at:
            return False
        log.warning(
            "%s: %d MiB free again: indexing resumes, reconciling the watched folders",
            self.folder,
            free >> 20,
        )
        self.reason = None
        return True
