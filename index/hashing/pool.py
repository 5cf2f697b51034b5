"""A pool of capped hashing processes: started from a clean forkserver (never forked from a
process with an LMDB map open), each with the memory cap of limits.py, and killed whole when
a decoder is stuck inside one C call (it never returns to take the timer's signal).

The local engine (local.py) and the service's writer feed such pools. Starts processes only
in new_pool().
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections.abc import Callable
from typing import Any

from dupwatch.index.hashing.limits import HASHING_MODULES, WORKER_MEMORY_BYTES, init_process

POOL_THRESHOLD = 8  # fewer files than this are hashed in-process: a pool costs more to start
# Tasks handed to each worker at once: the next one is already there when a worker finishes,
# instead of a round trip through this process (~40% of the time of a 12 MP JPEG with 1).
PREFETCH = 2


def new_pool(
    workers: int,
    *,
    memory_bytes: int | None = WORKER_MEMORY_BYTES,
    preload: tuple[str, ...] = HASHING_MODULES,
    initializer: Callable[..., None] = init_process,
    initargs: tuple[Any, ...] | None = None,
) -> concurrent.futures.ProcessPoolExecutor:
    """`workers` processes forked from a forkserver that imported `preload` once; each runs
    `initializer(*initargs)` (by default: the memory cap) before its first task."""
    context = multiprocessing.get_context("forkserver")  # never inherit an open LMDB map
    context.set_forkserver_preload(list(preload))  # once, in the server the workers fork
    return concurrent.futures.ProcessPoolExecutor(
        workers,
        mp_context=context,
        initializer=initializer,
        initargs=initargs if initargs is not None else (memory_bytes,),
    )


def kill_workers(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """SIGKILL the pool's processes (a decoder stuck in C ignores everything else)."""
    # concurrent.futures has no public way to end one task: its processes are all there is.
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            process.kill()
        except (OSError, ValueError, AttributeError):
            continue  # already gone
