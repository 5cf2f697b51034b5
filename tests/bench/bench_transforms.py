"""What border trimming, the orientation hashes and the crop hashes cost on top of the pHash.

Run: python tests/bench/bench_transforms.py [--rounds N] [--files N]
Uses the files of bench_hashing.py (0.3/2/12 MP JPEG, 2 MP PNG made from scikit-image's
photos) and times, per image and in this one process (CPU time):
  floor      Image.open + draft('L', (256, 256)) + load
  phash      the version-1 fingerprint hash: the floor + grayscale + 32x32 Lanczos + DCT
  +trim      phash of the picture inside its borders (thumbnail + border search)
  +turns     and the seven other orientation hashes (what --transforms rotate,flip uses)
  fingerprint  everything: also the 29 crop-region hashes (what --transforms crop uses),
             the digest and the EXIF handling
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from bench_hashing import DEFAULT_NOISE_SIGMA, make_files  # noqa: E402

from dupwatch.index.fingerprint import (  # noqa: E402
    DRAFT_SIZE,
    HASH_INPUT_SIZE,
    fingerprint,
    geometry,  # noqa: E402
    phash_bits,
)


def drafted_gray(path: Path) -> Image.Image:
    with Image.open(path) as img:
        img.draft("L", DRAFT_SIZE)
        img.load()
        return img.convert("L")


def floor(path: Path) -> None:
    with Image.open(path) as img:
        img.draft("L", DRAFT_SIZE)
        img.load()


def phash_only(path: Path) -> None:
    small = drafted_gray(path).resize((HASH_INPUT_SIZE,) * 2, Image.Resampling.LANCZOS)
    phash_bits(small)


def trimmed(path: Path, turns: bool = False) -> None:
    gray = drafted_gray(path)
    factor = geometry.thumbnail_factor(gray.size)
    thumb = gray.reduce(factor) if factor > 1 else gray
    left, top, right, bottom = geometry.border_box(np.asarray(thumb))
    box = (left * factor, top * factor, min(right * factor, gray.width),
           min(bottom * factor, gray.height))  # fmt: skip
    pixels = np.asarray(gray.resize((HASH_INPUT_SIZE,) * 2, Image.Resampling.LANCZOS, box=box))
    if turns:
        for undo in geometry.ORIENTATIONS.values():
            phash_bits(undo(pixels))
    else:
        phash_bits(pixels)


METHODS: dict[str, Callable[[Path], object]] = {
    "floor": floor,
    "phash": phash_only,
    "+trim": trimmed,
    "+turns": lambda path: trimmed(path, turns=True),
    "fingerprint": fingerprint,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--files", type=int, default=4, help="files per size class")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="dupwatch-bench-", dir="/tmp"))
    try:
        files = make_files(folder, args.files, DEFAULT_NOISE_SIGMA)
        for paths in files.values():  # warm the page cache and the lazy imports
            for path in paths:
                for method in METHODS.values():
                    method(path)
        print(f"median CPU ms per image over {args.rounds} rounds, one process")
        print(f"{'files':<12}" + "".join(f" {name:>11}" for name in METHODS) + "  turns/phash")
        for label, paths in files.items():
            samples: dict[str, list[float]] = {name: [] for name in METHODS}
            for _ in range(args.rounds):
                for path in paths:
                    for name, method in METHODS.items():
                        start = time.process_time()
                        method(path)
                        samples[name].append(time.process_time() - start)
            ms = {name: statistics.median(times) * 1000 for name, times in samples.items()}
            cells = "".join(f" {ms[name]:>11.2f}" for name in METHODS)
            print(f"{label:<12}{cells}  {ms['+turns'] / ms['phash']:>10.2f}x")
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
