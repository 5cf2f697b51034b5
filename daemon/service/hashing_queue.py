"""The writer's files to hash: what waits, what is in the hashing processes, and what happens
when a task overruns its deadline or its process dies.

A burst of arrivals goes to the processes in batches (engine.batch_size: one round trip for
several files), a lone arrival alone and at once, so that its alert never waits for others.
The blame stays per file: the files of a batch that crashed or overran go one per task from
then on, so that the file that did it is found by itself; a file in hand at two crashes is
reported as unreadable, a task of one file past its deadline as timed out.

Only the writer thread calls it; the outcomes come back from the pool's thread through
`deliver` (which puts them on the writer's queue), one `Hashed` per file.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from dupwatch.daemon.service.hashers import Hashers
from dupwatch.index.errors import FingerprintError, UnreadableFile
from dupwatch.index.fingerprint.file import Fingerprint
from dupwatch.index.hashing.engine import batch_size
from dupwatch.index.hashing.limits import HARD_GRACE_S, TimedOut, timed_out
from dupwatch.index.hashing.tasks import hash_batch

log = logging.getLogger(__name__)

SUBMIT_PER_WORKER = 4  # tasks handed to the pool ahead; the rest wait here, cheap to cancel


@dataclass(frozen=True, slots=True)
class Hashed:
    """The outcome of one file, as it comes back from a hashing process."""

    path: bytes
    outcome: Fingerprint | FingerprintError | None  # None: cancelled at shutdown
    st: os.stat_result | None
    future: Future[Any] | None = None  # which submission: a path may be submitted again


_BROKEN: Any = object()  # the outcome of a hash whose worker process died


class HashingQueue:
    """The files the writer has to hash, at most `workers` * SUBMIT_PER_WORKER tasks of them
    in `hashers`' processes at once; each outcome goes to `deliver` (from the pool's
    thread), then through take() (in the writer's)."""

    def __init__(self, hashers: Hashers, *, workers: int, deliver: Callable[[Hashed], None]):
        self.hashers = hashers
        self.deliver = deliver
        self.workers = max(1, workers)
        self.max_tasks = self.workers * SUBMIT_PER_WORKER
        self.waiting: deque[bytes] = deque()  # to hash, not yet given to the pool
        self.submitted: dict[bytes, Future[Any]] = {}  # a burst's files share a task
        self._tasks: dict[Future[Any], list[bytes]] = {}  # the files of each task
        self._running_since: dict[Future[Any], float] = {}  # task -> first seen running
        self._alone: set[bytes] = set()  # in hand at a crash or an overrun: one per task now
        self._known: set[bytes] = set()  # waiting or submitted: never hash one path twice at once
        self._crashes: dict[bytes, int] = {}  # path -> pools that broke while it was hashed
        self._stopping = False

    def __contains__(self, path: bytes) -> bool:
        """Whether `path` waits or is being hashed (its outcome is still to come)."""
        return path in self._known

    def __len__(self) -> int:
        return len(self._known)

    def add(self, path: bytes) -> None:
        self._known.add(path)
        self.waiting.append(path)

    def is_burst(self) -> bool:
        """More than one file waits or is in hand: a batch of results may wait for others."""
        return bool(self.waiting) or len(self.submitted) > 1

    def pump(self) -> None:
        """Hand tasks to the pool, from the front of the queue, until it holds enough."""
        while self.waiting and len(self._tasks) < self.max_tasks:
            # Taken off only once submitted: a failure loses nothing.
            paths = self._next_task()
            future = self.hashers.submit(hash_batch, paths)
            if future is None:
                return  # no processes to take it now; tried again a little later
            for path in paths:
                self.waiting.popleft()
                self.submitted[path] = future
            self._tasks[future] = paths
            future.add_done_callback(self._result_callback(paths))

    def _next_task(self) -> list[bytes]:
        """The files of the next task: as many as batch_size allows for the burst waiting,
        none that must go alone."""
        first = self.waiting[0]
        if first in self._alone:
            return [first]
        size = batch_size(len(self.waiting), self.workers)
        paths = []
        for path in itertools.islice(self.waiting, size):
            if path in self._alone:
                break
            paths.append(path)
        return paths

    def _result_callback(self, paths: list[bytes]) -> Callable[[Future[Any]], None]:
        def deliver(future: Future[Any]) -> None:  # runs in the pool's thread
            if future.cancelled():
                outcomes: list[Any] = [(path, None, None) for path in paths]
            elif isinstance(future.exception(), BrokenProcessPool):
                outcomes = [(path, _BROKEN, None) for path in paths]
            elif future.exception() is not None:
                error = future.exception()
                outcomes = [
                    (path, FingerprintError(path, f"hashing failed: {error}"), None)
                    for path in paths
                ]
            else:
                outcomes = future.result()
            for outcome in outcomes:
                self.deliver(Hashed(*outcome, future=future))

        return deliver

    def take(self, done: Hashed) -> Hashed | None:
        """A file's outcome is back: what the writer does with it, or None when there is
        nothing to do (an outcome of a submission since forgotten, or a crash: the file is
        hashed again; at its second crash it comes back as UnreadableFile)."""
        future = self.submitted.get(done.path)
        if future is None or future is not done.future:
            return None  # cancelled, timed out or dropped for a full disk: already forgotten
        del self.submitted[done.path]
        self._forget_task(future)
        self._known.discard(done.path)
        self._alone.discard(done.path)  # a crash puts it back (_after_crash)
        if done.outcome is _BROKEN:
            return self._after_crash(done.path, future)
        return done

    def _forget_task(self, future: Future[Any]) -> None:
        paths = self._tasks.get(future)
        if paths is not None and not any(self.submitted.get(p) is future for p in paths):
            del self._tasks[future]
            self._running_since.pop(future, None)

    def _after_crash(self, path: bytes, future: Future[Any]) -> Hashed | None:
        """Hash again in a new pool, alone; a file in hand at two crashes is reported."""
        if self.hashers.broke_after(future):
            self.hashers.replace()
        crashes = self._crashes[path] = self._crashes.get(path, 0) + 1
        if crashes >= 2 or self._stopping:
            self._crashes.pop(path, None)
            error = UnreadableFile(path, "the hashing process died while reading it")
            return Hashed(path, error, None, future)
        self._known.add(path)
        self._alone.add(path)  # the one that crashed it is then found by itself
        self.waiting.append(path)
        return None

    def overdue(self) -> list[tuple[bytes, TimedOut, os.stat_result | None]]:
        """The files alone in a task that its process holds long past the time limit (a
        decoder stuck inside C never takes the timer's signal), as TimedOut, forgotten: the
        processes are killed and the other files in hand go to new ones (those of an overdue
        batch one per task, so that the one that hangs is found alone)."""
        now = time.monotonic()
        timeout_s = self.hashers.hash_timeout_s
        grace_s = min(HARD_GRACE_S, timeout_s)
        late: list[bytes] = []  # files alone in a task that overran: timed out
        suspects: list[bytes] = []  # files of a batch that overran: one per task from now
        for future, paths in self._tasks.items():
            if future.running():  # in a worker, or next in line for one
                started = self._running_since.setdefault(future, now)
                # A task may wait for a worker whose task runs to its own limits first.
                if now - started > (len(paths) + 1) * timeout_s + grace_s:
                    held = [p for p in paths if self.submitted.get(p) is future]
                    (late if len(paths) == 1 else suspects).extend(held)
        if not late and not suspects:
            return []
        log.warning("hashing %d file(s) overran the time limit; killing the hashing processes",
                    len(late) + len(suspects))  # fmt: skip
        others = [path for path in self.submitted if path not in late]
        self._alone.update(suspects)
        self.submitted.clear()
        self._tasks.clear()
        self._running_since.clear()
        self.waiting.extendleft(reversed(others))  # still known: hashed by the new pool
        self.hashers.kill()
        for path in late:
            self._known.discard(path)
            self._alone.discard(path)
        return [(path, timed_out(path, timeout_s), _lstat(path)) for path in late]

    def stop(self) -> None:
        """Drop what waits and the tasks not started; the ones in hand finish."""
        self._stopping = True
        self.waiting.clear()
        for future, paths in list(self._tasks.items()):
            if future.cancel():  # not started: drop it
                del self._tasks[future]
                for path in paths:
                    if self.submitted.get(path) is future:
                        del self.submitted[path]
        self._known = set(self.submitted)

    def clear(self) -> None:
        """Forget everything, in hand or waiting (the disk is full: reconciled later)."""
        for future in self._tasks:
            future.cancel()
        self.submitted.clear()
        self._tasks.clear()
        self._running_since.clear()
        self._alone.clear()
        self.waiting.clear()
        self._known.clear()


def _lstat(path: bytes) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None
