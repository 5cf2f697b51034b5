"""What runs in the service's hashing processes besides the hashing itself: dying with the
service, and the memory cap.

Kept tiny on purpose: every worker imports this module (and not the service's).
"""

from __future__ import annotations

import os
import select
import threading
import time

from dupwatch.index.hashing.limits import init_process

POLL_S = 1.0


def init_worker(service_pid: int, memory_bytes: int | None) -> None:
    """Worker initializer: die with the service, and cap this process's address space so a
    hostile file ends in a MemoryError (OutOfMemory) rather than in the machine's OOM killer.
    What hashing imports is loaded first (the forkserver has usually done it already), so the
    first file's time limit is not spent importing scipy."""
    exit_with(service_pid)
    init_process(memory_bytes)


def exit_with(service_pid: int) -> None:
    """Worker initializer: end this process when the service process `service_pid` ends.

    A ProcessPoolExecutor worker holds its own call queue open, and every forkserver child
    keeps the forkserver alive, so a service killed with SIGKILL would leave its workers and
    forkserver behind forever. Under systemd the cgroup is killed whole; elsewhere, this.
    """
    threading.Thread(target=_watch, args=(service_pid,), name="exit-with", daemon=True).start()


def _watch(service_pid: int) -> None:
    try:
        pidfd = os.pidfd_open(service_pid)
    except (AttributeError, OSError):
        pidfd = None
    if pidfd is not None:
        select.select([pidfd], [], [])  # readable once the process has exited
        os._exit(0)
    while _alive(service_pid):
        time.sleep(POLL_S)
    os._exit(0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
