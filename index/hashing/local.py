"""The local hashing engine: capped worker processes on this machine, fed batches of files;
and hashing many files with it (hash_all, map_bounded), in this process when they are few.

A thread of its own keeps the processes fed while the caller writes the index, so the single
writer is never what the workers wait for. Each worker has PREFETCH tasks in hand (the next
one is there when it finishes), each task is a batch of up to MAX_BATCH files, and the
outcomes come back a batch at a time.

The limits are those of limits.py: each file has its time limit (SIGALRM) and each process
its memory cap; behind them, a task still running long past the time limits of its files is
killed with its processes. Files of a task that was killed or whose process died are not
blamed as a batch: they are hashed again one per task, and a file whose process dies while
it is the only file in hand is reported as UnreadableFile, a file whose own task overruns as
TimedOut, as before batching.

Starts processes (and the threads that feed them) only in LocalEngine.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from dupwatch.index.errors import FingerprintError, UnreadableFile
from dupwatch.index.hashing.engine import DonePixels, Engine, Outcome, PixelJob, batch_size
from dupwatch.index.hashing.limits import (
    HARD_GRACE_S,
    HASH_TIMEOUT_S,
    HASHING_MODULES,
    WORKER_MEMORY_BYTES,
    init_process,
    timed_out,
)
from dupwatch.index.hashing.pool import POOL_THRESHOLD, PREFETCH, kill_workers, new_pool
from dupwatch.index.hashing.tasks import digest_batch, hash_batch, hash_file

log = logging.getLogger(__name__)

QUEUED_BATCHES = 64  # outcomes waiting for the writer; past this the feeding waits (memory)
POLL_S = 0.2  # how often the feeding thread looks up from its wait (to stop, to check deadlines)

BatchTask = Callable[[list[bytes], "float | None"], list[Outcome]]

# How far a file has come through the blame rules: in a batch, alone in a task (others in
# flight), or the only task in flight.
_BATCHED, _SINGLE, _ALONE = 0, 1, 2


@dataclass
class _Unit:
    paths: list[bytes]
    level: int = _BATCHED
    submitted: float = field(default_factory=time.monotonic)


class LocalEngine:
    """Worker processes on this machine (forked from a clean forkserver, never from a process
    with an LMDB map open), each with the memory cap; reused across calls, replaced when one
    dies. Use as a context manager, or close()."""

    def __init__(
        self,
        workers: int | None = None,
        *,
        timeout_s: float | None = HASH_TIMEOUT_S,
        memory_bytes: int | None = WORKER_MEMORY_BYTES,
        grace_s: float = HARD_GRACE_S,
        task: BatchTask = hash_batch,
        preload: tuple[str, ...] = HASHING_MODULES,
        initializer: Callable[..., None] = init_process,
        initargs: tuple[Any, ...] | None = None,
    ) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.timeout_s = timeout_s
        self.grace_s = grace_s
        self.task = task
        self._start_pool = functools.partial(
            new_pool,
            self.workers,
            memory_bytes=memory_bytes,
            preload=preload,
            initializer=initializer,
            initargs=initargs,
        )
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pool(self) -> concurrent.futures.ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = self._start_pool()
            return self._pool

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _discard_pool(self, pool: concurrent.futures.ProcessPoolExecutor, kill: bool) -> None:
        if kill:
            kill_workers(pool)
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=True, cancel_futures=True)

    # Hashing

    def check_visible(self, folders: Iterable[bytes], files: Iterable[bytes] = ()) -> None:
        """Nothing to check: the workers are on this machine."""

    def hash(self, paths: Iterable[bytes]) -> Iterator[list[Outcome]]:
        """Every path through `task` in the worker processes; batches of outcomes as they
        finish. Stopping early (closing the iterator, Ctrl-C) cancels what is not running."""
        out: queue.Queue[Any] = queue.Queue(QUEUED_BATCHES)
        stop = threading.Event()
        feeder = threading.Thread(
            target=self._feed, args=(list(paths), out, stop), name="dupwatch-hashing", daemon=True
        )
        feeder.start()
        try:
            while True:
                item = out.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while feeder.is_alive():  # drain, so that a full queue cannot block its exit
                try:
                    out.get(timeout=POLL_S)
                except queue.Empty:
                    pass

    def _feed(self, paths: list[bytes], out: queue.Queue[Any], stop: threading.Event) -> None:
        try:
            run = _Run(self, list(reversed(paths)), out, stop)
            run.drain()
        except BaseException as error:  # handed to the consumer
            out.put(error)
        else:
            out.put(None)

    # Pixel digests

    def pixel_digests(self, paths: list[bytes]) -> PixelJob:
        if not paths:
            return DonePixels({})
        try:
            future = self.pool.submit(digest_batch, paths, self.timeout_s)
        except (BrokenProcessPool, RuntimeError):
            return DonePixels({})  # the writer decodes them itself, as without an engine
        return _PixelFuture(future, self._hard_limit(len(paths)))

    def _hard_limit(self, files: int) -> float:
        return PREFETCH * (files * (self.timeout_s or HASH_TIMEOUT_S) + self.grace_s)


class _PixelFuture:
    def __init__(self, future: concurrent.futures.Future[Any], limit_s: float) -> None:
        self._future = future
        self._limit_s = limit_s

    def result(self) -> dict[bytes, bytes | None]:
        try:
            return dict(self._future.result(self._limit_s))
        except Exception:  # a broken pool, or stuck: the writer decodes them itself
            return {}


class _Run:
    """One hash() call: hand out tasks, collect outcomes, apply the deadlines and blame."""

    def __init__(
        self,
        engine: LocalEngine,
        pending: list[bytes],
        out: queue.Queue[Any],
        stop: threading.Event,
    ) -> None:
        self.engine = engine
        self.pending = pending  # batched files, popped from the end: first path first
        self.retry: deque[tuple[bytes, int]] = deque()  # (path, level) to run one per task
        self.out = out
        self.stop = stop
        self.in_flight: dict[concurrent.futures.Future[Any], _Unit] = {}

    def drain(self) -> None:
        while (self.pending or self.retry or self.in_flight) and not self.stop.is_set():
            pool = self.engine.pool
            self._submit(pool)
            done, _ = concurrent.futures.wait(
                self.in_flight,
                timeout=self._wait_s(),
                return_when=concurrent.futures.FIRST_COMPLETED,
            )
            broken = False
            ready: list[Outcome] = []
            for future in done:
                unit = self.in_flight.pop(future)
                error = future.exception()
                if isinstance(error, BrokenProcessPool):
                    broken = True
                    ready += self._after_crash(unit)
                elif error is not None:
                    ready += [
                        (p, FingerprintError(p, f"fingerprinting failed: {error!r}"), None)
                        for p in unit.paths
                    ]
                else:
                    ready += future.result()
            late, timed = self._late()
            if broken or late:
                for future, unit in list(self.in_flight.items()):  # innocent: again
                    self.in_flight.pop(future)
                    self._again(unit, crashed=broken)
                self.engine._discard_pool(pool, kill=late)
                ready += timed
            if ready:
                self._put(ready)
        if self.stop.is_set():
            for future in self.in_flight:
                future.cancel()

    def _put(self, outcomes: list[Outcome]) -> None:
        while not self.stop.is_set():
            try:
                self.out.put(outcomes, timeout=POLL_S)
                return
            except queue.Full:
                continue

    def _submit(self, pool: concurrent.futures.ProcessPoolExecutor) -> None:
        workers = self.engine.workers
        if any(unit.level == _ALONE for unit in self.in_flight.values()):
            return  # a suspect runs with nothing else in hand
        while self.retry and len(self.in_flight) < workers * PREFETCH:
            path, level = self.retry[0]
            if level == _ALONE and self.in_flight:
                return
            self.retry.popleft()
            self._start(pool, _Unit([path], level))
            if level == _ALONE:
                return
        while self.pending and len(self.in_flight) < workers * PREFETCH:
            size = batch_size(len(self.pending), workers)
            batch = [self.pending.pop() for _ in range(min(size, len(self.pending)))]
            self._start(pool, _Unit(batch))

    def _start(self, pool: concurrent.futures.ProcessPoolExecutor, unit: _Unit) -> None:
        try:
            future = pool.submit(self.engine.task, unit.paths, self.engine.timeout_s)
        except (BrokenProcessPool, RuntimeError):
            # Broken between two tasks (a worker killed while idle): the next pool takes it.
            self._again(unit, crashed=False)
            self.engine._discard_pool(pool, kill=False)
            return
        self.in_flight[future] = unit

    def _again(self, unit: _Unit, *, crashed: bool) -> None:
        """Run the unit's files again: a batch in hand at a crash one file per task, a
        single file in hand at a crash alone; otherwise (innocent) as they were."""
        if len(unit.paths) > 1:
            level = _SINGLE if crashed else _BATCHED
            if level == _BATCHED:
                self.pending.extend(reversed(unit.paths))
                return
            self.retry.extend((path, level) for path in unit.paths)
            return
        level = min(unit.level + 1, _ALONE) if crashed else unit.level
        if level == _BATCHED:
            self.pending.append(unit.paths[0])
        else:
            self.retry.append((unit.paths[0], level))

    def _after_crash(self, unit: _Unit) -> list[Outcome]:
        if unit.level == _ALONE:  # nothing else was in hand: this file killed its process
            path = unit.paths[0]
            return [(path, UnreadableFile(path, "the hashing process died while reading it"),
                     _lstat(path))]  # fmt: skip
        self._again(unit, crashed=True)
        return []

    def _deadline(self, unit: _Unit) -> float:
        timeout_s = self.engine.timeout_s or HASH_TIMEOUT_S
        return unit.submitted + PREFETCH * (len(unit.paths) * timeout_s + self.engine.grace_s)

    def _wait_s(self) -> float:
        if not self.in_flight:
            return 0.0
        soonest = min(self._deadline(unit) for unit in self.in_flight.values())
        return max(0.0, min(POLL_S, soonest - time.monotonic()))

    def _late(self) -> tuple[bool, list[Outcome]]:
        """Tasks past their hard deadline (True when there are any): a single file is
        reported as timed out, the files of a batch go back one per task (the one that hangs
        is then found alone)."""
        now = time.monotonic()
        any_late = False
        outcomes: list[Outcome] = []
        for future, unit in list(self.in_flight.items()):
            if now <= self._deadline(unit):
                continue
            any_late = True
            self.in_flight.pop(future)
            if len(unit.paths) == 1:
                path = unit.paths[0]
                outcomes.append((path, timed_out(path, self.engine.timeout_s), _lstat(path)))
            else:
                self.retry.extend((path, _SINGLE) for path in unit.paths)
        return any_late, outcomes


def _lstat(path: bytes) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


def hash_batches(
    paths: list[bytes],
    *,
    workers: int | None = None,
    timeout_s: float = HASH_TIMEOUT_S,
    engine: Engine | None = None,
) -> Iterator[list[Outcome]]:
    """Fingerprint files on `engine`, else in worker processes when there are enough of them
    (a LocalEngine of `workers`), else here; batches of outcomes as they finish.

    In-process, each file has the time limit (on the main thread) but no memory cap: the
    cap would count this process's LMDB map. Workers have both (limits.py).
    """
    if engine is not None:
        yield from engine.hash(paths)
    elif len(paths) < POOL_THRESHOLD or workers == 1:
        yield from ([hash_file(path, timeout_s)] for path in paths)
    else:
        with LocalEngine(workers, timeout_s=timeout_s) as local:
            yield from local.hash(paths)


def hash_all(
    paths: list[bytes], *, workers: int | None = None, timeout_s: float = HASH_TIMEOUT_S
) -> Iterator[Outcome]:
    """hash_batches() one outcome at a time."""
    for outcomes in hash_batches(paths, workers=workers, timeout_s=timeout_s):
        yield from outcomes


def map_bounded(
    task: Callable[[bytes], Outcome],
    paths: list[bytes],
    *,
    workers: int,
    timeout_s: float,
    memory_bytes: int | None = WORKER_MEMORY_BYTES,
    grace_s: float = HARD_GRACE_S,
) -> Iterator[Outcome]:
    """`task(path)` for every path in `workers` capped processes; outcomes as they complete.

    `task` should apply the soft limit itself (bounded()); a file still running `grace_s`
    after `timeout_s` gets TimedOut and its processes are replaced. A file in hand when a
    process dies, alone, gets UnreadableFile. The files go out in batches (LocalEngine).
    """
    each = functools.partial(_each, task)
    with LocalEngine(
        workers, timeout_s=timeout_s, memory_bytes=memory_bytes, grace_s=grace_s, task=each
    ) as engine:
        for outcomes in engine.hash(paths):
            yield from outcomes


def _each(task: Callable[[bytes], Outcome], paths: list[bytes], _timeout_s: float) -> list:
    return [task(path) for path in paths]
