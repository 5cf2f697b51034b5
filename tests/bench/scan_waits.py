"""Where a command's processes spend their time: on a CPU, waiting for one, or blocked.

    python tests/bench/scan_waits.py dupwatch scan DIR --index /tmp/new-index --json

Runs the command and polls /proc/PID/task/*/schedstat of it and every process below it
(the forkserver, the hashing processes) every 50 ms. For each process: its life, its CPU
time, its time runnable but waiting for a CPU (other load on the machine: the shared cores
this project is developed on), and the rest, blocked: waiting for work, I/O or a lock. A
pipeline that keeps every core busy has hashing processes that are never blocked, whatever
the load; their blocked share is the figure to compare, not the wall time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

POLL_S = 0.05


@dataclass
class Seen:
    first: float
    last: float
    name: str
    threads: dict[str, tuple[int, int]] = field(default_factory=dict)  # ns on CPU, in queue

    @property
    def cpu_s(self) -> float:
        return sum(run for run, _wait in self.threads.values()) / 1e9

    @property
    def queued_s(self) -> float:
        return sum(wait for _run, wait in self.threads.values()) / 1e9

    @property
    def blocked_s(self) -> float:
        return max(0.0, self.last - self.first - self.cpu_s - self.queued_s)


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        children.setdefault(parent, []).append(int(name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def sample(pid: int, seen: dict[int, Seen], now: float) -> None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            name = f.read().replace(b"\0", b" ")[:70].decode(errors="replace")
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    entry = seen.setdefault(pid, Seen(now, now, name))
    entry.last = now
    for task in tasks:  # a thread that ended keeps its last sample
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                run, wait, _slices = f.read().split()
        except OSError:
            continue
        entry.threads[task] = (int(run), int(wait))


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    seen: dict[int, Seen] = {}
    started = time.monotonic()
    child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
    while child.poll() is None:
        now = time.monotonic()
        for pid in descendants(child.pid):
            sample(pid, seen, now)
        time.sleep(POLL_S)
    wall = time.monotonic() - started
    print(f"{'pid':>7} {'life s':>7} {'CPU s':>7} {'queued s':>8} {'blocked s':>9}  command")
    for pid, entry in sorted(seen.items()):
        if entry.cpu_s >= 0.05:
            print(f"{pid:>7} {entry.last - entry.first:7.2f} {entry.cpu_s:7.2f} "
                  f"{entry.queued_s:8.2f} {entry.blocked_s:9.2f}  {entry.name}")  # fmt: skip
    workers = [e for e in seen.values() if "multiprocessing" in e.name and e.cpu_s >= 1]
    life = sum(e.last - e.first for e in workers) or 1.0
    blocked = sum(e.blocked_s for e in workers)
    cpu = sum(e.cpu_s for e in seen.values())
    print(
        f"wall {wall:.2f} s, CPU {cpu:.2f} s (all processes), {os.cpu_count()} cores; "
        f"hashing processes blocked {blocked:.2f} s of {life:.2f} s ({blocked / life:.0%})"
    )


if __name__ == "__main__":
    main()
