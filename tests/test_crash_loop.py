"""Crash loop: the real service over a folder that keeps receiving files, killed with SIGKILL
at random moments many times in a row and restarted each time; once it settles, `dupwatch
check` passes and every file present is indexed exactly once, with the hash of its bytes.

DUPWATCH_CRASH_KILLS sets the number of kills (50 by default).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from dupwatch.daemon.client import Client, DaemonNotRunning
from dupwatch.index import Index
from dupwatch.index.fingerprint import fingerprint

from support import DUPWATCH

KILLS = int(os.environ.get("DUPWATCH_CRASH_KILLS", "50"))
TIMEOUT_S = 60.0
FEED_EVERY_S = 0.04  # one change to the folder this often while the service is being killed


def wait_for(condition: Callable[[], Any], timeout_s: float = TIMEOUT_S, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)
    return value


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


class Daemon:
    """A private `dupwatch daemon`: index, socket, config and one watched folder in /tmp."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "w"
        self.root.mkdir()
        self.index = base / "idx"
        self.socket = base / "s.sock"
        self.config = base / "config.toml"
        self.config.write_text("workers = 2\n")
        self.log = base / "daemon.log"
        self.env = {
            **os.environ,
            "DUPWATCH_INDEX": str(self.index),
            "DUPWATCH_SOCKET": str(self.socket),
            "XDG_CONFIG_HOME": str(base / "cfg"),
        }
        self.env.pop("NOTIFY_SOCKET", None)
        self.env.pop("WATCHDOG_USEC", None)
        self.process: subprocess.Popen[bytes] | None = None

    def command(self, *args: str) -> list[str]:
        return [DUPWATCH, "--config", str(self.config), *args]

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.command("daemon", str(self.root)), env=self.env, stdout=log, stderr=log
            )

    def status(self) -> dict[str, Any] | None:
        """The status, None while the service is not answering yet."""
        assert self.process is not None
        assert self.process.poll() is None, f"the service exited: {self.output()[-3000:]}"
        try:
            with Client(self.socket, timeout_s=30) as client:
                return client.call("status")
        except (DaemonNotRunning, OSError):
            return None

    def is_ready(self) -> bool:
        status = self.status()
        return status is not None and status["state"] == "ready"

    def kill(self) -> list[int]:
        """SIGKILL the service; returns its hashing processes and forkserver, which must end."""
        assert self.process is not None
        helpers = descendants(self.process.pid)
        self.process.kill()
        self.process.wait(TIMEOUT_S)
        self.process = None
        return helpers

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(TIMEOUT_S)
        self.process = None
        return code

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def descendants(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        parent = str(pending.pop())
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", parent], capture_output=True)
        children = [int(p) for p in out.stdout.split()]
        found += children
        pending += children
    return found


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
            daemon.start()
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

    daemon.start()
    present = sorted(p for p in daemon.root.iterdir())

    def settled() -> dict[str, Any] | None:
        status = daemon.status()
        done = status and status["state"] == "ready" and status["queue"] == 0
        return status if done and status["files"] == len(present) else None

    wait_for(settled, what=f"{len(present)} files indexed after {KILLS} kills")
    assert daemon.stop() == 0
    checked = subprocess.run(
        daemon.command("check", "--index", str(daemon.index)),
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
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
