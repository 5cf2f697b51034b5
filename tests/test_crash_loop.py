"""Crash loop: the real service over a folder that keeps receiving files, killed with SIGKILL
at random moments many times in a row and restarted each time; once it settles, `dupwatch
check` passes and every file present is indexed exactly once, with the hash of its bytes.

DUPWATCH_CRASH_KILLS sets the number of kills (50 by default).
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from dupwatch.daemon.wire.client import DaemonNotRunning
from dupwatch.index import Index
from dupwatch.index.fingerprint import fingerprint

from support import TIMEOUT_S, Daemon, wait_for

KILLS = int(os.environ.get("DUPWATCH_CRASH_KILLS", "50"))
FEED_EVERY_S = 0.04  # one change to the folder this often while the service is being killed


class Feeder(threading.Thread):
    """Changes the watched folder all the time: mostly new small distinct PNGs, and renames,
    deletions and rewrites in place (so a hash can go stale) of the files already there."""

    def __init__(self, root: Path, seed: int) -> None:
        super().__init__(name="feeder", daemon=True)
        self.root = root
        self.rng = random.Random(seed)
        self.halt = threading.Event()
        self.made = 0
        self.changes = 0

    def run(self) -> None:
        while not self.halt.wait(FEED_EVERY_S):
            existing = sorted(self.root.iterdir())
            roll = self.rng.random()
            if roll < 0.7 or len(existing) < 10:
                self.png(self.root / f"f{self.made:05d}.png")
                self.made += 1
            elif roll < 0.8:
                victim = self.rng.choice(existing)
                victim.rename(self.root / f"r{self.changes:05d}.png")
            elif roll < 0.9:
                self.rng.choice(existing).unlink()
            else:
                self.png(self.rng.choice(existing))  # rewritten in place, not atomically
            self.changes += 1

    def png(self, path: Path) -> None:
        pixels = self.rng.randbytes(16 * 16 * 3)
        Image.frombytes("RGB", (16, 16), pixels).save(path, format="PNG")

    def stop(self) -> None:
        self.halt.set()
        self.join(TIMEOUT_S)


def running(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    instance = Daemon(Path(tempfile.mkdtemp(dir="/tmp", prefix="dwc")))
    yield instance
    if instance.process is not None:
        instance.kill()
    shutil.rmtree(instance.base, ignore_errors=True)


def test_sigkill_at_random_moments_loses_nothing(daemon: Daemon) -> None:
    rng = random.Random(50)
    feeder = Feeder(daemon.root, seed=51)
    feeder.start()
    orphans: list[int] = []
    kills_before_ready = 0
    try:
        for _ in range(KILLS):
            daemon.start(wait=False)
            if rng.random() < 0.5:  # at a random moment of the start: opening, reconciling...
                time.sleep(rng.uniform(0.0, 2.0))
                kills_before_ready += not daemon.is_ready()
            else:  # or while it runs, hashing what the feeder brings
                wait_for(daemon.is_ready, what="READY")
                time.sleep(rng.uniform(0.0, 0.5))
            orphans += daemon.kill()
    finally:
        feeder.stop()
    assert feeder.made > 100 and kills_before_ready > 0

    daemon.start(wait=False)
    present = sorted(p for p in daemon.root.iterdir())

    def settled() -> dict[str, Any] | None:
        try:
            status = daemon.status()
        except (DaemonNotRunning, OSError):  # not answering yet
            return None
        done = status["state"] == "ready" and status["queue"] == 0
        return status if done and status["files"] == len(present) else None

    wait_for(settled, what=f"{len(present)} files indexed after {KILLS} kills")
    assert daemon.stop() == 0
    checked = daemon.cli("check", "--index", str(daemon.index))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with Index.open(daemon.index, readonly=True) as index:
        records = list(index.files())
        assert index.check() == [] and index.failures() == []
    assert sorted(r.fspath for r in records) == sorted(map(str, present))  # each once
    for record in records:
        fp = fingerprint(record.path)
        assert (record.bits, record.digest, record.size) == (fp.bits, fp.digest, fp.size)
    print(f"{KILLS} kills ({kills_before_ready} before READY), {feeder.changes} changes, "
          f"{feeder.made} files made, {len(present)} present and indexed")  # fmt: skip
    # Nothing the killed services started outlives them.
    wait_for(lambda: not any(running(pid) for pid in orphans), 30, "orphaned processes")
