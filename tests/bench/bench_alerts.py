"""The service's speed: alert latency, catch-up time to READY, idle memory.

Run: python tests/bench/bench_alerts.py [--trials N] [--files N] [--skip-latency|--skip-catchup]

- Alert latency: the real `dupwatch daemon` watches a folder holding one photo; a re-encoded
  copy is written into the folder and the time from its close() to the `duplicate` alert
  reaching a subscriber on the socket is measured, for 2 MP and 12 MP JPEGs.
- Catch-up: --files small files on disk and in the index (fingerprints stored directly, as
  if indexed earlier), nothing changed; time from starting the service to READY=1 (received
  on a NOTIFY_SOCKET, as systemd would), and files hashed at start (must be 0).
- Idle RSS of the service (and of its hashing processes) with those files indexed.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import skimage.data
import skimage.io
from PIL import Image

from dupwatch.daemon.wire.client import Client
from dupwatch.index import Fingerprint, Index

SKIMAGE_DATA = Path(skimage.data.__file__).parent
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")
SIZES = (("2 MP JPEG", (1728, 1152)), ("12 MP JPEG", (4000, 3000)))
DUPWATCH = shutil.which("dupwatch") or "dupwatch"


def mosaic(size: tuple[int, int], seed: int) -> Image.Image:
    """Four photos in a 2x2 mosaic scaled to `size`, with sensor-like grain (a photo's entropy)."""
    tile = (size[0] // 2, size[1] // 2)
    canvas = Image.new("RGB", size)
    for k, name in enumerate(PHOTOS):
        img = Image.fromarray(skimage.io.imread(SKIMAGE_DATA / name)).convert("RGB")
        canvas.paste(
            img.resize(tile, Image.Resampling.BICUBIC), ((k % 2) * tile[0], (k // 2) * tile[1])
        )
    rng = np.random.default_rng(seed)
    noisy = np.asarray(canvas, dtype=np.float32) + rng.normal(0, 5.0, (size[1], size[0], 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


class Service:
    """`dupwatch daemon` on a private index, socket and folder, with a NOTIFY_SOCKET."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "w"
        self.root.mkdir(exist_ok=True)
        self.socket = base / "s.sock"
        self.env = {
            **os.environ,
            "DUPWATCH_INDEX": str(base / "idx"),
            "DUPWATCH_SOCKET": str(self.socket),
            "XDG_CONFIG_HOME": str(base / "cfg"),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start and wait for READY=1; returns the seconds it took."""
        notify_path = self.base / "notify.sock"
        notify_path.unlink(missing_ok=True)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
            listener.bind(str(notify_path))
            listener.settimeout(600)
            started = time.perf_counter()
            self.process = subprocess.Popen(
                [DUPWATCH, "daemon", str(self.root)],
                env={**self.env, "NOTIFY_SOCKET": str(notify_path)},
                stderr=open(self.base / "daemon.log", "ab"),  # noqa: SIM115
            )
            while b"READY=1" not in listener.recv(4096):
                pass
            return time.perf_counter() - started

    def status(self) -> dict[str, Any]:
        with Client(self.socket) as client:
            return client.call("status")

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(120)
            self.process = None

    def rss_kib(self) -> tuple[int, int]:
        """RSS of the service process, and of its hashing processes together."""
        assert self.process is not None
        children = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.process.pid)], capture_output=True, text=True
        ).stdout.split()
        grandchildren: list[str] = []
        for child in children:
            grandchildren += subprocess.run(
                ["ps", "-o", "pid=", "--ppid", child], capture_output=True, text=True
            ).stdout.split()
        own = _rss(self.process.pid)
        return own, sum(_rss(int(pid)) for pid in children + grandchildren)


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# Alert latency


VARIANTS = (
    # label, how copy number `trial` of the original is made
    ("resized copy", lambda img, trial: img.resize((img.width - 8 - trial, img.height - 6))),
    # Same size, other quality: the index compares the pixels of every same-size copy at
    # distance 0 (to tell "pixel" from "near"), so this grows with the copies already there.
    ("same size, re-encoded", lambda img, trial: img),
)


def latency(base: Path, trials: int) -> list[tuple[str, list[float]]]:
    service = Service(base)
    originals = {label: mosaic(size, seed=i) for i, (label, size) in enumerate(SIZES)}
    for label, img in originals.items():
        img.save(service.root / f"original_{label.split()[0]}mp.jpg", quality=92)
    service.start()
    arrivals: dict[str, float] = {}
    arrived = threading.Condition()

    def follow() -> None:
        with Client(service.socket, timeout_s=None) as client:
            for event in client.subscribe():
                if event.get("event") == "duplicate":
                    with arrived:
                        arrivals[event["path"]] = time.perf_counter()
                        arrived.notify_all()

    threading.Thread(target=follow, daemon=True).start()
    time.sleep(0.5)  # let the subscription settle before the first trial
    results = []
    try:
        for variant, make in VARIANTS:
            for label, img in originals.items():
                samples = []
                for trial in range(trials + 1):
                    data = _jpeg_bytes(make(img, trial), quality=80 + trial % 10)
                    path = service.root / f"copy_{len(arrivals)}.jpg"
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                    os.write(fd, data)
                    os.close(fd)
                    closed = time.perf_counter()
                    with arrived:
                        if not arrived.wait_for(lambda p=str(path): p in arrivals, timeout=120):
                            raise SystemExit(f"no alert for {path} within 120 s")
                    if trial:  # the first one warms the workers up
                        samples.append((arrivals[str(path)] - closed) * 1000)
                results.append((f"{label}, {variant}", samples))
    finally:
        service.stop()
    return results


def _jpeg_bytes(img: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=quality)
    return out.getvalue()


# Catch-up and idle memory


def build_index(service: Service, files: int) -> float:
    """Write `files` small files in folders of 1,000 and index them without hashing."""
    started = time.perf_counter()
    payload = _png_bytes()
    rng = random.Random(1)
    items = []
    with Index.open(service.env["DUPWATCH_INDEX"]) as index:
        index.add_root(service.root)
        for i in range(files):
            folder = service.root / f"f{i // 1000:03d}"
            if i % 1000 == 0:
                folder.mkdir()
            path = folder / f"i{i:06d}.png"
            path.write_bytes(payload)
            st = os.stat(path)
            fp = Fingerprint(rng.getrandbits(64), rng.randbytes(16), 16, 16, "PNG", st.st_size)
            items.append((path, fp, st))
            if len(items) == 5000:
                index.put_many(items)
                items = []
        if items:
            index.put_many(items)
    return time.perf_counter() - started


def _png_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 20, 30)).save(out, format="PNG")
    return out.getvalue()


def catch_up(base: Path, files: int) -> dict[str, float]:
    service = Service(base)
    built_s = build_index(service, files)
    times = []
    report: dict[str, float] = {"build_s": built_s}
    try:
        for _ in range(2):  # the first start right after building, then a restart
            times.append(service.start())
            status = service.status()
            report["hashed"] = status["hashed"]
            report["files"] = status["files"]
            time.sleep(5)  # idle
            own, workers = service.rss_kib()
            service.stop()
        report["first_s"], report["restart_s"] = times
        report["rss_mib"] = own / 1024
        report["workers_rss_mib"] = workers / 1024
    finally:
        service.stop()
    return report


def print_latency(rows: list[tuple[str, list[float]]]) -> None:
    head = "alert latency: close -> subscriber"
    print(f"{head:<36} {'n':>3} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7}")
    for label, samples in rows:
        p50 = statistics.median(samples)
        p95 = statistics.quantiles(samples, n=20)[18]
        print(f"{label:<36} {len(samples):>3} {p50:>7.1f} {p95:>7.1f} {max(samples):>7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="alerts timed per size")
    parser.add_argument("--files", type=int, default=100_000, help="files for the catch-up")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-catchup", action="store_true")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; dupwatch daemon with its default workers\n")
    if not args.skip_latency:
        base = Path(tempfile.mkdtemp(dir="/tmp", prefix="dwb"))
        try:
            rows = latency(base, args.trials)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        print_latency(rows)
        print()
    if not args.skip_catchup:
        base = Path(tempfile.mkdtemp(dir="/tmp", prefix="dwb"))
        try:
            report = catch_up(base, args.files)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        print(
            f"catch-up over {int(report['files'])} indexed, unchanged files "
            f"(built in {report['build_s']:.0f} s)"
        )
        print(f"  time to READY, first start {report['first_s']:6.2f} s")
        print(f"  time to READY, restart     {report['restart_s']:6.2f} s")
        print(f"  files hashed at start      {int(report['hashed']):6d}")
        print(f"  idle RSS, service          {report['rss_mib']:6.1f} MiB")
        print(f"  idle RSS, hashing workers  {report['workers_rss_mib']:6.1f} MiB (together)")


if __name__ == "__main__":
    main()
