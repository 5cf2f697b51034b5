"""Bring an index up to date with folders on disk: stat everything, hash only what changed.

Hashing runs in worker processes; this process alone writes, in batches, so a
burst of files costs a few transactions instead of one fsync each.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from dupwatch.index.errors import FingerprintError, stored_failure
from dupwatch.index.fingerprint.file import Fingerprint
from dupwatch.index.folders import DEFAULT_IGNORE, absolute, is_under, walk
from dupwatch.index.hashing.pool import hash_all
from dupwatch.index.matches import AddResult
from dupwatch.index.store.records import Failure, FileRecord

WRITE_BATCH = 256  # files per write transaction
WRITE_EVERY_S = 0.5  # or sooner, so a long scan shows its progress in the index
# From this many files to hash, they are stored by Index.put_bulk (pairs made on arrays, in
# transactions of up to BULK_EVERY_S of hashing) and the report lists no per-file results.
BULK_FROM = 20_000
BULK_EVERY_S = 5.0

Progress = Callable[[int, int], None]  # (files done, files to hash)


class Updated(Protocol):
    """What is brought up to date: the Index's reads and batched writes."""

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
) -> UpdateReport:
    """Index new and changed files under the folders and forget the ones gone."""
    found = plan(index, folders)
    report = UpdateReport(unchanged=found.unchanged, failed=list(found.still_failing))
    report.seen = found.unchanged + len(found.to_hash) + len(found.still_failing)
    report.removed = index.remove_many(found.gone)
    return rehash(index, found.to_hash, report, workers=workers, progress=progress)


def rehash(
    index: Updated,
    paths: list[bytes],
    report: UpdateReport,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
) -> UpdateReport:
    """Fingerprint `paths` and store them in batches, adding to `report`."""
    if len(paths) >= BULK_FROM:
        return _rehash_in_bulk(index, paths, report, workers=workers, progress=progress)
    batch: list[tuple[bytes, Fingerprint, os.stat_result]] = []
    failures: list[tuple[bytes, os.stat_result, str]] = []
    last_write = time.monotonic()

    def write() -> None:
        report.results.extend(index.put_many(batch))
        index.record_failures(failures)
        batch.clear()
        failures.clear()

    for done, (path, outcome, st) in enumerate(hash_all(paths, workers=workers), 1):
        if isinstance(outcome, FingerprintError):
            report.failed.append(outcome)
            if st is not None:
                failures.append((path, st, outcome.reason))
        else:
            batch.append((path, outcome, st))
            report.notes += [(path, note) for note in outcome.notes]
        if len(batch) >= WRITE_BATCH or time.monotonic() - last_write > WRITE_EVERY_S:
            write()
            last_write = time.monotonic()
        if progress is not None:
            progress(done, len(paths))
    write()
    report.hashed = len(report.results)
    report.seen = max(report.seen, report.hashed + len(report.failed))
    return report


def _rehash_in_bulk(
    index: Updated,
    paths: list[bytes],
    report: UpdateReport,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
) -> UpdateReport:
    """rehash() for many files: Index.put_bulk takes the fingerprints as they come."""
    failures: list[tuple[bytes, os.stat_result, str]] = []

    def fingerprints() -> Iterable[tuple[bytes, Fingerprint, os.stat_result]]:
        for done, (path, outcome, st) in enumerate(hash_all(paths, workers=workers), 1):
            if isinstance(outcome, FingerprintError):
                report.failed.append(outcome)
                if st is not None:
                    failures.append((path, st, outcome.reason))
            else:
                report.notes += [(path, note) for note in outcome.notes]
                yield path, outcome, st
            if progress is not None:
                progress(done, len(paths))

    try:
        report.hashed = index.put_bulk(fingerprints(), every_s=BULK_EVERY_S)
    finally:
        index.record_failures(failures)
    report.seen = max(report.seen, report.hashed + len(report.failed))
    return report
