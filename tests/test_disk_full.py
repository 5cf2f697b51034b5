"""Disk and map limits: an LMDB map that fills and grows, and a really full disk under the
running service (a small tmpfs the test mounts and fills), losing nothing."""

from __future__ import annotations

import errno
import itertools
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb
import pytest
from PIL import Image

from dupwatch.daemon.service.diskfull import is_disk_full
from dupwatch.daemon.wire.client import Client, DaemonNotRunning
from dupwatch.index import DEFAULT_RADIUS, Index, StoreError
from dupwatch.index.fingerprint import HASH_PARAMS, fingerprint
from dupwatch.index.store import Store

from support import SKIMAGE_DATA, TIMEOUT_S, Daemon, wait_for

TINY_MAP = 64 << 10  # the smallest map an index with its ten tables opens in
DISK_SIZE = "16m"


def tiny_png(path: Path, rng: random.Random) -> None:
    """A 16x16 PNG of random pixels: distinct content (and hash) for every file."""
    Image.frombytes("RGB", (16, 16), rng.randbytes(16 * 16 * 3)).save(path, format="PNG")


def tiny_map_index(folder: Path) -> Index:
    return Index(Store(folder, hash_params=HASH_PARAMS, map_size=TINY_MAP), DEFAULT_RADIUS)


def assert_indexed_exactly(index: Index, paths: list[Path]) -> None:
    """The index holds these files and no other, each once, with the hash of its bytes now."""
    records = list(index.files())
    assert sorted(r.fspath for r in records) == sorted(map(str, paths))
    for record in records:
        fp = fingerprint(record.path)
        assert (record.bits, record.digest) == (fp.bits, fp.digest), record.fspath
    assert index.check() == []


# The map


def test_a_tiny_map_fills_grows_and_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pics = tmp_path / "pics"
    pics.mkdir()
    rng = random.Random(64)
    paths = [pics / f"p{i:03d}.png" for i in range(300)]
    for path in paths:
        tiny_png(path, rng)
    index = tiny_map_index(tmp_path / "idx")
    try:
        assert index.store.env.info()["map_size"] == TINY_MAP
        with caplog.at_level(logging.INFO, logger="dupwatch.index.store.environment"):
            # One transaction for all 300: it fills the map, which grows, and it runs again.
            fingerprints = [(p, fingerprint(p), p.stat()) for p in paths]
            results = index.put_many(fingerprints)
        grown = [r for r in caplog.records if "the index map is full; growing it" in r.message]
        assert grown, "the map never filled"
        assert index.store.env.info()["map_size"] > TINY_MAP
        assert len(results) == len(index) == 300
        assert_indexed_exactly(index, paths)

        # Every later write keeps growing it as needed: an update, removals, moves.
        more = [pics / f"q{i:03d}.png" for i in range(300)]
        for path in more:
            tiny_png(path, rng)
        index.update([pics], workers=1)
        for path in paths[:100]:
            path.unlink()
        index.update([pics], workers=1)
        index.move(pics / "q000.png", pics / "moved.png")
        (pics / "q000.png").rename(pics / "moved.png")
        assert_indexed_exactly(index, sorted(pics.iterdir()))
    finally:
        index.close()
    with Index.open(tmp_path / "idx", readonly=True) as reopened:  # the grown map persists
        assert len(reopened) == 500 and reopened.check() == []


READERS_WHILE_GROWING = """
import collections, os, random, sys, threading
from dupwatch.index import DEFAULT_RADIUS, Index, StoreError
from dupwatch.index.fingerprint import HASH_PARAMS, Fingerprint
from dupwatch.index.store import Store
folder = sys.argv[1]
index = Index(Store(folder, hash_params=HASH_PARAMS, map_size=64 << 10), DEFAULT_RADIUS)
rng = random.Random(5)
failures = collections.Counter()
stop = threading.Event()
def read():
    while not stop.is_set():
        try:
            index.query(rng.getrandbits(64), 8)
        except Exception as error:
            failures[type(error).__name__] += 1
readers = [threading.Thread(target=read) for _ in range(2)]
for reader in readers:
    reader.start()
st = os.stat(folder)
for i in range(2000):
    fp = Fingerprint(rng.getrandbits(64), rng.randbytes(16), 16, 16, "PNG", 100)
    index.put(f"{folder}/{i}.png", fp, st)
stop.set()
for reader in readers:
    reader.join()
print(dict(failures))
"""


