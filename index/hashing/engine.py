"""What a hashing engine is: paths in, batches of outcomes out, in whatever order they finish.

An engine hashes files somewhere else (processes on this machine: local.py, or the workers
of a Dask cluster: cluster.py) and streams the outcomes back to the one process that writes
the index. Work goes out in batches of several files and comes back a batch at a time: one
round trip per batch instead of per file is what keeps every core busy on small pictures.

Every engine gives the same outcome for the same file as an in-process tasks.hash_file():
(path, Fingerprint or FingerprintError, the stat taken before reading it), with the same
FingerprintError subclasses and reasons, each file within its time limit.

Imports nothing heavy: what a hashing process runs is tasks.py's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from dupwatch.index.errors import FingerprintError
    from dupwatch.index.fingerprint.file import Fingerprint

# (path, Fingerprint or the error that names it, the stat taken before it was read or None)
Outcome = tuple[bytes, "Fingerprint | FingerprintError", "os.stat_result | None"]
# (path, pixel digest, or None when it cannot be decoded)
PixelOutcome = tuple[bytes, "bytes | None"]

MAX_BATCH = 32  # files per task: small pictures take ~3 ms each, so ~0.1 s of work a task
BATCHES_PER_WORKER = 4  # at the end of a scan, batches shrink so that every worker has some


class Engine(Protocol):
    """Hashes files for the one writer of an index."""

    workers: int  # how many files it hashes at once

    def check_visible(self, folders: Iterable[bytes], files: Iterable[bytes] = ()) -> None:
        """Raise a DupwatchError naming a worker and a path it cannot read (engines whose
        workers are elsewhere: they read the files by path)."""
        ...

    def hash(self, paths: Iterable[bytes]) -> Iterator[list[Outcome]]:
        """Fingerprint every path; batches of outcomes as they finish, each path once."""
        ...

    def pixel_digests(self, paths: list[bytes]) -> PixelJob:
        """Start the full-decode pixel digests of `paths` (for telling `pixel` from `near`)
        beside the hashing; the job's result() waits for them."""
        ...

    def close(self) -> None:
        """Stop the workers this engine started (files not handed out yet are dropped)."""
        ...


class PixelJob(Protocol):
    def result(self) -> dict[bytes, bytes | None]: ...


def batch_size(left: int, workers: int) -> int:
    """How many of the `left` files to hand out in the next task: MAX_BATCH while there is
    plenty, less near the end so that the last files are spread over every worker."""
    return max(1, min(MAX_BATCH, left // (max(1, workers) * BATCHES_PER_WORKER)))


def batches(paths: list[bytes], workers: int) -> Iterator[list[bytes]]:
    """`paths` cut into tasks of batch_size(), first paths first."""
    at = 0
    while at < len(paths):
        size = batch_size(len(paths) - at, workers)
        yield paths[at : at + size]
        at += size


class DonePixels:
    """A PixelJob whose digests are already known (or given up on: the writer decodes them)."""

    def __init__(self, digests: dict[bytes, bytes | None]) -> None:
        self._digests = digests

    def result(self) -> dict[bytes, bytes | None]:
        return self._digests
