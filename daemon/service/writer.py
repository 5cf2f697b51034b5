"""The work queue and the one thread that writes the index.

Changes from the watcher, hash results from the worker processes and calls from the socket
server all arrive on one queue; this thread alone opens LMDB write transactions, grouping a
burst of hashed files into few of them (each file still all-or-nothing). The files being
hashed are hashing_queue.py's (what waits, what is submitted, deadlines, crashes); the pool
of processes itself is hashers.py's.
"""

from __future__ import annotations

import logging
import os
import queue
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dupwatch.daemon.service.diskfull import CHECK_S, DiskFull, is_disk_full
from dupwatch.daemon.service.hashers import Hashers
from dupwatch.daemon.service.hashing_queue import Hashed, HashingQueue
from dupwatch.daemon.service.watcher import Change, ChangeKind
from dupwatch.index import AddResult, Fingerprint, FingerprintError, Index, MissingFile
from dupwatch.index.errors import DupwatchError
from dupwatch.index.folders import walk
from dupwatch.index.hashing.limits import HASH_TIMEOUT_S
from dupwatch.index.hashing.tasks import digest_pixels, hash_file
from dupwatch.index.prefetch import PixelPrefetch
from dupwatch.index.update import plan

log = logging.getLogger(__name__)

T = TypeVar("T")

WRITE_BATCH = 256  # hashed files per write transaction during a burst
WRITE_EVERY_S = 0.25  # during a burst, write at least this often
DEADLINE_TICK_S = 0.5  # how often the hashes in hand are held against their deadline


@dataclass
class Stats:
    """Counters shown by `status`; written by the writer thread only."""

    hashed: int = 0
    failed: int = 0
    unchanged: int = 0
    moved: int = 0
    removed: int = 0
    alerts: int = 0
    last_failures: deque[str] = field(default_factory=lambda: deque(maxlen=10))


@dataclass
class Reconcile:
    """A stat comparison of folders with the index; `done` resolves once all is hashed."""

    folders: list[bytes]
    done: Future[Reconcile] = field(default_factory=Future)
    total: int = 0
    left: set[bytes] = field(default_factory=set)
    removed: int = 0
    unchanged: int = 0


@dataclass(frozen=True, slots=True)
class _Call:
    function: Callable[[Index], Any]
    future: Future[Any]


_STOP = object()
Item = Change | Reconcile | Hashed | _Call | object


