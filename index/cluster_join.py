"""The self-join (store/selfjoin.py) on the workers of a Dask cluster: every pair of hashes
within a radius, for `groups --radius`, `check --repair` and their recompute of the pairs.

The hashes go to every worker once (8 bytes each); the join is cut into independent parts
(selfjoin.join_parts: a substring and some of its masks), and each part runs as a task that
sorts the hashes by its substring (kept for the worker's next part of the same substring)
and sends its pairs back. A pair comes out of exactly one part, so the union of the parts
is the local join's result. A few tasks per worker thread are in hand at a time, so the
pairs waiting in this process stay a few parts' worth. A part whose worker is lost runs
again elsewhere (the scheduler), and a part that still fails is submitted again, twice;
after that the join fails with a ClusterError, since a join without a part is incomplete.

Memory on a worker: the hashes, one substring's sort (~24 bytes a hash) and one part's
pairs. Imports `distributed` when a join runs, not before.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from dupwatch.index.hashing.cluster import RESUBMITS, TASKS_PER_THREAD, ClusterError, connect
from dupwatch.index.store.multi_index import Layout
from dupwatch.index.store.selfjoin import SortedRuns, gathered, join_part, join_parts

PARTS_PER_THREAD = 8  # parts per worker thread: a slow or lost one holds back little


class ClusterJoin:
    """pair_table.Join on the Dask cluster whose scheduler is at `address`: connects when a
    join runs (a command that finds its pairs stored needs no cluster)."""

    def __init__(self, address: str) -> None:
        self.address = address

    def __call__(self, bits: np.ndarray, radius: int) -> Iterator[tuple[np.ndarray, ...]]:
        """Batches of GATHERED pairs or more (a, b, distance), as pair_table.Join asks."""
        return gathered(self._parts(bits, radius))

    def _parts(self, bits: np.ndarray, radius: int) -> Iterator[tuple[np.ndarray, ...]]:
        """Each part's pairs, as the parts finish."""
        bits = np.ascontiguousarray(bits, dtype=np.uint64)
        if len(bits) < 2:
            return
        client, threads = connect(self.address)
        import distributed  # connect() found it

        widths = Layout.for_size(len(bits)).widths
        parts = list(reversed(join_parts(widths, radius, threads * PARTS_PER_THREAD)))
        tries: dict[Any, tuple[tuple[int, tuple[int, ...]], int]] = {}
        finished = distributed.as_completed()
        shared = None
        try:
            shared = client.scatter(bits, broadcast=True, hash=False)

            def submit(part: tuple[int, tuple[int, ...]], attempt: int) -> None:
                substring, masks = part
                future = client.submit(
                    _join_remote, shared, shared.key, widths, radius, substring, masks,
                    pure=False,
                )  # fmt: skip
                tries[future] = (part, attempt)
                finished.add(future)

            def fill() -> None:
                while parts and len(tries) < threads * TASKS_PER_THREAD:
                    submit(parts.pop(), 0)

            fill()
            for future in finished:
                part, attempt = tries.pop(future)
                if future.status != "finished":
                    if attempt >= RESUBMITS:
                        raise ClusterError(
                            f"the self-join on the Dask cluster at {self.address} failed: "
                            f"{future.exception()!r}"
                        )
                    submit(part, attempt + 1)  # e.g. KilledWorker: its workers kept dying
                    continue
                a, b, distance = future.result()
                future.release()
                fill()
                if len(a):
                    yield a, b, distance
        finally:
            for future in tries:
                future.cancel()
            if shared is not None:
                with contextlib.suppress(Exception):  # a worker gone took its sort with it
                    client.run(_forget, shared.key)
            client.close()


# On the workers

_cached: dict[tuple[str, int], SortedRuns] = {}  # (hashes' key, substring): the last sort
_lock = threading.Lock()


def _join_remote(
    bits: np.ndarray,
    key: str,
    widths: tuple[int, ...],
    radius: int,
    substring: int,
    masks: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One part's pairs, (a, b, distance) arrays; the sort by its substring is kept."""
    with _lock:
        runs = _cached.get((key, substring))
        if runs is None:
            _cached.clear()  # one sort at a time: a worker's memory holds one
            runs = _cached[(key, substring)] = SortedRuns.of(bits, widths, substring)
    with _freed_memory_reused():
        batches = list(join_part(runs, radius, widths, substring, masks))
    if not batches:
        empty = np.zeros(0, dtype=runs.order.dtype)
        return empty, empty, np.zeros(0, dtype=np.uint8)
    return tuple(np.concatenate(column) for column in zip(*batches, strict=True))


# glibc's mallopt() parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_KEPT_BYTES = 32 << 20  # the largest mmap threshold glibc takes on 64 bits
_running = 0  # tasks inside _freed_memory_reused(), on this worker's threads


@contextlib.contextmanager
def _freed_memory_reused() -> Iterator[None]:
    """Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also fixes
    glibc's mmap threshold at 128 KiB: each of the join's temporary arrays (~1 MB a chunk) is
    then mapped afresh and faulted in page by page (at 1M hashes, radius 8: 8.1M page faults
    and 3.4x the CPU of the same join in a plain process). For the task, freed memory is
    kept for reuse; after the last running one, the worker's settings are back and the
    memory is returned."""
    global _running
    libc = _glibc() if "MALLOC_TRIM_THRESHOLD_" in os.environ else None
    if libc is None:  # glibc adapts its thresholds itself, unless told a value
        yield
        return
    with _lock:
        _running += 1
        libc.mallopt(_M_MMAP_THRESHOLD, _KEPT_BYTES)
        libc.mallopt(_M_TRIM_THRESHOLD, 8 * _KEPT_BYTES)
    try:
        yield
    finally:
        with _lock:
            _running -= 1
            if not _running:
                trim = os.environ["MALLOC_TRIM_THRESHOLD_"]
                mmap = os.environ.get("MALLOC_MMAP_THRESHOLD_", str(128 << 10))
                libc.mallopt(_M_TRIM_THRESHOLD, int(trim) if trim.isdigit() else 128 << 10)
                libc.mallopt(_M_MMAP_THRESHOLD, int(mmap) if mmap.isdigit() else 128 << 10)
                libc.malloc_trim(0)


def _glibc() -> Any:
    """glibc, when this process runs on it; None otherwise (musl, macOS)."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def _forget(key: str) -> None:
    """Drop a finished join's sort from a worker's memory."""
    with _lock:
        for cached in [k for k in _cached if k[0] == key]:
            del _cached[cached]
