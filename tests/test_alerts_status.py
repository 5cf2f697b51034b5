"""What `dupwatch alerts` and `dupwatch status` print for a person: leaks first, bursts
folded, the files that failed by name, and a summary of the index when the service is down."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import TIMEOUT_S, Daemon, photo, wait_for


@pytest.fixture
def splits() -> Iterator[Daemon]:
    """A service whose watched folder holds the splits train/ and val/ (config `splits`)."""
    base = Path(tempfile.mkdtemp(dir="/tmp", prefix="dwa"))
    config = 'workers = 2\n[splits]\ntrain = "w/train"\nval = "w/val"\n'
    daemon = Daemon(base, config=config)
    for split in ("train", "val"):
        (daemon.root / split).mkdir()
    yield daemon
    if daemon.process is not None:
        daemon.kill()
    shutil.rmtree(base, ignore_errors=True)


class Follower:
    """A running `dupwatch alerts` (plain text) whose lines are read as they come."""

    def __init__(self, daemon: Daemon, *args: str) -> None:
        subscribers = daemon.status()["subscribers"]
        self.process = subprocess.Popen(
            daemon.command("alerts", *args), env=daemon.env, stdout=subprocess.PIPE
        )
        wait_for(lambda: daemon.status()["subscribers"] > subscribers, what="dupwatch alerts")
        self.lines: list[str] = []
        self.partial = b""

    def _read(self, timeout_s: float) -> None:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], max(0.0, timeout_s))
        if ready:
            *complete, self.partial = (self.partial + os.read(fd, 65536)).split(b"\n")
            self.lines += [line.decode() for line in complete]

    def read_until(self, wanted: str, timeout_s: float = TIMEOUT_S) -> list[str]:
        """Every line read so far, once one holds `wanted`."""
        deadline = time.monotonic() + timeout_s
        while not any(wanted in line for line in self.lines):
            assert time.monotonic() < deadline, f"no {wanted!r} in {self.lines}"
            self._read(0.5)
        return self.lines

    def read_for(self, seconds: float) -> list[str]:
        """Every line read so far, after reading for `seconds` more."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._read(left)
        return self.lines

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(TIMEOUT_S)


def test_a_leak_is_shown_first_in_alerts_and_in_status(splits: Daemon, tmp_path: Path) -> None:
    rocket, cat = splits.root / "train" / "rocket.jpg", splits.root / "train" / "cat.jpg"
    photo("rocket.jpg").save(rocket, quality=92)
    photo("chelsea.png").save(cat, quality=92)
    splits.start()
    follower = Follower(splits)
    try:
        photo("rocket.jpg").resize((300, 200)).save(tmp_path / "small.jpg", quality=80)
        shutil.copy(tmp_path / "small.jpg", splits.root / "val" / "new.jpg")
        lines = follower.read_until(str(rocket))
    finally:
        follower.stop()
    leak = lines.index("LEAK  val/new.jpg duplicates train/rocket.jpg")
    arrival = next(
        n for n, line in enumerate(lines) if line.endswith(f"  {splits.root}/val/new.jpg")
    )
    assert leak < arrival  # the leak comes first, then the alert as usual

    # Ordinary duplicates afterwards (inside train) do not push the leak out of `status`.
    for n in range(6):
        shutil.copy(cat, splits.root / "train" / f"cat{n}.jpg")
    wait_for(lambda: splits.status()["alerts"] == 7, what="7 alerts")
    status = splits.cli("status")
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[1] == "LEAKS    1 new file duplicates a file in another split; the last:"
    assert lines[2].startswith("LEAK  val/new.jpg duplicates train/rocket.jpg  (20")
    assert "7 alerts (1 leak)" in status.stdout
    answer = json.loads(splits.cli("status", "--json").stdout)
    assert answer["leaks"] == 1 and answer["last_leaks"][0]["path"].endswith("val/new.jpg")
    assert splits.stop() == 0


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    base = Path(tempfile.mkdtemp(dir="/tmp", prefix="dwa"))
    daemon = Daemon(base)
    yield daemon
    if daemon.process is not None:
        daemon.kill()
    shutil.rmtree(base, ignore_errors=True)


def test_a_burst_of_copies_folds_into_a_summary_line(daemon: Daemon, tmp_path: Path) -> None:
    photo("coffee.png").resize((200, 150)).save(daemon.root / "coffee.png")
    daemon.start()
    follower, as_json = Follower(daemon), Follower(daemon, "--json")
    batch = daemon.root / "batch"
    staged = tmp_path / "batch"
    staged.mkdir()
    for n in range(20):
        shutil.copy(daemon.root / "coffee.png", staged / f"copy{n:02d}.png")
    try:
        staged.rename(batch)  # one folder of 20 copies, in at once
        follower.read_until("more duplicates in")
        lines = follower.read_for(2 * 2.0)  # any summary still due
        events = as_json.read_for(0.5)
    finally:
        follower.stop()
        as_json.stop()
    full = [line for line in lines if line.endswith(".png") and not line.startswith(" ")]
    folded = [line for line in lines if " more duplicate" in line]
    counted = sum(int(line.split()[2]) for line in folded)
    assert len(full) + counted == 20, lines
    assert len(full) < 20 and len(lines) < 60, lines  # unfolded: 20 alerts, 230 lines
    assert any(line.endswith(f"in {batch}: {int(line.split()[2])} exact copies") for line in folded)
    assert len(events) == 20 and all(json.loads(e)["event"] == "duplicate" for e in events)
    assert daemon.stop() == 0


def test_status_names_the_files_that_failed_and_works_without_the_service(
    daemon: Daemon,
) -> None:
    photo("chelsea.png").save(daemon.root / "cat.jpg", quality=90)
    shutil.copy(daemon.root / "cat.jpg", daemon.root / "cat-copy.jpg")
    daemon.start()
    (daemon.root / "notes.jpg").write_text("a text file with the name of a picture\n")
    wait_for(lambda: daemon.status()["failed"] == 1, what="the failure")
    status = daemon.cli("status")
    assert status.returncode == 0
    assert f"failed   {daemon.root}/notes.jpg: not an image" in status.stdout
    assert daemon.stop() == 0

    offline = daemon.cli("status")
    assert offline.returncode == 1, offline.stderr  # 1: the service is not running
    lines = offline.stdout.splitlines()
    assert lines[0].startswith("dupwatch service: not running (")
    assert lines[1] == f"index    {daemon.index} (2 files, duplicate groups: 1)"
    assert f"folders  {daemon.root}" in lines
    assert f"failed   {daemon.root}/notes.jpg: not an image (unrecognised format)" in lines
    answer = json.loads(daemon.cli("status", "--json").stdout)
    assert answer["state"] == "not_running" and answer["files"] == 2 and answer["groups"] == 1
    assert answer["roots"] == [str(daemon.root)] and answer["failed"] == 1
