"""What one file may cost to fingerprint: a time limit per file and a memory cap per process.

A hostile or broken file must end in a FingerprintError, never in a hung scan or an
out-of-memory machine. Three layers, cheapest first:

- `bounded(path, timeout_s)`: a SIGALRM timer interrupts a decode that runs too long (it
  fires between Python bytecodes, which Pillow's decoders return to every 64 KiB), and a
  MemoryError becomes OutOfMemory. Only the main thread can take signals; elsewhere the
  timer is skipped.
- `limit_memory(max_bytes)`: a worker process initializer capping its address space
  (RLIMIT_AS), so a decoder that asks for too much gets a MemoryError instead of memory.
  Never call it in a process that maps an LMDB index: the map counts against the cap.
- `map_bounded(task, paths, ...)`: worker processes with both, and a hard deadline per file
  behind them (a decoder stuck inside one C call never returns to take the signal): the
  processes are killed, the file is reported as timed out, the others are handed to new ones.

Starts processes (and the thread concurrent.futures keeps for them) only in map_bounded.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import logging
import multiprocessing
import os
import resource
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any

from dupwatch.index.errors import FingerprintError, UnreadableFile

log = logging.getLogger(__name__)

HASH_TIMEOUT_S = 30.0  # per file; a 12 MP photo takes ~25 ms, an 89 MP 16-bit PNG ~5 s
WORKER_MEMORY_BYTES = 4 << 30  # per hashing process: the largest allowed 16-bit PNG peaks ~2 GB
HARD_GRACE_S = 10.0  # past the time limit, before a process that ignores it is killed
# Files handed to each worker at once: the next one is already there when a worker finishes,
# instead of a round trip through this process (~40% of the time of a 12 MP JPEG with 1).
PREFETCH = 2
# What fingerprint() imports, scipy lazily (~1 s): loaded before the first file's clock starts.
HASHING_MODULES = ("dupwatch.index.fingerprint", "scipy.fftpack")

Outcome = tuple[bytes, Any, "os.stat_result | None"]  # (path, Fingerprint or error, stat)


class TimedOut(FingerprintError):
    """Fingerprinting the file took longer than the per-file time limit; it was skipped."""


class OutOfMemory(FingerprintError):
    """Decoding the file needed more memory than a hashing process may use."""


class _Expired(BaseException):
    """Raised by the timer; a BaseException so that no decoder's `except Exception` eats it."""


def init_process(memory_bytes: int | None, preload: tuple[str, ...] = HASHING_MODULES) -> None:
    """Worker initializer: import `preload`, then cap the address space at `memory_bytes`."""
    for name in preload:
        importlib.import_module(name)
    limit_memory(memory_bytes)


def limit_memory(max_bytes: int | None) -> None:
    """Cap this process's address space (soft RLIMIT_AS) at `max_bytes`; None leaves it."""
    if max_bytes is None:
        return
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        max_bytes = min(max_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (max_bytes, hard))


@contextmanager
def bounded(path: str | bytes | os.PathLike, timeout_s: float | None) -> Iterator[None]:
    """Raise TimedOut when the body runs past `timeout_s` (main thread only), and turn a
    MemoryError into OutOfMemory, both naming `path`."""
    timed = bool(timeout_s) and threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGALRM, _expire) if timed else None
    try:
        try:
            if timed:
                signal.setitimer(signal.ITIMER_REAL, timeout_s)
            yield
        finally:
            if timed:  # disarmed inside the outer try: a last-moment alarm is still caught
                signal.setitimer(signal.ITIMER_REAL, 0)
    except _Expired:
        raise timed_out(path, timeout_s) from None
    except MemoryError:
        raise OutOfMemory(
            path, "decoding it needs more memory than a hashing process may use"
        ) from None
    finally:
        if timed:
            signal.signal(signal.SIGALRM, previous)


def timed_out(path: str | bytes | os.PathLike, timeout_s: float | None) -> TimedOut:
    return TimedOut(path, f"timed out: not fingerprinted within {timeout_s:g} s; skipped")


def _expire(signum: int, frame: object) -> None:
    raise _Expired


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
