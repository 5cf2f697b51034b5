"""The service's start-up check: the cheap half of `dupwatch check` runs before READY; a
damaged index (damaged by hand through LMDB) is repaired, one beyond repair is refused."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lmdb
import pytest
from PIL import Image

from dupwatch.daemon.wire.client import Client, DaemonNotRunning
from dupwatch.index import Index
from dupwatch.index.store import TABLES, path_key, u64

from support import DUPWATCH, SKIMAGE_DATA

TIMEOUT_S = 60.0


@pytest.fixture
def base() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(dir="/tmp", prefix="dwc"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def indexed(base: Path) -> tuple[Path, Path]:
    """Six photos (three pairs of near duplicates) in `pics`, indexed in `idx`."""
    pics = base / "pics"
    pics.mkdir()
    for name in ("astronaut.png", "coffee.png", "chelsea.png"):
        img = Image.open(SKIMAGE_DATA / name).convert("RGB")
        img.save(pics / f"{Path(name).stem}.jpg")
        img.resize((200, 150)).save(pics / f"{Path(name).stem}_small.jpg")
    index = base / "idx"
    with Index.open(index) as ix:
        ix.update([pics], workers=1)
    return pics, index


def damage(index: Path, change: Callable[[lmdb.Transaction, dict, Any], None]) -> None:
    """Apply `change(txn, dbs, last_record)` in a raw LMDB write transaction."""
    with Index.open(index, readonly=True) as ix:
        last = max(ix.files(), key=lambda r: r.id)
    env = lmdb.open(str(index), max_dbs=len(TABLES))
    dbs = {name: env.open_db(name, dupsort=dup) for name, dup in TABLES.items()}
    with env.begin(write=True) as txn:
        change(txn, dbs, last)
    env.close()


# Each damage, and a word the cheap check's report must contain.
DAMAGES: dict[str, tuple[Callable[[lmdb.Transaction, dict, Any], None], str]] = {
    "by_hash entry lost": (
        lambda txn, dbs, r: txn.delete(u64(r.bits), u64(r.id), db=dbs[b"by_hash"]),
        "by_hash",
    ),
    "stray by_digest entry": (
        lambda txn, dbs, r: txn.put(b"\x01" * 16, u64(999), db=dbs[b"by_digest"]),
        "by_digest",
    ),
    "by_path entry renamed": (  # the count stays right; the last record's entry is gone
        lambda txn, dbs, r: (
            txn.delete(path_key(r.path), u64(r.id), db=dbs[b"by_path"]),
            txn.put(path_key(b"/elsewhere"), u64(r.id), db=dbs[b"by_path"]),
        ),
        "by_path: file",
    ),
    "next file id reused": (
        lambda txn, dbs, r: txn.put(b"next_id", u64(r.id), db=dbs[b"meta"]),
        "next file id",
    ),
}


@pytest.mark.parametrize("name", DAMAGES)
def test_cheap_check_finds_the_damage_and_repair_mends_it(
    indexed: tuple[Path, Path], name: str
) -> None:
    _, index = indexed
    with Index.open(index) as ix:
        assert ix.quick_check() == []
    change, word = DAMAGES[name]
    damage(index, change)
    with Index.open(index) as ix:
        problems = ix.quick_check()
        assert any(word in p for p in problems), problems
        ix.repair()
        assert ix.quick_check() == [] and ix.check() == []


def test_cheap_check_sees_the_hash_search_out_of_step(indexed: tuple[Path, Path]) -> None:
    pics, index = indexed
    with Index.open(index) as ix:  # three distinct hashes: each photo and its small copy agree
        bits = ix.get(pics / "coffee.jpg").bits
        ix.hashes.remove(bits)
        assert any("substrings: hold 2 hashes, by_hash 3" in p for p in ix.quick_check())
        ix.hashes.add(bits)
        ix.hashes.add(0x0123456789ABCDEF)  # a hash no file has
        assert any("substrings: hold 4 hashes, by_hash 3" in p for p in ix.quick_check())


class Service:
    """`dupwatch daemon` on `pics` with index `idx`, socket and log in `base`."""

    def __init__(self, base: Path, pics: Path) -> None:
        self.socket = base / "s.sock"
        self.log = base / "daemon.log"
        self.env = {
            **os.environ,
            "DUPWATCH_INDEX": str(base / "idx"),
            "DUPWATCH_SOCKET": str(self.socket),
            "XDG_CONFIG_HOME": str(base / "cfg"),
        }
        self.env.pop("NOTIFY_SOCKET", None)
        self.env.pop("WATCHDOG_USEC", None)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [DUPWATCH, "daemon", str(pics)], env=self.env, stdout=log, stderr=log
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def ready(self) -> dict[str, Any]:
        """Wait for the ready state; returns the status."""
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the service exited: {self.output()}")
            try:
                with Client(self.socket, timeout_s=TIMEOUT_S) as client:
                    status = client.call("status")
                if status["state"] == "ready":
                    return status
            except (DaemonNotRunning, OSError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"not ready in {TIMEOUT_S} s: {self.output()}")

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(TIMEOUT_S)


def test_service_repairs_a_damaged_index_before_ready(
    base: Path, indexed: tuple[Path, Path]
) -> None:
    pics, index = indexed
    damage(index, DAMAGES["by_hash entry lost"][0])
    damage(index, DAMAGES["next file id reused"][0])
    service = Service(base, pics)
    try:
        status = service.ready()
        assert status["files"] == 6 and status["hashed"] == 0  # repaired, not hashed again
        with Client(service.socket) as client:
            matches = client.call("query", path=str(pics / "coffee_small.jpg"))["matches"]
        assert str(pics / "coffee.jpg") in [m["path"] for m in matches]
    finally:
        assert service.stop() == 0
    output = service.output()
    assert "the index is inconsistent (by_hash: 5 entries for 6 files" in output
    assert "next file id" in output and "the index is repaired" in output
    with Index.open(index, readonly=True) as ix:
        assert ix.check() == []


def test_service_starts_quietly_on_a_sound_index(base: Path, indexed: tuple[Path, Path]) -> None:
    pics, _ = indexed
    service = Service(base, pics)
    try:
        assert service.ready()["files"] == 6
    finally:
        assert service.stop() == 0
    assert "inconsistent" not in service.output()


def test_service_refuses_an_index_beyond_repair(base: Path, indexed: tuple[Path, Path]) -> None:
    pics, index = indexed

    def truncate_last_record(txn: lmdb.Transaction, dbs: dict, record: Any) -> None:
        txn.put(u64(record.id), b"\x00" * 7, db=dbs[b"files"])

    damage(index, truncate_last_record)
    service = Service(base, pics)
    code = service.process.wait(TIMEOUT_S)
    output = service.output()
    assert code == 2, output
    assert "files: the last record cannot be read" in output
    assert "damaged beyond a repair" in output and "dupwatch check" in output
    assert "Traceback" not in output
    assert not service.socket.exists()
