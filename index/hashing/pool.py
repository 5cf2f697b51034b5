"""Fingerprinting many files in worker processes, each file within its time limit and each
process within its memory cap (limits.py), with a hard deadline per file behind both: a
decoder stuck inside one C call never returns to take the timer's signal, so its processes
are killed, the file is reported as timed out, and the others are handed to new ones.

Starts processes (and the thread concurrent.futures keeps for them) only in map_bounded.
"""

from __future__ import annotations

import concurrent.futures
import functools
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from dupwatch.index.errors import FingerprintError, UnreadableFile
from dupwatch.index.fingerprint.file import Fingerprint
from dupwatch.index.hashing.limits import (
    HARD_GRACE_S,
    HASH_TIMEOUT_S,
    HASHING_MODULES,
    WORKER_MEMORY_BYTES,
    init_process,
    timed_out,
)
from dupwatch.index.hashing.tasks import hash_file

POOL_THRESHOLD = 8  # fewer files than this are hashed in-process: a pool costs more to start
# Files handed to each worker at once: the next one is already there when a worker finishes,
# instead of a round trip through this process (~40% of the time of a 12 MP JPEG with 1).
PREFETCH = 2

Outcome = tuple[bytes, Any, "os.stat_result | None"]  # (path, Fingerprint or error, stat)


def hash_all(
    paths: list[bytes], *, workers: int | None = None, timeout_s: float = HASH_TIMEOUT_S
) -> Iterable[tuple[bytes, Fingerprint | FingerprintError, os.stat_result | None]]:
    """Fingerprint files, in worker processes when there are enough of them.

    In-process, each file has the time limit (on the main thread) but no memory cap: the
    cap would count this process's LMDB map. Workers have both (limits.py).
    """
    if len(paths) < POOL_THRESHOLD or workers == 1:
        yield from (hash_file(path, timeout_s) for path in paths)
        return
    workers = workers or os.cpu_count() or 1
    task = functools.partial(hash_file, timeout_s=timeout_s)
    yield from map_bounded(task, paths, workers=workers, timeout_s=timeout_s)


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
    process dies twice gets UnreadableFile.
    """
    pending = list(reversed(paths))  # popped from the end: first path first
    crashes: dict[bytes, int] = {}
    context = multiprocessing.get_context("forkserver")  # never inherit an open LMDB map
    context.set_forkserver_preload(list(HASHING_MODULES))  # once, in the server the workers fork
    while pending:
        pool = concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=context, initializer=init_process, initargs=(memory_bytes,)
        )
        try:
            yield from _drain(pool, task, pending, crashes, workers, (timeout_s, grace_s))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _drain(
    pool: concurrent.futures.ProcessPoolExecutor,
    task: Callable[[bytes], Outcome],
    pending: list[bytes],
    crashes: dict[bytes, int],
    workers: int,
    limits: tuple[float, float],
) -> Iterator[Outcome]:
    """Run `pending` in `pool` until it is empty or the pool breaks (then return: the
    caller starts another pool for what is left). Each worker has at most PREFETCH files in
    flight, so a file waits behind at most PREFETCH - 1 others and its hard deadline, from
    its submission, is PREFETCH times the limit of one file."""
    timeout_s, grace_s = limits
    deadline_s = (timeout_s + grace_s) * PREFETCH
    in_flight: dict[concurrent.futures.Future[Outcome], tuple[bytes, float]] = {}
    while pending or in_flight:
        while pending and len(in_flight) < workers * PREFETCH:
            path = pending.pop()
            in_flight[pool.submit(task, path)] = (path, time.monotonic())
        oldest = min(started for _path, started in in_flight.values())
        wait_s = max(0.0, oldest + deadline_s - time.monotonic())
        done, _ = concurrent.futures.wait(
            in_flight, timeout=wait_s, return_when=concurrent.futures.FIRST_COMPLETED
        )
        broken = False
        for future in done:
            path, _started = in_flight.pop(future)
            if isinstance(future.exception(), BrokenProcessPool):
                broken = True
                yield from _after_crash(path, pending, crashes)
            elif future.exception() is not None:
                error = future.exception()
                yield path, FingerprintError(path, f"fingerprinting failed: {error!r}"), None
            else:
                yield future.result()
        now = time.monotonic()
        late = [f for f, (_path, started) in in_flight.items() if now - started > deadline_s]
        if late:
            for future in late:
                path, _started = in_flight.pop(future)
                yield path, timed_out(path, timeout_s), _lstat(path)
            kill_workers(pool)
            broken = True
        if broken:
            pending.extend(path for path, _started in in_flight.values())  # innocent: again
            return


def _after_crash(path: bytes, pending: list[bytes], crashes: dict[bytes, int]) -> Iterator[Outcome]:
    crashes[path] = crashes.get(path, 0) + 1
    if crashes[path] >= 2:
        yield path, UnreadableFile(path, "the hashing process died while reading it"), _lstat(path)
    else:
        pending.append(path)


def kill_workers(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """SIGKILL the pool's processes (a decoder stuck in C ignores everything else)."""
    # concurrent.futures has no public way to end one task: its processes are all there is.
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            process.kill()
        except (OSError, ValueError, AttributeError):
            continue  # already gone


def _lstat(path: bytes) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None