def test_readers_in_other_threads_while_the_map_grows(tmp_path: Path) -> None:
    """The map grows only once no transaction of the process is open (Store's gate): resizing
    under a reader invalidates its transaction, and a memory view held across it can crash."""
    # In a process of its own: the failure can be a segfault.
    result = subprocess.run(
        [sys.executable, "-c", READERS_WHILE_GROWING, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "{}", result.stdout


GROW_IN_ANOTHER_PROCESS = """
import os, random, sys
from dupwatch.index import DEFAULT_RADIUS, Index
from dupwatch.index.fingerprint import HASH_PARAMS, Fingerprint
from dupwatch.index.store import Store
folder, prefix = sys.argv[1:]
index = Index(Store(folder, hash_params=HASH_PARAMS, map_size=64 << 10), DEFAULT_RADIUS)
rng = random.Random(prefix)
st = os.stat(folder)
fingerprints = [
    Fingerprint(rng.getrandbits(64), rng.randbytes(16), 16, 16, "PNG", 100) for _ in range(2000)
]
index.put_many((f"{folder}/{prefix}{i}.png", fp, st) for i, fp in enumerate(fingerprints))
index.close()
"""


def grow_in_another_process(folder: Path, prefix: str) -> None:
    before = os.path.getsize(folder / "data.mdb")
    command = [sys.executable, "-c", GROW_IN_ANOTHER_PROCESS, str(folder), prefix]
    subprocess.run(command, check=True, timeout=120)
    assert os.path.getsize(folder / "data.mdb") > before


def test_a_map_grown_by_another_process_is_adopted(tmp_path: Path) -> None:
    """An index open for writing, then one open read-only (`dupwatch query` without the
    service), while another process grows the map: each maps the new size (LMDB's
    MDB_MAP_RESIZED) and goes on."""
    astronaut, camera = SKIMAGE_DATA / "astronaut.png", SKIMAGE_DATA / "camera.png"
    first = fingerprint(astronaut)
    with tiny_map_index(tmp_path) as index:
        index.put(astronaut, first, os.stat(astronaut))
        grow_in_another_process(tmp_path, "a")
        assert [m.record.path for m in index.query(first.bits, 0)] == [os.fsencode(astronaut)]
        index.put(camera, fingerprint(camera), os.stat(camera))
        assert len(index) == 2002 and index.check() == []
    with Index(Store(tmp_path, hash_params=HASH_PARAMS, readonly=True), DEFAULT_RADIUS) as reader:
        assert len(reader) == 2002
        grow_in_another_process(tmp_path, "b")
        assert [m.record.path for m in reader.query(first.bits, 0)] == [os.fsencode(astronaut)]
        assert len(reader) == 4002 and reader.check() == []


# A full disk under the running service


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 16 MiB tmpfs mounted for this test (needs root), unmounted after it."""
    if os.getuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    base = Path(tempfile.mkdtemp(dir="/tmp", prefix="dwd"))
    disk = base / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE},mode=0700", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        shutil.rmtree(base)
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], check=True)
        shutil.rmtree(base, ignore_errors=True)


def fill(disk: Path) -> Path:
    """Write a file until the file system is full; returns it."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as out:
        for chunk in (1 << 20, 4096, 512):
            try:
                while True:
                    out.write(bytes(chunk))
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
    return filler


class Service(Daemon):
    """The real `dupwatch daemon` with its index on `disk` and its watched folder elsewhere."""

    def __init__(self, disk: Path) -> None:
        super().__init__(disk.parent, index=disk / "idx")

    def start(self) -> None:
        super().start(wait=False)
        # READY; its state says disk_full when a write failed on the way.
        wait_for(lambda: self.status()["state"] in ("ready", "disk_full"), what="READY")

    def status(self) -> dict[str, Any]:
        assert self.process is not None and self.process.poll() is None, self.output()
        try:
            return super().status()
        except (DaemonNotRunning, OSError):
            return {"state": "starting"}


@pytest.fixture
def service(small_disk: Path) -> Iterator[Service]:
    instance = Service(small_disk)
    yield instance
    if instance.process is not None:
        instance.process.kill()
        instance.process.wait(TIMEOUT_S)


def drop_until_full(service: Service, rng: random.Random, prefix: str) -> None:
    """Drop new images in the watched folder until an index write fails: LMDB reuses its own
    free pages for a while, so the first few may still be stored."""
    dropped = 0
    while service.status()["state"] != "disk_full":
        assert dropped < 2000, "the index never ran out of space"
        for _ in range(50):
            tiny_png(service.root / f"{prefix}{dropped:04d}.png", rng)
            dropped += 1
        wait_for(
            lambda: (s := service.status())["state"] == "disk_full" or s["queue"] == 0,
            what="the files to be stored or the disk to be full",
        )


def test_a_full_disk_pauses_indexing_keeps_queries_and_loses_nothing(service: Service) -> None:
    rng = random.Random(16)
    photo = Image.open(SKIMAGE_DATA / "coffee.png").convert("RGB")
    photo.save(service.root / "coffee.jpg", quality=90)
    for i in range(3):
        tiny_png(service.root / f"before{i}.png", rng)
    service.start()
    assert service.status()["files"] == 4

    filler = fill(service.index.parent)
    drop_until_full(service, rng, "while_full")
    # Arrivals, a deletion and a rename while paused: all reconciled once space is back.
    photo.resize((320, 200)).save(service.root / "coffee_small.jpg", quality=85)
    for i in range(5):
        tiny_png(service.root / f"paused{i}.png", rng)
    (service.root / "before0.png").unlink()
    (service.root / "before1.png").rename(service.root / "renamed.png")

    status = service.status()
    assert status["paused"] == f"{service.index}: no space left on device"
    output = service.output()
    assert f"{service.index}: no space left on the disk of the index" in output
    assert "indexing is paused until space is freed" in output
    # Still answering: status, and queries through the service.
    with Client(service.socket, timeout_s=30) as client:
        answer = client.call("query", path=str(service.root / "coffee.jpg"))
    assert answer["matches"] == [
        {"path": str(service.root / "coffee.jpg"), "distance": 0, "kind": "exact", "self": True}
    ]
    query = service.cli("query", "--json", str(service.root / "coffee.jpg"))
    assert query.returncode == 1 and '"self": true' in query.stdout, query.stderr
    text = service.cli("status")
    assert text.returncode == 0 and "disk_full" in text.stdout
    assert service.status()["state"] == "disk_full"

    filler.unlink()
    present = sorted(service.root.iterdir())

    def settled() -> dict[str, Any] | None:
        s = service.status()
        done = s["state"] == "ready" and s["files"] == len(present) and s["queue"] == 0
        return s if done else None

    status = wait_for(settled, what="indexing to resume and catch up")
    assert status["paused"] is None and status["failed"] == 0
    assert "indexing resumes, reconciling the watched folders" in service.output()
    assert service.stop() == 0
    checked = service.cli("check", "--index", str(service.index))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with Index.open(service.index, readonly=True) as index:
        assert_indexed_exactly(index, present)


def test_the_service_starts_and_answers_on_a_full_disk(service: Service) -> None:
    rng = random.Random(17)
    for i in range(3):
        tiny_png(service.root / f"known{i}.png", rng)
    service.start()
    assert service.stop() == 0
    filler = fill(service.index.parent)
    tiny_png(service.root / "while_down.png", rng)  # arrived while it was down

    service.start()  # READY: reconciling needs no space when nothing was to be written
    assert service.status()["state"] in ("ready", "disk_full")
    with Client(service.socket, timeout_s=30) as client:
        answer = client.call("query", path=str(service.root / "known0.png"))
    assert [m["path"] for m in answer["matches"]] == [str(service.root / "known0.png")]
    drop_until_full(service, rng, "later")
    assert "no space left on the disk of the index" in service.output()

    filler.unlink()
    present = sorted(service.root.iterdir())
    wait_for(
        lambda: (s := service.status())["state"] == "ready" and s["files"] == len(present),
        what="indexing to resume",
    )
    assert service.stop() == 0
    with Index.open(service.index, readonly=True) as index:
        assert_indexed_exactly(index, present)


def test_the_errors_of_a_full_disk_are_told_from_others(small_disk: Path) -> None:
    folder = str(small_disk / "raw")
    env = lmdb.open(folder, map_size=1 << 30)
    try:
        with pytest.raises(lmdb.Error) as full:
            for batch in itertools.count():  # until the tmpfs is full: ENOSPC, or EIO when
                with env.begin(write=True) as txn:  # a write was cut short
                    for i in range(100):
                        txn.put(f"{batch}:{i}".encode(), os.urandom(200))
        assert is_disk_full(full.value, folder), full.value
        wrapped = StoreError(f"{folder}: could not store")
        wrapped.__cause__ = full.value
        assert is_disk_full(wrapped, folder)
        with pytest.raises(lmdb.BadValsizeError) as bad_key, env.begin(write=True) as txn:
            txn.put(b"k" * 600, b"v")  # a mistake, not a full disk, even on a full disk
        assert not is_disk_full(bad_key.value, folder)
    finally:
        env.close()
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"), "/")
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"), "/")
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"), "/")
    assert not is_disk_full(ValueError("no space"), "/")
