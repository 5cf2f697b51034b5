"""The Dask hashing engine: the workers of an existing Dask cluster hash the files by path.

`dupwatch scan --cluster tcp://scheduler:8786 DIR` (the optional extra `dupwatch[dask]`).
The workers read the files themselves, so the folders must be visible to every worker at
the same path (a network share mounted alike): check_visible() says up front which worker
cannot read which path. Batches of files go out as tasks, a few per worker thread in hand,
and the fingerprints stream back, a batch at a time, to the one writer in this process.

On a worker each task hashes in a child process of its own (child.ChildHasher), with
the same time limit per file and memory cap as a local scan, so an unreadable file comes
back as the same named FingerprintError. A worker lost mid-scan loses no file: the scheduler
runs its tasks again elsewhere (up to its allowed-failures); a task that still fails is
submitted again by this engine, twice, before its files are reported as failed.

Imports `distributed` when an engine is made, not before.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from dupwatch.index.errors import DupwatchError, FingerprintError, UnreadableFile
from dupwatch.index.hashing.engine import Outcome, PixelOutcome, batch_size
from dupwatch.index.hashing.limits import HARD_GRACE_S, HASH_TIMEOUT_S, WORKER_MEMORY_BYTES

TASKS_PER_THREAD = 2  # tasks in hand per worker thread: the next one is there when one ends
RESUBMITS = 2  # times a failed task is sent again before its files are reported
CHECKED_FILES = 3  # files read by every worker in the visibility check
CONNECT_TIMEOUT_S = 10


class ClusterError(DupwatchError):
    """The Dask cluster cannot be used: not reachable, not set up, or it cannot see the files."""


def connect(address: str) -> tuple[Any, int]:
    """A client of the Dask cluster whose scheduler is at `address`, and its worker threads;
    ClusterError when it cannot be used."""
    try:
        import distributed
    except ImportError:
        raise ClusterError(
            "working on a Dask cluster needs the `distributed` package: "
            "pip install 'dupwatch[dask]'"
        ) from None
    try:
        client = distributed.Client(address, timeout=CONNECT_TIMEOUT_S)
    except OSError as error:
        raise ClusterError(f"cannot reach the Dask scheduler at {address}: {error}") from None
    threads = sum(client.nthreads().values())
    if not threads:
        client.close()
        raise ClusterError(f"the Dask cluster at {address} has no workers")
    return client, threads


class DaskEngine:
    """Hash on the workers of the Dask cluster at `address` (its scheduler)."""

    def __init__(
        self,
        address: str,
        *,
        timeout_s: float | None = HASH_TIMEOUT_S,
        memory_bytes: int | None = WORKER_MEMORY_BYTES,
    ) -> None:
        self.client, self.workers = connect(address)
        import distributed  # connect() found it

        self._distributed = distributed
        self.address = address
        self.timeout_s = timeout_s
        self.memory_bytes = memory_bytes

    def __enter__(self) -> DaskEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    def check_visible(self, folders: Iterable[bytes], files: Iterable[bytes] = ()) -> None:
        """Raise ClusterError naming a worker and a path when some worker cannot list one of
        `folders` or read one of the first few `files`, or runs another hash version."""
        from dupwatch.index.fingerprint.file import HASH_PARAMS

        folders, sample = list(folders), list(files)[:CHECKED_FILES]
        answers = self.client.run(_visible_problems, folders, sample)
        for worker, (problem, params) in sorted(answers.items()):
            if problem is not None:
                path, reason = problem
                raise ClusterError(
                    f"the Dask worker {worker} cannot read {os.fsdecode(path)}: {reason}. The "
                    "workers read the files by path, so the folders must be visible to every "
                    "worker at the same path (e.g. a network share mounted alike)"
                )
            if params != HASH_PARAMS:
                raise ClusterError(
                    f"the Dask worker {worker} hashes with other parameters ({params}); "
                    "install the same dupwatch version on the workers"
                )

    def hash(self, paths: Iterable[bytes]) -> Iterator[list[Outcome]]:
        """Every path hashed on the cluster; batches of outcomes as they finish."""
        yield from self._map(_hash_remote, list(paths), _hash_failed)

    def pixel_digests(self, paths: list[bytes]) -> _PixelFuture:
        future = self.client.submit(
            _digest_remote, paths, self.timeout_s, self.memory_bytes, pure=False
        )
        return _PixelFuture(future)

    def _map(self, task: Any, paths: list[bytes], failed: Any) -> Iterator[list[Any]]:
        distributed = self._distributed
        pending = list(reversed(paths))  # popped from the end: first path first
        tries: dict[Any, tuple[list[bytes], int]] = {}
        finished = distributed.as_completed()

        def submit(batch: list[bytes], attempt: int) -> None:
            future = self.client.submit(task, batch, self.timeout_s, self.memory_bytes, pure=False)
            tries[future] = (batch, attempt)
            finished.add(future)

        def fill() -> None:
            while pending and len(tries) < self.workers * TASKS_PER_THREAD:
                size = batch_size(len(pending), self.workers)
                submit([pending.pop() for _ in range(min(size, len(pending)))], 0)

        try:
            fill()
            for future in finished:
                batch, attempt = tries.pop(future)
                if future.status == "finished":
                    outcomes = future.result()
                elif attempt < RESUBMITS:
                    submit(batch, attempt + 1)  # e.g. KilledWorker: its workers kept dying
                    continue
                else:
                    outcomes = [failed(path, future.exception()) for path in batch]
                future.release()
                fill()
                yield outcomes
        finally:
            for future in tries:
                future.cancel()


class _PixelFuture:
    def __init__(self, future: Any) -> None:
        self._future = future

    def result(self) -> dict[bytes, bytes | None]:
        try:
            return dict(self._future.result())
        except Exception:  # a failed task: the writer decodes them itself
            return {}


def _hash_failed(path: bytes, error: BaseException | None) -> Outcome:
    reason = f"hashing on the cluster failed: {error!r}"
    try:
        st: os.stat_result | None = os.lstat(path)
    except OSError:
        st = None
    return (path, UnreadableFile(path, reason), st)


# On the workers

_local = threading.local()  # one hashing child per worker thread


def _hasher(timeout_s: float | None, memory_bytes: int | None) -> Any:
    from dupwatch.index.hashing.child import ChildHasher

    hasher = getattr(_local, "hasher", None)
    if hasher is None or (hasher.timeout_s, hasher.memory_bytes) != (timeout_s, memory_bytes):
        hasher = _local.hasher = ChildHasher(timeout_s, memory_bytes, HARD_GRACE_S)
    return hasher


def _hash_remote(paths: list[bytes], timeout_s: float | None, memory_bytes: int | None) -> list:
    from dupwatch.index.hashing.child import HASH

    return _hasher(timeout_s, memory_bytes).run(HASH, paths)


def _digest_remote(
    paths: list[bytes], timeout_s: float | None, memory_bytes: int | None
) -> list[PixelOutcome]:
    from dupwatch.index.hashing.child import DIGEST

    return _hasher(timeout_s, memory_bytes).run(DIGEST, paths)


def _visible_problems(
    folders: list[bytes], files: list[bytes]
) -> tuple[tuple[bytes, str] | None, dict[str, Any]]:
    """On a worker: the first path it cannot list or read (with why), and its hash version."""
    from dupwatch.index.fingerprint.decode import read_bytes
    from dupwatch.index.fingerprint.file import HASH_PARAMS

    problem = None
    for folder in folders:
        try:
            os.listdir(folder)
        except OSError as error:
            problem = (folder, error.strerror or str(error))
            break
    if problem is None:
        for path in files:
            try:
                read_bytes(path)
            except FingerprintError as error:
                problem = (path, error.reason)
                break
    return problem, HASH_PARAMS
