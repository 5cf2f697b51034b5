"""The hashing processes the writer feeds: a process pool, started again when a worker dies
(killed, or crashed in a decoder) and tried again a little later when starting one fails; the
pixel digests a burst's writing will need, made there ahead of the write; and the one-off jobs
of queries (a fingerprint, a pixel digest), which run there too, so that a decode has its time
and memory limits and a crash costs a worker, not the service.

Pool changes happen in the writer thread; `run` may be called from any thread and asks the
writer (through `in_writer`) to replace a pool it finds broken.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from dupwatch.index.errors import UnreadableFile
from dupwatch.index.hashing.engine import DonePixels, PixelJob
from dupwatch.index.hashing.limits import HARD_GRACE_S, timed_out
from dupwatch.index.hashing.pool import kill_workers
from dupwatch.index.hashing.tasks import digest_batch

log = logging.getLogger(__name__)

T = TypeVar("T")

POOL_RETRY_S = 1.0  # after hashing processes failed to start


class Hashers:
    """The pool of hashing processes (`new_pool()` makes one), each job within
    `hash_timeout_s`."""

    def __init__(self, new_pool: Callable[[], Executor], hash_timeout_s: float) -> None:
        self.new_pool = new_pool
        self.hash_timeout_s = hash_timeout_s
        self.pool = new_pool()
        self.retry_at: float | None = None  # set while new processes fail to start

    def submit(self, job: Callable[..., Any], paths: list[bytes]) -> Future[Any] | None:
        """Hand `job(paths, hash_timeout_s)` to a process; None when no pool can take it now
        (a broken pool is replaced once; if that fails too, it is tried again later)."""
        if self.retry_at is not None and time.monotonic() < self.retry_at:
            return None
        for attempt in range(2):
            try:
                return self.pool.submit(job, paths, self.hash_timeout_s)
            except Exception as error:  # a broken pool, or a forkserver killed mid-start
                if attempt:
                    self._retry_later(error)
                elif not self.replace():
                    return None  # replace() set when to try again
        return None

    def pixel_digests(self, paths: list[bytes]) -> PixelJob:
        """Start the pixel digests of `paths` in a process (for prefetch.PixelPrefetch); a
        pool that cannot take them gives none: the writing decodes them itself."""
        try:
            future = self.pool.submit(digest_batch, paths, self.hash_timeout_s)
        except Exception:  # a broken pool: the writing decodes them (in a new one)
            return DonePixels({})
        return _PixelTask(future, 2 * len(paths) * self.hash_timeout_s + HARD_GRACE_S)

    def retry_in_s(self) -> float | None:
        """How long until starting processes is tried again; None when nothing waits."""
        return None if self.retry_at is None else max(0.0, self.retry_at - time.monotonic())

    def replace(self) -> bool:
        """Start a fresh pool after a worker died; False when that failed too (submit tries
        again a little later)."""
        log.warning("a hashing process died; starting new ones")
        self.pool.shutdown(wait=False, cancel_futures=True)
        try:
            self.pool = self.new_pool()
        except Exception as error:
            self._retry_later(error)
            return False
        self.retry_at = None
        return True

    def replace_if_broken(self) -> None:
        pool = self.pool  # ProcessPoolExecutor's own flags: broken, or shut down
        if getattr(pool, "_broken", False) or getattr(pool, "_shutdown_thread", False):
            self.replace()

    def broke_after(self, future: Future[Any]) -> bool:
        """True when `future` ended with this pool broken (not an older one, since replaced)."""
        return future.done() and getattr(self.pool, "_broken", True)

    def kill(self) -> None:
        """SIGKILL every process (a decoder stuck in C ignores everything else), then start
        new ones."""
        kill_workers(self.pool)
        self.replace()

    def shutdown(self, *, wait: bool) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=True)

    def run(self, job: Callable[[bytes, float], T], path: bytes, in_writer: Callable) -> T:
        """`job(path, hash_timeout_s)` in a hashing process, waited for (any thread).

        Raises TimedOut past the limit, UnreadableFile when the processes die three times.
        """
        for _ in range(3):
            try:
                future = self.pool.submit(job, path, self.hash_timeout_s)
                return future.result(2 * self.hash_timeout_s + HARD_GRACE_S)
            except (BrokenProcessPool, RuntimeError):
                # Broken before or while this file was in hand (a worker was killed, or this
                # file crashed it). An idle writer has no file of its own to notice it by.
                in_writer(lambda _index: self.replace_if_broken())
                time.sleep(POOL_RETRY_S)
            except TimeoutError:
                future.cancel()
                raise timed_out(path, self.hash_timeout_s) from None
        raise UnreadableFile(path, "the hashing processes died while reading it, three times")

    def _retry_later(self, error: Exception) -> None:
        log.warning("cannot start hashing processes (%s); trying again in %g s",
                    error, POOL_RETRY_S)  # fmt: skip
        self.retry_at = time.monotonic() + POOL_RETRY_S


class _PixelTask:
    """Pixel digests being made in a process, waited for at most `limit_s`."""

    def __init__(self, future: Future[Any], limit_s: float) -> None:
        self._future = future
        self._limit_s = limit_s

    def result(self) -> dict[bytes, bytes | None]:
        try:
            return dict(self._future.result(self._limit_s))
        except Exception:  # broken or stuck: the writing decodes them itself
            self._future.cancel()
            return {}
