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
- a hard deadline per file behind both (a decoder stuck inside one C call never returns to
  take the signal), kept by whatever feeds the hashing processes (the local engine, the
  child hasher of a Dask worker, the service's writer), which kills the processes and
  reports the file as timed out.

Starts no process and no thread.
"""

from __future__ import annotations

import importlib
import os
import resource
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from dupwatch.index.errors import FingerprintError

HASH_TIMEOUT_S = 30.0  # per file; a 12 MP photo takes ~25 ms, an 89 MP 16-bit PNG ~5 s
WORKER_MEMORY_BYTES = 4 << 30  # per hashing process: the largest allowed 16-bit PNG peaks ~2 GB
HARD_GRACE_S = 10.0  # past the time limit, before a process that ignores it is killed
# What fingerprint() imports, scipy lazily (~1 s): loaded before the first file's clock starts.
HASHING_MODULES = ("dupwatch.index.fingerprint.file", "scipy.fftpack")


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
