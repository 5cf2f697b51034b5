"""Hashing speed: dupwatch's fingerprint() against plain imagehash and the bare draft decode.

Run: python tests/bench/bench_hashing.py [--rounds N] [--files N] [--noise SIGMA]
Makes 0.3, 2 and 12 megapixel JPEGs (quality 90) and a 2 MP PNG from scikit-image's photos
(upscaled, tiled, with a little sensor-like noise so the files have a photo's size), then
times each method one image at a time in this one process (so: per core) and prints a table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
import skimage.data
import skimage.io
from PIL import Image

from dupwatch.index.fingerprint import fingerprint

SKIMAGE_DATA = Path(skimage.data.__file__).parent
PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "motorcycle_right.png",
)
# Sensor-like grain, so files have a photo's entropy: at 5, a 12 MP JPEG is ~2.7 MB (1.8 bits
# a pixel). Draft decoding still pays for every Huffman-coded bit, so grainier files narrow
# the gap between a draft and a full decode.
DEFAULT_NOISE_SIGMA = 5.0
CLASSES = (  # label, size, format
    ("0.3 MP JPEG", (640, 480), "JPEG"),
    ("2 MP JPEG", (1728, 1152), "JPEG"),
    ("12 MP JPEG", (4000, 3000), "JPEG"),
    ("2 MP PNG", (1728, 1152), "PNG"),
)


@dataclass
class Row:
    label: str
    files: int
    mean_bytes: float
    ms: dict[str, float]
    bit_diffs: list[int]


def make_picture(
    index: int, size: tuple[int, int], rng: np.random.Generator, noise_sigma: float
) -> Image.Image:
    """A 2x2 mosaic of four different photos, scaled to `size`, with mild noise."""
    names = [PHOTOS[(index + k) % len(PHOTOS)] for k in range(4)]
    tile_size = (size[0] // 2, size[1] // 2)
    canvas = Image.new("RGB", size)
    for k, name in enumerate(names):
        tile = Image.fromarray(skimage.io.imread(SKIMAGE_DATA / name)).convert("RGB")
        tile = tile.resize(tile_size, Image.Resampling.BICUBIC)
        canvas.paste(tile, ((k % 2) * tile_size[0], (k // 2) * tile_size[1]))
    noisy = np.asarray(canvas, dtype=np.float32) + rng.normal(0, noise_sigma, (size[1], size[0], 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def make_files(folder: Path, count: int, noise_sigma: float) -> dict[str, list[Path]]:
    rng = np.random.default_rng(1)
    files: dict[str, list[Path]] = {}
    for label, size, fmt in CLASSES:
        files[label] = []
        for index in range(count):
            path = folder / f"{label.replace(' ', '_')}_{index}.{fmt.lower()}"
            options = {"quality": 90} if fmt == "JPEG" else {"compress_level": 6}
            make_picture(index, size, rng, noise_sigma).save(path, fmt, **options)
            files[label].append(path)
    return files


def dupwatch_hash(path: Path) -> None:
    fingerprint(path)


def plain_imagehash(path: Path) -> None:
    imagehash.phash(Image.open(path))


def draft_floor(path: Path) -> None:
    with Image.open(path) as img:
        img.draft("L", (256, 256))
        img.load()


METHODS: dict[str, Callable[[Path], None]] = {
    "dupwatch": dupwatch_hash,
    "imagehash": plain_imagehash,
    "floor": draft_floor,
}


def time_methods(paths: list[Path], rounds: int) -> dict[str, float]:
    """Median CPU milliseconds per image (this process's CPU time: what one core does,
    unmoved by neighbours sharing the machine); methods interleave."""
    samples: dict[str, list[float]] = {name: [] for name in METHODS}
    for _ in range(rounds):
        for path in paths:
            for name, method in METHODS.items():
                start = time.process_time()
                method(path)
                samples[name].append(time.process_time() - start)
    return {name: statistics.median(times) * 1000 for name, times in samples.items()}


def bit_differences(paths: list[Path]) -> list[int]:
    diffs = []
    for path in paths:
        plain = int(str(imagehash.phash(Image.open(path))), 16)
        diffs.append((fingerprint(path).bits ^ plain).bit_count())
    return diffs


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'files':<12} {'n':>2} {'MB':>5}  {'dupwatch ms':>11} {'img/s':>6}  "
        f"{'imagehash ms':>12} {'img/s':>6}  {'floor ms':>8} {'img/s':>6}  "
        f"{'x imagehash':>11} {'/ floor':>7}  {'bits mean':>9} {'max':>3}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        ours, plain, floor = row.ms["dupwatch"], row.ms["imagehash"], row.ms["floor"]
        print(
            f"{row.label:<12} {row.files:>2} {row.mean_bytes / 1e6:>5.2f}  "
            f"{ours:>11.1f} {1000 / ours:>6.1f}  {plain:>12.1f} {1000 / plain:>6.1f}  "
            f"{floor:>8.1f} {1000 / floor:>6.1f}  {plain / ours:>10.1f}x {ours / floor:>6.2f}x  "
            f"{statistics.mean(row.bit_diffs):>9.2f} {max(row.bit_diffs):>3}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="passes over each file set")
    parser.add_argument("--files", type=int, default=6, help="files per size class")
    parser.add_argument(
        "--noise", type=float, default=DEFAULT_NOISE_SIGMA, help="grain added (std of 0-255)"
    )
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="dupwatch-bench-", dir="/tmp"))
    try:
        files = make_files(folder, args.files, args.noise)
        for paths in files.values():  # warm the page cache and every lazy import
            for path in paths:
                path.read_bytes()
                for method in METHODS.values():
                    method(path)
        rows = []
        for label, paths in files.items():
            rows.append(
                Row(
                    label=label,
                    files=len(paths),
                    mean_bytes=statistics.mean(os.path.getsize(p) for p in paths),
                    ms=time_methods(paths, args.rounds),
                    bit_diffs=bit_differences(paths),
                )
            )
        print(
            f"{os.cpu_count()} cores; one process; median CPU ms per image over {args.rounds}"
            f" rounds; img/s = per core; grain sigma {args.noise}"
        )
        print_table(rows)
        print(
            "floor = Image.open + draft('L', (256, 256)) + load, no hashing (PNG has no draft);"
            " bits = Hamming distance dupwatch vs plain imagehash.phash"
        )
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
