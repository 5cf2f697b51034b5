"""The service's writer hands a burst of arrivals to its hashing processes in batches, and a
lone arrival alone and at once; the pixel digests a burst's writing needs are decoded by the
hashing processes ahead of the write. A real index, real processes, real files."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dupwatch.daemon.service.watcher import Change, ChangeKind
from dupwatch.daemon.service.worker import init_worker
from dupwatch.daemon.service.writer import Writer
from dupwatch.index import AddResult, Index
from dupwatch.index.hashing.tasks import hash_batch

from support import photo, wait_for


class CountingPool(ProcessPoolExecutor):
    """The service's pool (forkserver, capped), counting the files of each hashing task."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("forkserver")
        super().__init__(2, mp_context=context, initializer=init_worker,
                         initargs=(os.getpid(), 4 << 30))  # fmt: skip
        self.task_sizes: list[int] = []

    def submit(self, fn, /, *args, **kwargs):  # noqa: ANN001, ANN201
        if fn is hash_batch:
            self.task_sizes.append(len(args[0]))
        return super().submit(fn, *args, **kwargs)


@contextmanager
def running_writer(folder: Path, alerts: list[AddResult]) -> Iterator[tuple[Writer, CountingPool]]:
    pools: list[CountingPool] = []

    def new_pool() -> CountingPool:
        pools.append(CountingPool())
        return pools[-1]

    index = Index.open(folder / "index")
    writer = Writer(index, new_pool, workers=2, ignore=(), on_duplicate=alerts.append)
    writer.start()
    try:
        yield writer, pools[0]
    finally:
        writer.stop()
        index.close()


def tiles(folder: Path, count: int) -> list[Path]:
    """`count` different pictures: tiles of real photographs."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        img = photo(("astronaut.png", "coffee.png", "chelsea.png")[i % 3])
        x, y = (i // 3) % 8 * 48, (i // 24) * 48
        path = folder / f"tile{i:03d}.png"
        img.crop((x, y, x + 96, y + 96)).save(path)
        paths.append(path)
    return paths


def test_a_burst_goes_out_in_batches_and_a_lone_file_alone(tmp_path: Path) -> None:
    alerts: list[AddResult] = []
    burst = tiles(tmp_path / "burst", 96)
    with running_writer(tmp_path, alerts) as (writer, pool):
        for path in burst:
            writer.submit(Change(ChangeKind.FILE, os.fsencode(path)))
        wait_for(lambda: writer.stats.hashed == len(burst), what="the burst hashed")
        assert len(pool.task_sizes) < len(burst) / 2, pool.task_sizes
        assert sum(pool.task_sizes) == len(burst)

        lone = tmp_path / "lone.png"
        lone.write_bytes(burst[5].read_bytes())  # a copy: one alert
        started = time.monotonic()
        writer.submit(Change(ChangeKind.FILE, os.fsencode(lone)))
        wait_for(lambda: alerts, what="the lone copy's alert")
        assert time.monotonic() - started < 5
        assert pool.task_sizes[-1] == 1
        assert [m.record.fspath for m in alerts[0].matches] == [str(burst[5])]
        assert writer.stats.failed == 0


def test_a_burst_of_pixel_copies_is_told_from_near_ones(tmp_path: Path) -> None:
    """Same pixels in other bytes (a PNG saved again at another compression level) are
    `pixel` copies, a re-encoded JPEG of the same size a `near` one, as without batches."""
    alerts: list[AddResult] = []
    originals = tiles(tmp_path / "originals", 24)
    with running_writer(tmp_path, alerts) as (writer, _pool):
        for path in originals:
            writer.submit(Change(ChangeKind.FILE, os.fsencode(path)))
        wait_for(lambda: writer.stats.hashed == len(originals), what="the originals")
        copies = tmp_path / "copies"
        copies.mkdir()
        arrivals = []
        for i, path in enumerate(originals[:12]):
            img = photo_of(path)
            if i % 2:
                arrivals.append(copies / f"resaved{i}.png")
                img.save(arrivals[-1], compress_level=1)
            else:
                arrivals.append(copies / f"reencoded{i}.jpg")
                img.save(arrivals[-1], quality=98)
        for path in arrivals:
            writer.submit(Change(ChangeKind.FILE, os.fsencode(path)))
        wait_for(lambda: writer.stats.hashed == len(originals) + len(arrivals), what="copies")
    kinds = {Path(a.record.fspath).name: {str(m.kind) for m in a.matches} for a in alerts}
    for i, path in enumerate(arrivals):
        if i % 2:
            assert kinds[path.name] == {"pixel"}, kinds
        else:
            assert "pixel" not in kinds.get(path.name, set()), kinds


def photo_of(path: Path) -> Any:
    from PIL import Image

    with Image.open(path) as img:
        return img.convert("RGB")
