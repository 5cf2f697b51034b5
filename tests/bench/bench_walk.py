"""What finding the images of a labelling tree costs: a walk of a folder that holds many more
label files than pictures, with the file system's cache warm.

    python tests/bench/bench_walk.py [--images 2000] [--labels 40000] [--others 2000] [--rounds 5]

The tree: YOLO-style images/ and labels/ (one .txt per picture), plus files whose names say
nothing (no suffix, or an odd one), half of them pictures. Three ways of walking it, side by
side in one run (compare the ratios, not the times of another run):

- by name only: stat every entry, keep the image suffixes (dupwatch before it read formats
  by content; it missed every picture without an image suffix);
- dupwatch's walk (index/folders.py): the kind from the listing, a label or video suffix never
  opened, the first bytes of a file whose name says nothing;
- sniff all: the first bytes of every file that is not an image by name (what reading by
  content would cost without the list of non-image suffixes).
"""

from __future__ import annotations

import argparse
import os
import stat
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from PIL import Image

from dupwatch.index.fingerprint.formats import file_starts_like_image, is_image_name
from dupwatch.index.folders import DEFAULT_IGNORE, is_ignored, walk


def make_tree(root: Path, images: int, labels: int, others: int) -> None:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "misc").mkdir()
    picture = Path(root / "x.jpg")
    Image.new("RGB", (32, 32), "gray").save(picture)
    data = picture.read_bytes()
    picture.unlink()
    for n in range(images):
        (root / "images" / f"{n:06d}.jpg").write_bytes(data)
    for n in range(labels):
        (root / "labels" / f"{n:06d}.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    for n in range(others):
        name = f"frame{n:06d}" if n % 2 else f"notes{n:06d}.dat"
        content = data if n % 4 < 2 else b"some notes, not a picture\n"
        (root / "misc" / name).write_bytes(content)


OLD_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic",
     ".heif", ".avif"}
)  # fmt: skip


def by_name_only(folder: bytes) -> Iterator[bytes]:
    """The walk as it was (index/folders.py before formats by content), its helpers inlined."""
    pending = [folder]
    while pending:
        for entry in os.scandir(pending.pop()):
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                if not is_ignored(entry.name, DEFAULT_IGNORE):
                    pending.append(entry.path)
            elif stat.S_ISREG(info.st_mode):
                suffix = os.path.splitext(os.fsdecode(entry.name))[1]
                if suffix.lower() in OLD_SUFFIXES and not is_ignored(entry.name, DEFAULT_IGNORE):
                    yield entry.path


def dupwatch_walk(folder: bytes) -> Iterator[bytes]:
    return (path for path, _st in walk(folder))


def sniff_all(folder: bytes) -> Iterator[bytes]:
    pending = [folder]
    while pending:
        for entry in os.scandir(pending.pop()):
            if entry.is_dir(follow_symlinks=False):
                pending.append(entry.path)
            elif is_image_name(entry.name) or file_starts_like_image(entry.path):
                entry.stat(follow_symlinks=False)
                yield entry.path


def timed(walker: Callable[[bytes], Iterator[bytes]], folder: bytes, rounds: int) -> tuple:
    times, found = [], 0
    for _ in range(rounds):
        started = time.perf_counter()
        found = sum(1 for _ in walker(folder))
        times.append(time.perf_counter() - started)
    return statistics.median(times), found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--labels", type=int, default=40000)
    parser.add_argument("--others", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dupwatch-walk-") as tmp:
        root = Path(tmp) / "tree"
        make_tree(root, args.images, args.labels, args.others)
        folder = os.fsencode(root)
        files = args.images + args.labels + args.others
        print(f"{files} files: {args.images} images, {args.labels} labels, {args.others} others")
        print(f"{'walk':<16} {'found':>6} {'median s':>9} {'us/file':>8} {'ratio':>6}")
        baseline = None
        for name, walker in (("by name only", by_name_only), ("dupwatch", dupwatch_walk),
                             ("sniff all", sniff_all)):  # fmt: skip
            timed(walker, folder, 1)  # warm the cache
            seconds, found = timed(walker, folder, args.rounds)
            baseline = baseline or seconds
            print(f"{name:<16} {found:>6} {seconds:>9.3f} {seconds / files * 1e6:>8.1f} "
                  f"{seconds / baseline:>6.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
