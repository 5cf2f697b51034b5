"""`dupwatch scan` of many 12-megapixel JPEGs, cold and again with nothing changed.

    python tests/bench/bench_scan.py [--count 1526] [--megapixels 12] [--cache DIR]

The photos are made once from scikit-image's real photographs (random crops, scaled up to
4000x3000, with sensor-like grain so that the files are as large as a camera's) and kept in
the cache folder for later runs. Prints a table: wall time, files per second, and the time of
the same files through plain `imagehash.phash(Image.open(path))` in one process, on a sample.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imagehash
import numpy as np
import skimage
from PIL import Image

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")


def make_photos(folder: Path, count: int, megapixels: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    existing = len(list(folder.glob("*.jpg")))
    if existing >= count:
        return
    data = Path(skimage.__file__).parent / "data"
    sources = [Image.open(data / name).convert("RGB") for name in PHOTOS]
    width = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    height = int(width * 3 / 4)
    rng = np.random.default_rng(1526)
    grain = rng.normal(0, 6, (height, width, 3)).astype(np.int16)
    print(f"making {count - existing} photos of {width}x{height} in {folder} ...", file=sys.stderr)
    for i in range(existing, count):
        src = sources[i % len(sources)]
        w, h = src.size
        cw, ch = int(w * rng.uniform(0.4, 0.7)), int(h * rng.uniform(0.4, 0.7))
        x, y = int(rng.integers(0, w - cw)), int(rng.integers(0, h - ch))
        big = src.crop((x, y, x + cw, y + ch)).resize((width, height), Image.Resampling.BILINEAR)
        shift = rng.integers(0, 64)
        pixels = np.asarray(big, dtype=np.int16) + np.roll(grain, shift, axis=1)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(
            folder / f"IMG_{i:05d}.jpg", quality=92
        )


def run_scan(folder: Path, index: Path) -> tuple[float, dict]:
    dupwatch = shutil.which("dupwatch") or "dupwatch"
    started = time.perf_counter()
    result = subprocess.run(
        [dupwatch, "scan", str(folder), "--index", str(index), "--json"],
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if result.returncode not in (0, 1):
        sys.exit(f"dupwatch scan failed: {result.stderr}")
    return elapsed, json.loads(result.stdout)["summary"]


def plain_imagehash(files: list[Path]) -> float:
    started = time.perf_counter()
    for path in files:
        imagehash.phash(Image.open(path))
    return (time.perf_counter() - started) / len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1526)
    parser.add_argument("--megapixels", type=float, default=12)
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "dupwatch-bench"
    )
    args = parser.parse_args()
    folder = args.cache / f"scan-{args.megapixels:g}mp-{args.count}"
    make_photos(folder, args.count, args.megapixels)
    files = sorted(folder.glob("*.jpg"))[: args.count]
    size_mb = sum(f.stat().st_size for f in files) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "index"
        cold, summary = run_scan(folder, index)
        warm, again = run_scan(folder, index)
    sample = files[:: max(1, len(files) // 40)]
    per_file = plain_imagehash(sample)
    cores = os.cpu_count()
    print(f"\n{len(files)} JPEGs of {args.megapixels:g} MP ({size_mb / len(files):.1f} MB each), "
          f"{cores} cores")  # fmt: skip
    print(f"{'run':<44} {'seconds':>8} {'files/s':>8} {'hashed':>7}")
    print(f"{'dupwatch scan, new index':<44} {cold:8.1f} {len(files) / cold:8.1f} "
          f"{summary['hashed']:7d}")  # fmt: skip
    print(f"{'dupwatch scan again, nothing changed':<44} {warm:8.2f} {len(files) / warm:8.0f} "
          f"{again['hashed']:7d}")  # fmt: skip
    plain_total = per_file * len(files)
    print(f"{'plain imagehash.phash, 1 process (estimated)':<44} {plain_total:8.1f} "
          f"{1 / per_file:8.1f} {'-':>7}   ({len(sample)} files timed)")  # fmt: skip


if __name__ == "__main__":
    main()
