"""Bring an index up to date with folders on disk: stat everything, hash only what changed.

Hashing runs on an engine (worker processes here, or a Dask cluster) in threads and
processes of its own; this thread alone writes, in batches, so a burst of files costs a few
transactions instead of one fsync each, and the workers never wait for the writer.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from dupwatch.index.errors import FingerprintError, stored_failure
from dupwatch.index.fingerprint.file import Fingerprint
from dupwatch.index.folders import DEFAULT_IGNORE, absolute, is_under, walk
from dupwatch.index.hashing.local import LocalEngine, hash_batches
from dupwatch.index.hashing.pool import POOL_THRESHOLD
from dupwatch.index.matches import AddResult
from dupwatch.index.prefetch import PixelPrefetch, Prefetched
from dupwatch.index.store.records import Failure, FileRecord

if TYPE_CHECKING:
    from dupwatch.index.hashing.engine import Engine, Outcome

WRITE_BATCH = 256  # files per write transaction
WRITE_EVERY_S = 0.5  # or sooner, so a long scan shows its progress in the index
# From this many files to hash, they are stored by Index.put_bulk (pairs made on arrays, in
# transactions of up to BULK_EVERY_S of hashing) and the report lists no per-file results.
BULK_FROM = 20_000
BULK_EVERY_S = 5.0

Progress = Callable[[int, int], None]  # (files done, files to hash)


class Updated(Prefetched, Protocol):
    """What is brought up to date: the Index's reads and batched writes (and what the pixel
    digests made ahead read: prefetch.py)."""

    def files(self) -> Iterable[FileRecord]: ...
    def failures(self) -> list[Failure]: ...
    def remove_many(self, paths: Iterable[bytes]) -> int: ...
    def put_many(
        self, items: Iterable[tuple[bytes, Fingerprint, os.stat_result]]
    ) -> list[AddResult]: ...
    def put_bulk(
        self, items: Iterable[tuple[bytes, Fingerprint, os.stat_result]], *, every_s: float
    ) -> int: ...
    def record_failures(self, failures: Iterable[tuple[bytes, os.stat_result, str]]) -> None: ...


@dataclass
class Plan:
    """What a stat-only comparison of folders with the index found."""

    to_hash: list[bytes] = field(default_factory=list)
    gone: list[bytes] = field(default_factory=list)
    unchanged: int = 0
    # Files that failed before and have not changed since: not read again.
    still_failing: list[FingerprintError] = field(default_factory=list)


@dataclass
class UpdateReport:
    seen: int = 0
    hashed: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: list[FingerprintError] = field(default_factory=list)
    # Each stored file's matches; empty when BULK_FROM or more files were hashed.
    results: list[AddResult] = field(default_factory=list)
    notes: list[tuple[bytes, str]] = field(default_factory=list)  # (path, what decoding said)


def plan(
    index: Updated, folders: Iterable[str | bytes | os.PathLike], ignore=DEFAULT_IGNORE
) -> Plan:
    """Compare the folders with the index by (device, inode, size, mtime) alone."""
    roots = [absolute(folder) for folder in folders]

    def inside(path: bytes) -> bool:
        return any(path == root or is_under(path, root) for root in roots)

    known = {r.path: (r.dev, r.ino, r.size, r.mtime_ns) for r in index.files() if inside(r.path)}
    failed = {f.path: f for f in index.failures() if inside(f.path)}
    result = Plan()
    seen: set[bytes] = set()
    for root in roots:
        for path, st in walk(root, ignore=ignore):
            if path in seen:
                continue  # nested roots
            seen.add(path)
            now = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            failure = failed.get(path)
            if known.get(path) == now:
                result.unchanged += 1
            elif failure and (failure.dev, failure.ino, failure.size, failure.mtime_ns) == now:
                result.still_failing.append(stored_failure(path, failure.reason))
            else:
                result.to_hash.append(path)
    result.gone = sorted(path for path in {*known, *failed} if path not in seen)
    return result


def update(
    index: Updated,
    folders: Iterable[str | bytes | os.PathLike],
    *,
    workers: int | None = None,
    progress: Progress | None = None,
    engine: Engine | None = None,
    found: Plan | None = None,
) -> UpdateReport:
    """Index new and changed files under the folders and forget the ones gone; `engine`
    hashes them (default: worker processes here). `found`: plan() of the folders, made
    already (Index.update checks that the engine can read them before it changes anything)."""
    folders = [absolute(folder) for folder in folders]
    if found is None:
        found = plan(index, folders)
        if engine is not None and found.to_hash:
            engine.check_visible(folders, found.to_hash)  # before anything is changed
    report = UpdateReport(unchanged=found.unchanged, failed=list(found.still_failing))
    report.seen = found.unchanged + len(found.to_hash) + len(found.still_failing)
    report.removed = index.remove_many(found.gone)
    return rehash(index, found.to_hash, report, workers=workers, progress=progress, engine=engine)


def rehash(
    index: Updated,
    paths: list[bytes],
    report: UpdateReport,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
    engine: Engine | None = None,
) -> UpdateReport:
    """Fingerprint `paths` and store them in batches, adding to `report`.

    With worker processes (or the given `engine`), the engine hashes in threads and
    processes of its own while this thread writes: the writer is never what the workers
    wait for, and the pixel digests a batch's writing needs are made by the engine too.
    """
    if len(paths) >= BULK_FROM:
        return _rehash_in_bulk(
            index, paths, report, workers=workers, progress=progress, engine=engine
        )
    pooled = engine is not None or (len(paths) >= POOL_THRESHOLD and workers != 1)
    own = None
    if pooled and engine is None:
        engine = own = LocalEngine(workers)
    writer = _Writer(index, report, PixelPrefetch(index, engine) if engine else None)
    done = 0
    try:
        for outcomes in hash_batches(paths, workers=workers, engine=engine):
            writer.add(outcomes)
            done += len(outcomes)
            if progress is not None:
                progress(done, len(paths))
        writer.write()
    finally:
        if own is not None:
            own.close()
    report.hashed = len(report.results)
    report.seen = max(report.seen, report.hashed + len(report.failed))
    # Not in the order the workers finished: the same list however the files were hashed.
    report.failed.sort(key=lambda error: error.path)
    report.notes.sort(key=lambda note: note[0])
    return report


class _Writer:
    """Outcomes in, write transactions out: WRITE_BATCH files at a time, or every
    WRITE_EVERY_S so that a long scan shows its progress in the index."""

    def __init__(self, index: Updated, report: UpdateReport, prefetch: PixelPrefetch | None):
        self.index = index
        self.report = report
        self.prefetch = prefetch
        self.batch: list[tuple[bytes, Fingerprint, os.stat_result]] = []
        self.failures: list[tuple[bytes, os.stat_result, str]] = []
        self.last_write = time.monotonic()

    def add(self, outcomes: list[Outcome]) -> None:
        hashed = []
        for path, outcome, st in outcomes:
            if isinstance(outcome, FingerprintError):
                self.report.failed.append(outcome)
                if st is not None:
                    self.failures.append((path, st, outcome.reason))
            elif st is not None:
                hashed.append((path, outcome, st))
                self.report.notes += [(path, note) for note in outcome.notes]
        if self.prefetch is not None and hashed:
            self.prefetch.start(hashed)
        self.batch += hashed
        if len(self.batch) >= WRITE_BATCH or time.monotonic() - self.last_write > WRITE_EVERY_S:
            self.write()

    def write(self) -> None:
        if self.prefetch is not None:
            self.prefetch.provide()
        self.report.results.extend(self.index.put_many(self.batch))
        self.index.record_failures(self.failures)
        self.batch.clear()
        self.failures.clear()
        self.last_write = time.monotonic()


def _rehash_in_bulk(
    index: Updated,
    paths: list[bytes],
    report: UpdateReport,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
    engine: Engine | None = None,
) -> UpdateReport:
    """rehash() for many files: Index.put_bulk takes the fingerprints as they come."""
    failures: list[tuple[bytes, os.stat_result, str]] = []

    def fingerprints() -> Iterable[tuple[bytes, Fingerprint, os.stat_result]]:
        done = 0
        for outcomes in hash_batches(paths, workers=workers, engine=engine):
            for path, outcome, st in outcomes:
                if isinstance(outcome, FingerprintError):
                    report.failed.append(outcome)
                    if st is not None:
                        failures.append((path, st, outcome.reason))
                elif st is not None:
                    report.notes += [(path, note) for note in outcome.notes]
                    yield path, outcome, st
            done += len(outcomes)
            if progress is not None:
                progress(done, len(paths))

    try:
        report.hashed = index.put_bulk(fingerprints(), every_s=BULK_EVERY_S)
    finally:
        index.record_failures(failures)
    report.seen = max(report.seen, report.hashed + len(report.failed))
    report.failed.sort(key=lambda error: error.path)
    report.notes.sort(key=lambda note: note[0])
    return report
