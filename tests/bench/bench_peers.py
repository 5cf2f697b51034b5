"""dupwatch scan against its peers on the same real photographs, cold and warm page cache.

    python tests/bench/bench_peers.py [--cache DIR] [--big 300] [--no-cold] [--cluster]
                                      [--only photos|12mp]

Two folders, made once and kept in the cache folder:
  photos  the duplicate benchmark of tests/bench/dupbench.py (seed 6: 228 originals cut from
          the photographs scikit-image, scikit-learn and matplotlib ship, 320-1,600 px, and
          60 copies per transform: 1,908 JPEG/PNG/WebP files), with its ground truth;
  12mp    JPEGs of 12 megapixels made by bench_scan.py from scikit-image's photographs.
Rows, each run in a process of its own, side by side in one run: `dupwatch scan` into a new
index, czkawka's Python bindings (pip `czkawka`, a Rust core; its own cache kept out),
plain imagehash (`imagehash.phash(Image.open(path))`, one process), and with --cluster
`dupwatch scan --cluster` on a distributed.LocalCluster of 2 worker processes. Cold runs
drop the page cache first (`echo 3 > /proc/sys/vm/drop_caches`: root). CPU is user + system
time of every process the run starts (hashing processes included), sampled from /proc.
Then the pairs each tool found on the photos are scored against the ground truth, and the
cost of each part of a fingerprint is timed on a sample (one process, CPU ms per file).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
import bench_scan  # noqa: E402
import dupbench  # noqa: E402

from dupwatch.index.fingerprint import decode, geometry, phash  # noqa: E402
from dupwatch.index.fingerprint.file import DRAFT_SIZE, fingerprint  # noqa: E402
from dupwatch.index.fingerprint.formats import is_image_name  # noqa: E402

CZKAWKA_SIMILARITY = 10  # czkawka's "high" similarity preset (0-50; lower is stricter)
TICK = os.sysconf("SC_CLK_TCK")

CZKAWKA = """
import json, sys
from czkawka import ImageSimilarity
finder = ImageSimilarity()
finder.set_directories([sys.argv[1]])
finder.set_similarity(int(sys.argv[2]))
print(json.dumps([[str(p) for p in group] for group in finder.find_similar()]))
"""
IMAGEHASH = """
import sys, imagehash
from pathlib import Path
from PIL import Image
names = [p for p in sorted(Path(sys.argv[1]).iterdir()) if p.suffix in (".jpg", ".png", ".webp")]
for p in names:
    imagehash.phash(Image.open(p))
