"""Soak: the real `dupwatch daemon` fed files for a long while; are its resources flat?

Run: python tests/bench/soak.py [--minutes 5] [--rate 8] [--every 5] [--subscribers 3]

Files arrive (new pictures and near-duplicates of earlier ones), are renamed (in place and
across folders) and deleted, about --rate actions a second, around --population files; alert
subscribers stay connected (one of them reads slowly) and a short-lived client asks for the
status and queries between samples. Every --every seconds the service's RSS, open fds and
threads are sampled, with those of its hashing processes. It prints a table and a verdict:
flat after the warm-up (the first --warmup-share of the run) or not; at the end the index
must hold exactly the files on disk and pass the full check.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import skimage.data
import skimage.io
from PIL import Image

from dupwatch.daemon.wire.client import Client, DaemonNotRunning
from dupwatch.index import Index

SKIMAGE_DATA = Path(skimage.data.__file__).parent
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")
DUPWATCH = shutil.which("dupwatch") or "dupwatch"
FOLDERS = 4


# The service


class Service:
    """`dupwatch daemon` on a private index, socket and folder tree in /tmp."""

    def __init__(self, base: Path, workers: int) -> None:
        self.base = base
        self.root = base / "w"
        for i in range(FOLDERS):
            (self.root / f"d{i}").mkdir(parents=True)
        self.socket = base / "s.sock"
        self.index = base / "idx"
        config = base / "config.toml"
        config.write_text(f"workers = {workers}\n")
        self.env = {
            **os.environ,
            "DUPWATCH_INDEX": str(self.index),
            "DUPWATCH_SOCKET": str(self.socket),
            "XDG_CONFIG_HOME": str(base / "cfg"),
        }
        self.env.pop("NOTIFY_SOCKET", None)
        self.log = open(base / "daemon.log", "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [DUPWATCH, "--config", str(config), "daemon", str(self.root)],
            env=self.env,
            stderr=self.log,
            stdout=self.log,
        )
        deadline = time.monotonic() + 120
        while not self._ready():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit(f"the service did not start; see {base / 'daemon.log'}")
            time.sleep(0.1)

    def _ready(self) -> bool:
        try:
            return self.status()["state"] == "ready"
        except (DaemonNotRunning, OSError):
            return False

    def status(self) -> dict[str, Any]:
        with Client(self.socket, timeout_s=30) as client:
            return client.call("status")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(120)
        self.log.close()


# Sampling /proc


@dataclass(frozen=True)
class Usage:
    rss_kib: int
    fds: int
    threads: int
    # Of the RSS: the heap and stacks, and pages of mapped files (the LMDB map, libraries),
    # which grow as the index is touched and which the kernel may drop at any time.
    anon_kib: int = 0
    file_kib: int = 0


def usage(pid: int) -> Usage:
    fields = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = value.split()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:  # it ended between listing and reading
        return Usage(0, 0, 0)
    return Usage(
        int(fields["VmRSS"][0]),
        fds,
        int(fields["Threads"][0]),
        int(fields["RssAnon"][0]),
        int(fields["RssFile"][0]) + int(fields["RssShmem"][0]),
    )


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (the forkserver and the hashing processes)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found, pending = [], [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


@dataclass(frozen=True)
class Sample:
    t_s: float
    files: int
    queue: int
    hashed: int
    alerts: int
    received: int
    service: Usage
    workers: Usage
    processes: int


def sample(service: Service, started: float, subscribers: list[Subscriber]) -> Sample:
    status = service.status()
    below = [usage(pid) for pid in descendants(service.process.pid)]
    return Sample(
        t_s=time.monotonic() - started,
        files=status["files"],
        queue=status["queue"],
        hashed=status["hashed"],
        alerts=status["alerts"],
        received=sum(s.received for s in subscribers),
        service=usage(service.process.pid),
        workers=Usage(
            sum(u.rss_kib for u in below),
            sum(u.fds for u in below),
            sum(u.threads for u in below),
            sum(u.anon_kib for u in below),
            sum(u.file_kib for u in below),
        ),
        processes=len(below),
    )


# The load


def picture_pool(count: int, seed: int) -> list[bytes]:
    """JPEGs of distinct crops of real photos (distinct hashes), small enough to hash fast."""
    rng = random.Random(seed)
    photos = [Image.fromarray(skimage.io.imread(SKIMAGE_DATA / name)).convert("RGB")
              for name in PHOTOS]  # fmt: skip
    pool = []
    for _ in range(count):
        img = rng.choice(photos)
        w, h = img.size
        cw, ch = rng.randint(w // 3, w // 2), rng.randint(h // 3, h // 2)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        pool.append(_jpeg(img.crop((x, y, x + cw, y + ch)).resize((320, 240)), 90))
    return pool


def _jpeg(img: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def near_copy(data: bytes, rng: random.Random) -> bytes:
    """The same picture re-encoded a little smaller: a near duplicate, so an alert."""
    img = Image.open(io.BytesIO(data))
    return _jpeg(img.resize((img.width - rng.randint(4, 40), img.height - 3)), rng.randint(70, 95))


class Feeder(threading.Thread):
    """Arrivals, renames and deletes at about `rate` a second around `population` files."""

    def __init__(self, root: Path, rate: float, population: int, seed: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.rate = rate
        self.population = population
        self.rng = random.Random(seed)
        self.pool = picture_pool(200, seed)
        self.files: list[Path] = []
        self.counts = {"arrived": 0, "renamed": 0, "deleted": 0}
        self.stopping = threading.Event()
        self.serial = 0
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stopping.wait(self.rng.expovariate(self.rate)):
                self.act()
        except BaseException as exc:
            self.failure = exc
            raise

    def act(self) -> None:
        """Mostly arrivals below the population; at it, 30% arrivals, 40% renames, 30%
        deletes (so that it holds)."""
        roll = self.rng.random()
        arrivals, renames = (0.9, 0.95) if len(self.files) < self.population else (0.3, 0.7)
        if not self.files or roll < arrivals:
            self.arrive()
        elif roll < renames:
            self.rename()
        else:
            self.delete()

    def _new_path(self) -> Path:
        self.serial += 1
        return self.root / f"d{self.rng.randrange(FOLDERS)}" / f"p{self.serial:06d}.jpg"

    def arrive(self) -> None:
        """Written under a temporary name and renamed in, as a download or a copy tool does."""
        data = self.rng.choice(self.pool)
        if self.rng.random() < 0.3:
            data = near_copy(data, self.rng)
        path = self._new_path()
        part = path.with_suffix(".part")
        part.write_bytes(data)
        os.rename(part, path)
        self.files.append(path)
        self.counts["arrived"] += 1

    def rename(self) -> None:
        old = self.files.pop(self.rng.randrange(len(self.files)))
        new = self._new_path()
        os.rename(old, new)
        self.files.append(new)
        self.counts["renamed"] += 1

    def delete(self) -> None:
        self.files.pop(self.rng.randrange(len(self.files))).unlink()
        self.counts["deleted"] += 1


class Subscriber(threading.Thread):
    """An alert subscriber; a slow one sleeps between reads."""

    def __init__(self, socket_path: Path, delay_s: float) -> None:
        super().__init__(daemon=True)
        self.client = Client(socket_path, timeout_s=30)
        self.delay_s = delay_s
        self.received = 0
        self.missed = 0

    def run(self) -> None:
        for event in self.client.subscribe():
            if event.get("event") == "missed":
                self.missed += event["count"]
            else:
                self.received += 1
            if self.delay_s:
                time.sleep(self.delay_s)


def poke(service: Service, feeder: Feeder) -> None:
    """A short-lived client: a status and a query by path, each on a fresh connection."""
    service.status()
    if feeder.files:
        path = feeder.files[-1]
        try:
            with Client(service.socket, timeout_s=30) as client:
                client.call("query", path=str(path))
        except Exception:  # noqa: BLE001 - the file may have just been renamed or deleted
            pass


# Verdict


def spread(values: list[int]) -> tuple[float, float]:
    """Mean of the first and of the last third."""
    third = max(1, len(values) // 3)
    return statistics.fmean(values[:third]), statistics.fmean(values[-third:])


def verdict(samples: list[Sample], warmup_share: float) -> tuple[bool, list[str]]:
    after = samples[int(len(samples) * warmup_share) :]
    if len(after) < 6:
        return False, ["too few samples after the warm-up; run longer"]
    lines = []
    flat = True
    series = {
        "service RSS KiB": [s.service.rss_kib for s in after],
        "  anon (heap)": [s.service.anon_kib for s in after],
        "  file (mapped)": [s.service.file_kib for s in after],
        "service fds": [s.service.fds for s in after],
        "service threads": [s.service.threads for s in after],
        "workers RSS KiB": [s.workers.rss_kib for s in after],
        "workers fds": [s.workers.fds for s in after],
        "processes": [s.processes for s in after],
    }
    times = [s.t_s for s in after]
    for name, values in series.items():
        first, last = spread(values)
        slope = statistics.linear_regression(times, values).slope * 3600  # a unit per hour
        if name in ("service RSS KiB", "  file (mapped)"):
            # Pages of the LMDB map and libraries, counted in the RSS as they are touched: the
            # kernel drops them under pressure. Shown, not judged; the heap is.
            ok, word = True, "(not judged)"
        elif "RSS" in name or "anon" in name:
            # Flat: the last third within 5% (at least 4 MiB) of the first; allocator noise.
            ok = last <= first + max(4096, 0.05 * first)
            word = "flat" if ok else "GROWING"
        else:
            ok = last <= first + 2 and max(values) <= min(values) + 8
            word = "flat" if ok else "GROWING"
        flat = flat and ok
        lines.append(
            f"  {name:<16} first third {first:10.0f}  last third {last:10.0f}  "
            f"min {min(values):8d}  max {max(values):8d}  trend {slope:+9.1f}/h  {word}"
        )
    return flat, lines


def print_table(samples: list[Sample]) -> None:
    print(
        f"{'t s':>6} {'files':>6} {'queue':>5} {'hashed':>7} {'alerts':>6} {'recvd':>6} "
        f"{'RSS MiB':>8} {'anon':>6} {'file':>6} {'fds':>4} {'thr':>4} {'wRSS MiB':>9} "
        f"{'wfds':>5} {'wthr':>5} {'procs':>5}"
    )
    for s in samples:
        print(
            f"{s.t_s:6.0f} {s.files:6d} {s.queue:5d} {s.hashed:7d} {s.alerts:6d} "
            f"{s.received:6d} {s.service.rss_kib / 1024:8.1f} {s.service.anon_kib / 1024:6.1f} "
            f"{s.service.file_kib / 1024:6.1f} {s.service.fds:4d} "
            f"{s.service.threads:4d} {s.workers.rss_kib / 1024:9.1f} {s.workers.fds:5d} "
            f"{s.workers.threads:5d} {s.processes:5d}"
        )


def settle(service: Service, feeder: Feeder, timeout_s: float = 300) -> dict[str, Any]:
    """Wait for the service to index exactly what is on disk; returns the last status."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = service.status()
        if status["queue"] == 0 and status["files"] == len(feeder.files):
            return status
        if time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=8.0, help="file actions a second")
    parser.add_argument("--population", type=int, default=400, help="files kept around")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--subscribers", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--warmup-share", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(dir="/tmp", prefix="dwsoak"))
    service = Service(base, args.workers)
    try:
        subscribers = [
            Subscriber(service.socket, delay_s=0.2 if i == 0 else 0.0)
            for i in range(args.subscribers)
        ]
        for sub in subscribers:
            sub.start()
        feeder = Feeder(service.root, args.rate, args.population, args.seed)
        started = time.monotonic()
        samples = [sample(service, started, subscribers)]
        feeder.start()
        end = started + args.minutes * 60
        while time.monotonic() < end:
            next_sample = time.monotonic() + args.every
            while time.monotonic() < next_sample:
                poke(service, feeder)
                time.sleep(0.5)
            samples.append(sample(service, started, subscribers))
            print(f"\r{samples[-1].t_s:6.0f} s, {samples[-1].files} files", end="", flush=True)
        feeder.stopping.set()
        feeder.join(30)
        print()
        final = settle(service, feeder)
        samples.append(sample(service, started, subscribers))
    finally:
        service.stop()

    print(f"\nsoak: {args.minutes:g} min, {args.rate:g} actions/s, {args.workers} workers, "
          f"{args.subscribers} subscribers (one slow); {os.cpu_count()} cores\n")  # fmt: skip
    print_table(samples)
    counts = ", ".join(f"{n} {k}" for k, n in feeder.counts.items())
    print(f"\nfeeder: {counts}; {len(feeder.files)} files left on disk")
    received = [f"{s.received} (+{s.missed} missed)" for s in subscribers]
    print(f"alerts: {final['alerts']} sent; subscribers received {', '.join(received)}")
    with Index.open(service.index, readonly=True) as index:
        indexed = {r.fspath for r in index.files()}
        problems = index.check()
    on_disk = {str(p) for p in feeder.files}
    map_mib = (service.index / "data.mdb").stat().st_size / 2**20
    exact = indexed == on_disk
    print(
        f"index: {len(indexed)} files, {'exactly' if exact else 'NOT'} the {len(on_disk)} on "
        f"disk; full check: {'clean' if not problems else problems[:5]}; data.mdb "
        f"{map_mib:.1f} MiB"
    )
    flat, lines = verdict(samples, args.warmup_share)
    print(f"\nafter the warm-up (first {args.warmup_share:.0%} of the samples):")
    print("\n".join(lines))
    ok = flat and exact and not problems and feeder.failure is None
    if feeder.failure is not None:
        print(f"the feeder failed: {feeder.failure!r}")
    print(f"\nverdict: {'FLAT' if flat else 'NOT FLAT'}; {'PASS' if ok else 'FAIL'}")
    shutil.rmtree(base, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