class Writer:
    """The single writer thread: apply Changes, hash in worker processes, store, alert.

    `new_pool()` makes the process pool (again, should a worker die); `on_duplicate(result)`
    runs in this thread for every stored file that matched something. A file gets
    `hash_timeout_s` in its worker; a full disk pauses indexing until space is back, then
    `roots()` (the watched folders present) are reconciled.
    """

    def __init__(
        self,
        index: Index,
        new_pool: Callable[[], Executor],
        *,
        workers: int,
        ignore: Iterable[str],
        on_duplicate: Callable[[AddResult], None],
        hash_timeout_s: float = HASH_TIMEOUT_S,
        roots: Callable[[], list[bytes]] | None = None,
    ) -> None:
        self.index = index
        self.hash_timeout_s = hash_timeout_s
        self.roots = roots or index.roots
        self.disk = DiskFull(index.path)
        self.hashers = Hashers(new_pool, hash_timeout_s)
        self.ignore = tuple(ignore)
        self.on_duplicate = on_duplicate
        self.stats = Stats()
        self._queue: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self.hashing = HashingQueue(self.hashers, workers=workers, deliver=self._queue.put)
        # The pixel digests a burst's writing needs, decoded by the hashing processes ahead.
        self._prefetch = PixelPrefetch(index, self.hashers)
        self._reconciles: list[Reconcile] = []
        self._batch: list[tuple[bytes, Fingerprint, os.stat_result]] = []
        self._batch_started = 0.0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="dupwatch-writer", daemon=True)
        self.last_active = time.monotonic()

    # Called from other threads

    def start(self) -> None:
        self._thread.start()

    def submit(self, item: Change | Reconcile) -> None:
        """Queue a change or a reconciliation; thread-safe, never blocks."""
        self._queue.put(item)

    def call(self, function: Callable[[Index], T]) -> Future[T]:
        """Run `function(index)` in the writer thread, between other writes."""
        future: Future[T] = Future()
        self._queue.put(_Call(function, future))
        return future

    def fingerprint(self, path: bytes) -> Fingerprint:
        """Fingerprint a file for a query (any thread), in a hashing process: the decode has
        its time and memory limits there, and a decoder that crashes takes a worker down, not
        the service. Raises a FingerprintError naming the file."""
        _, outcome, _ = self.hashers.run(hash_file, path, self.call)
        if isinstance(outcome, FingerprintError):
            raise outcome
        return outcome

    def pixel_digest(self, path: bytes) -> bytes:
        """fingerprint.pixel_digest() in a hashing process (the index's PixelDigests decode
        through it in the service); raises a FingerprintError naming the file."""
        return self.hashers.run(digest_pixels, path, self.call)

    def stop(self, timeout_s: float = 60.0) -> None:
        """Finish the files being hashed, store them, drop the rest (reconciled at next start)."""
        self._queue.put(_STOP)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("the writer did not finish within %g s", timeout_s)

    @property
    def queue_length(self) -> int:
        """Changes and files not handled yet (approximate: read without a lock)."""
        return self._queue.qsize() + len(self.hashing) + len(self._batch)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def paused(self) -> str | None:
        """Why indexing is paused (the index's disk is full), or None."""
        return self.disk.reason

    # The writer thread

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self._wait_s())
            except queue.Empty:
                item = None  # a timer ran out: the batch's, a deadline's or the full disk's
            self.last_active = time.monotonic()
            try:
                self._step(item)
            except Exception as exc:
                if is_disk_full(exc, self.index.path):
                    self._pause(exc)
                else:
                    log.exception("the writer failed on %r; carrying on", item)
            if self._stopping and not self.hashing.submitted:
                try:
                    self._flush()
                except Exception:
                    log.exception("could not store the last files (reconciled at next start)")
                self._finish_reconciles()
                self.hashers.shutdown(wait=True)
                return

    def _step(self, item: Item | None) -> None:
        if item is not None:
            self._handle(item)
            while not self._queue.empty() and len(self._batch) < WRITE_BATCH:
                self._handle(self._queue.get_nowait())
        self._check_deadlines()
        if self.disk.reason is not None:
            if not self.disk.may_resume():
                return
            self._reconcile(Reconcile(self.roots()))
        if self._should_flush():
            self._flush()
        self.hashing.pump()

    def _wait_s(self) -> float | None:
        waits = [1.0] if self._stopping else []
        if self._batch:
            waits.append(max(0.0, self._batch_started + WRITE_EVERY_S - time.monotonic()))
        if self.hashing.submitted:
            waits.append(DEADLINE_TICK_S)
        if self.disk.reason is not None:
            waits.append(CHECK_S)
        retry_in_s = self.hashers.retry_in_s()
        if retry_in_s is not None and self.hashing.waiting:
            waits.append(retry_in_s)
        return min(waits, default=None)

    def _should_flush(self) -> bool:
        if not self._batch:
            return False
        # Alone (no burst behind it), a file is written at once: the alert must not wait.
        burst = self.hashing.is_burst()
        late = time.monotonic() - self._batch_started >= WRITE_EVERY_S
        return not burst or late or len(self._batch) >= WRITE_BATCH or self._stopping

    def _handle(self, item: Item) -> None:
        if item is _STOP:
            self._begin_stop()
        elif isinstance(item, Hashed):
            self._hashed(item)
        elif isinstance(item, _Call):
            self._flush()
            self._run_call(item)
        elif self._stopping or self.disk.reason is not None:
            # The next start, or the end of the pause, reconciles what this would have done.
            if isinstance(item, Reconcile) and not item.done.done():
                item.done.set_result(item)
        elif isinstance(item, Reconcile):
            self._flush()
            self._reconcile(item)
        elif isinstance(item, Change):
            self._flush()  # keep the order: earlier results are stored before this change
            self._apply(item)

    def _run_call(self, call: _Call) -> None:
        if not call.future.set_running_or_notify_cancel():
            return
        try:
            call.future.set_result(call.function(self.index))
        except BaseException as exc:  # handed to the caller, who reports it
            call.future.set_exception(exc)

    def _begin_stop(self) -> None:
        self._stopping = True
        self.hashing.stop()

    # Changes

    def _apply(self, change: Change) -> None:
        kind = change.kind
        if kind == ChangeKind.FILE:
            self._consider(change.path)
        elif kind == ChangeKind.GONE:
            if self.index.remove(change.path):
                self.stats.removed += 1
        elif kind == ChangeKind.MOVE:
            self._move_file(change.path, change.dest)
        elif kind == ChangeKind.MOVE_DIR:
            self.stats.moved += self.index.move(change.path, change.dest)
            self._scan(change.dest)  # files that were not indexed under the old name
        elif kind == ChangeKind.GONE_DIR:
            self.stats.removed += self.index.remove_under(change.path)
        elif kind == ChangeKind.SCAN:
            self._scan(change.path)
        elif kind in (ChangeKind.RECONCILE, ChangeKind.ROOT_GONE):
            log.debug("%s is handled by the service", kind)

    def _move_file(self, src: bytes, dest: bytes) -> None:
        record = self.index.get(src)
        if record is None:  # a temporary name, or not indexed yet: the new name is new
            self._consider(dest)
            return
        self.stats.moved += self.index.move(src, dest)
        if src in self.hashing:
            self._consider(dest)  # it was changing under the old name as it moved
            return
        try:
            st = os.stat(dest)
        except OSError:
            return
        if not self.index.is_current(dest, st):
            self._consider(dest)

    def _scan(self, folder: bytes) -> None:
        for path, _st in walk(folder, ignore=self.ignore, on_error=_log_walk_error):
            self._consider(path)

    def _consider(self, path: bytes) -> bool:
        """Queue `path` for hashing unless the index already has its current stat.

        Only regular files: a symbolic link is not followed (as in walk()), it could lead
        out of the watched folders or loop; a FIFO or device is never opened.
        """
        if path in self.hashing:
            return True  # its result is checked against the file's stat when it comes back
        try:
            st = os.lstat(path)
        except OSError:
            return False  # gone already; its deletion has an event of its own
        if not stat.S_ISREG(st.st_mode):
            return False
        if self.index.is_current(path, st):
            self.stats.unchanged += 1
            return False
        self.hashing.add(path)
        return True

    def _reconcile(self, job: Reconcile) -> None:
        try:
            found = plan(self.index, job.folders, ignore=self.ignore)
            job.removed = self.index.remove_many(found.gone)
        except Exception as exc:
            job.done.set_result(job)  # whoever waits for it (READY) must not wait forever
            if is_disk_full(exc, self.index.path):
                raise  # pauses; the end of the pause reconciles again
            log.exception("reconciling %s failed", b", ".join(job.folders).decode(errors="replace"))
            return
        self.stats.removed += job.removed
        job.unchanged = found.unchanged
        for path in found.to_hash:
            if self._consider(path):
                job.left.add(path)
        job.total = len(job.left)
        self._reconciles.append(job)
        self._finish_reconciles()

    def _finish_reconciles(self) -> None:
        for job in [j for j in self._reconciles if not j.left or self._stopping]:
            self._reconciles.remove(job)
            if not job.done.done():
                job.done.set_result(job)

    # Hashing

    def _hashed(self, done: Hashed) -> None:
        taken = self.hashing.take(done)
        if taken is None:
            return  # forgotten already, or hashed again after a crash
        outcome = taken.outcome
        if isinstance(outcome, Fingerprint) and taken.st is not None:
            if self._check_and_batch(taken.path, outcome, taken.st):
                return  # settled once it is stored
        elif isinstance(outcome, FingerprintError):
            self._failed(outcome, taken.st)
        self._settle(taken.path)

    def _check_and_batch(self, path: bytes, fp: Fingerprint, st_before: os.stat_result) -> bool:
        """Batch the result if the file is still what was read; True when batched."""
        try:
            st_now = os.lstat(path)
        except OSError:
            return False  # deleted or moved away while it was hashed; its own event follows
        if _stat_key(st_now) != _stat_key(st_before):
            self._consider(path)  # rewritten while it was read: hash the new content
            return False
        if not self._batch:
            self._batch_started = time.monotonic()
        self._batch.append((path, fp, st_before))
        try:
            self._prefetch.start([(path, fp, st_before)])
        except Exception:  # only a head start: the writing decodes what is missing
            log.exception("could not start the pixel digests of %s", os.fsdecode(path))
        return True

    def _check_deadlines(self) -> None:
        """Files their workers hold long past the time limit: reported as timed out (the
        hashing queue kills the processes and hands the other files to new ones)."""
        late = self.hashing.overdue()
        for _path, error, st in late:
            self._failed(error, st)
        self._settle(*(path for path, _error, _st in late))

    def _pause(self, error: Exception) -> None:
        """The index's disk is full: stop indexing (reads go on) and forget the work in hand.
        Nothing is lost: the files are on disk, and the end of the pause reconciles them."""
        self.disk.pause(error)
        self.hashing.clear()
        self._batch.clear()
        for job in self._reconciles:
            if not job.done.done():
                job.done.set_result(job)
        self._reconciles.clear()

    def _failed(self, error: FingerprintError, st: os.stat_result | None = None) -> None:
        if isinstance(error, MissingFile):
            return  # deleted before it could be read: nothing to say
        log.warning("%s", error)
        path = os.fsencode(error.path)
        if self.index.get(path) is not None and self.index.remove(path):
            self.stats.removed += 1  # its old fingerprint no longer describes it
        if st is not None:  # not read again, at a restart either, until it changes
            self.index.record_failures([(path, st, error.reason)])
        # Counted once recorded: whoever sees the count can find the failure in the index.
        self.stats.failed += 1
        self.stats.last_failures.append(str(error))

    def _settle(self, *paths: bytes) -> None:
        """These paths are done (stored, failed or gone): a reconciliation may be complete."""
        if self._reconciles:
            done = [path for path in paths if path not in self.hashing]
            for job in self._reconciles:
                job.left.difference_update(done)
            self._finish_reconciles()

    def _flush(self) -> None:
        if not self._batch:
            return
        batch = self._batch
        paths = [path for path, _fp, _st in batch]
        try:
            self._prefetch.provide()
            results = self.index.put_many(batch)
            self.stats.hashed += len(results)
            for result in results:
                if result.matches:
                    self.stats.alerts += 1
                    try:
                        self.on_duplicate(result)
                    except Exception:
                        log.exception("announcing a duplicate failed")
        except DupwatchError as exc:
            log.error("could not store %d files: %s", len(batch), exc)
        finally:
            # Left in the queue's length until announced: an empty queue means all is told.
            self._batch = []
        self._settle(*paths)  # after the counters: READY may follow at once


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _log_walk_error(folder: bytes, error: OSError) -> None:
    log.warning("%s: cannot list folder: %s", os.fsdecode(folder), error.strerror)