print(len(names))
"""


class TreeCpu:
    """CPU seconds (user + system) used by the descendants of this process while it runs,
    sampled every 50 ms from /proc (a process ending between two samples loses < 50 ms)."""

    def __init__(self) -> None:
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeCpu:
        self.first = dict(self._sample())
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def seconds(self) -> float:
        return sum(cpu - self.first.get(pid, 0.0) for pid, cpu in self.last.items())

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.last.update(self._sample())
        self.last.update(self._sample())

    def _sample(self) -> dict[int, float]:
        parents: dict[int, int] = {}
        cpu: dict[int, float] = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(name)] = int(fields[1])
            cpu[int(name)] = (int(fields[11]) + int(fields[12])) / TICK
        mine, todo = set(), [os.getpid()]
        while todo:
            pid = todo.pop()
            children = [p for p, parent in parents.items() if parent == pid and p not in mine]
            mine.update(children)
            todo += children
        return {pid: cpu[pid] for pid in mine}


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """(wall s, CPU s of every process it started, stdout) of one command."""
    with TreeCpu() as cpu:
        started = time.perf_counter()
        result = subprocess.run(
            command, capture_output=True, text=True, env={**os.environ, **(env or {})}
        )
        wall = time.perf_counter() - started
    if result.returncode not in (0, 1):
        sys.exit(f"{command[:3]} failed: {result.stderr[-2000:]}")
    return wall, cpu.seconds, result.stdout


def dupwatch_command(folder: Path, index: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dupwatch.daemon.cli.main", "scan", str(folder), "--index",
            str(index), "--json", *extra]  # fmt: skip


def run_tools(
    folder: Path, cold: bool, cluster: str | None, tmp: Path
) -> dict[str, tuple[float, float, str]]:
    runs: dict[str, tuple[float, float, str]] = {}
    tools: dict[str, Callable[[], tuple[float, float, str]]] = {
        "dupwatch scan": lambda: timed(dupwatch_command(folder, tmp / f"i{time.time_ns()}")),
        "czkawka (Rust, all cores)": lambda: timed(
            [sys.executable, "-c", CZKAWKA, str(folder), str(CZKAWKA_SIMILARITY)],
            env={"HOME": str(tmp), "XDG_CACHE_HOME": str(tmp / "cache")},
        ),
        "plain imagehash, 1 process": lambda: timed([sys.executable, "-c", IMAGEHASH, str(folder)]),
    }
    if cluster:
        tools["dupwatch scan --cluster (LocalCluster)"] = lambda: timed(
            dupwatch_command(folder, tmp / f"c{time.time_ns()}", "--cluster", cluster)
        )
    for name, run in tools.items():
        if cold:
            drop_caches()
        runs[name] = run()
    return runs


def print_runs(label: str, files: int, runs: dict[str, tuple[float, float, str]]) -> None:
    base = runs["dupwatch scan"][0]
    print(f"\n{label}: {files} files, {os.cpu_count()} cores")
    print(f"{'run':<40} {'wall s':>7} {'files/s':>8} {'CPU s':>7} {'dupwatch files/s':>17}")
    for name, (wall, cpu, _out) in runs.items():
        ratio = "" if name == "dupwatch scan" else f"{wall / base:.2f}x this"
        print(f"{name:<40} {wall:7.2f} {files / wall:8.1f} {cpu:7.2f} {ratio:>17}")


# Accuracy on the photos' ground truth


def group_pairs(groups: list[list[str]]) -> set[frozenset[str]]:
    return {frozenset((Path(a).name, Path(b).name)) for g in groups for a in g for b in g if a < b}


def print_accuracy(bench: dupbench.Benchmark, runs: dict[str, tuple[float, float, str]]) -> None:
    found = {
        "dupwatch": group_pairs(
            [
                [g["keep"], *(f["path"] for f in g["files"][1:])]
                for g in json.loads(runs["dupwatch scan"][2])["groups"]
            ]
        ),  # fmt: skip
        "czkawka": group_pairs(json.loads(runs["czkawka (Rust, all cores)"][2])),
    }
    print("\naccuracy on the photos' ground truth (every pair inside a reported group)")
    print(f"{'tool':<10} {'near recall':>11} {'near precision':>14} {'false pairs':>11}")
    for name, pairs in found.items():
        score = dupbench.score(bench, pairs)
        print(f"{name:<10} {score.near_recall:11.3f} {score.near_precision:14.3f} "
              f"{score.false_pairs:11d}")  # fmt: skip


# The parts of a fingerprint


def stage_costs(paths: list[Path], rounds: int = 3) -> dict[str, float]:
    """Median CPU ms per file of each part of fingerprint(), of the bare draft decode and
    of plain imagehash, in this one process."""
    samples: dict[str, list[float]] = {}

    def tick(name: str, since: float) -> float:
        now = time.process_time()
        samples.setdefault(name, []).append(now - since)
        return now

    for _ in range(rounds):
        for path in paths:
            t = time.process_time()
            with Image.open(path) as img:
                img.draft("L", DRAFT_SIZE)
                img.load()
            t = tick("floor: open + draft decode", t)
            data = decode.read_bytes(path)
            t = tick("read the bytes", t)
            img = decode.open_image(path, data, decode.DEFAULT_MAX_PIXELS)
            img.draft("L", DRAFT_SIZE)
            img.load()
            t = tick("decode (draft)", t)
            orientation = decode.orientation_of(img)
            gray = decode.transpose(decode.to_gray(path, img), orientation)
            t = tick("EXIF + grey", t)
            factor = geometry.thumbnail_factor(gray.size)
            thumb = gray.reduce(factor) if factor > 1 else gray
            inner = geometry.border_box(np.asarray(thumb))
            left, top, right, bottom = inner
            t = tick("thumbnail + border trim", t)
            right, bottom = min(right * factor, gray.width), min(bottom * factor, gray.height)
            box = (float(left * factor), float(top * factor), float(right), float(bottom))
            small = gray.resize((32, 32), Image.Resampling.LANCZOS, box=box)
            t = tick("32x32 Lanczos", t)
            turns = np.stack([undo(np.asarray(small)) for undo in geometry.ORIENTATIONS.values()])
            phash.phash_many(turns)
            t = tick("8 orientation hashes", t)
            phash.phash_many(phash._crop_inputs(thumb, inner))
            t = tick("29 crop hashes", t)
            hashlib.blake2b(data, digest_size=16).digest()
            t = tick("content digest (blake2b)", t)
            fingerprint(path)
            t = tick("fingerprint(), all of it", t)
            import imagehash

            imagehash.phash(Image.open(path))
            tick("plain imagehash.phash", t)
    return {name: statistics.median(values) * 1000 for name, values in samples.items()}


def print_stages(label: str, costs: dict[str, float]) -> None:
    floor = costs["floor: open + draft decode"]
    print(f"\nparts of a fingerprint, {label} (median CPU ms per file, one process)")
    for name, ms in costs.items():
        print(f"  {name:<28} {ms:8.2f} ms  {ms / floor:6.2f}x the floor")


def start_cluster():  # noqa: ANN201
    import distributed

    return distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "dupwatch-bench"
    )
    parser.add_argument("--big", type=int, default=300, help="12 MP JPEGs")
    parser.add_argument("--no-cold", action="store_true", help="warm page cache only")
    parser.add_argument("--cluster", action="store_true", help="also scan on a LocalCluster")
    parser.add_argument("--only", choices=("photos", "12mp"))
    args = parser.parse_args()
    photos = args.cache / "peers-photos"
    if not (photos / "truth.json").exists():
        print(f"making the photos in {photos} ...", file=sys.stderr)
        dupbench.generate(photos, seed=6, count=228, copies=60, sizes=(320, 1600))
    big = args.cache / f"scan-12mp-{args.big}"
    if args.only != "photos":
        bench_scan.make_photos(big, args.big, 12)
    cluster = start_cluster() if args.cluster else None
    address = cluster.scheduler_address if cluster else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for label, folder in (("photos", photos), ("12mp", big)):
                if args.only and args.only != label:
                    continue
                files = sorted(p for p in folder.iterdir() if is_image_name(p.name))
                for cold in (False,) if args.no_cold else (True, False):
                    if not cold:
                        timed(dupwatch_command(folder, Path(tmp) / "warm-up"))
                    runs = run_tools(folder, cold, address, Path(tmp))
                    cache = "cold page cache" if cold else "warm page cache"
                    print_runs(f"{label}, {cache}", len(files), runs)
                    if label == "photos" and not cold:
                        print_accuracy(dupbench.load(photos), runs)
                sample = files[:: max(1, len(files) // (30 if label == "photos" else 10))]
                print_stages(label, stage_costs(sample))
    finally:
        if cluster is not None:
            cluster.close()


if __name__ == "__main__":
    main()
