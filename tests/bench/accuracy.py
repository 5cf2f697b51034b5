"""Accuracy: how often dupwatch misses a copy or pairs two different photos, against the field.

Run: python tests/bench/accuracy.py [--seed 6] [--originals 228] [--copies 60] [--keep DIR]
         [--imagededup-python PATH]

Generates the benchmark (tests/bench/dupbench.py: real photographs shipped in packages, a copy
of random originals per transform), then scores, pairwise on the same files in one run:
  - dupwatch at radii 0-16, by its pHash alone and by its match distance (whole picture and
    centre region, fingerprint.match_distance), brute force: what the Index finds;
  - plain imagehash pHash/dHash/aHash/wHash with brute force, at thresholds 0-16;
  - imagededup's PHash find_duplicates at its default threshold (10), run by the Python given
    with --imagededup-python (imagededup pulls in torch: keep it in its own venv);
  - the real Index (LMDB, BK-tree, kinds) at dupwatch's default radius, plain and with each of
    --transforms rotate,flip / crop / rotate,flip,crop.
Near precision counts false pairs among originals and exact/pixel/near copies; "false" counts
every pair found between files of different originals (hard copies included).
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
from collections.abc import Callable
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
import dupbench  # noqa: E402  (a sibling script, not a package)

from dupwatch.index.fingerprint import Fingerprint, fingerprint  # noqa: E402
from dupwatch.index.index import Index  # noqa: E402
from dupwatch.index.matches import DEFAULT_RADIUS  # noqa: E402

RADII = range(17)
PLAIN_HASHES: dict[str, Callable[[Image.Image], imagehash.ImageHash]] = {
    "pHash": imagehash.phash,
    "dHash": imagehash.dhash,
    "aHash": imagehash.average_hash,
    "wHash": imagehash.whash,
}
IMAGEDEDUP_SCRIPT = """
import json, sys, logging
logging.disable(logging.WARNING)
from imagededup.methods import PHash
phash = PHash(verbose=False)
encodings = phash.encode_images(image_dir=sys.argv[1], num_enc_workers=1)
duplicates = phash.find_duplicates(encoding_map=encodings, max_distance_threshold=10)
json.dump({"encodings": encodings, "duplicates": duplicates}, sys.stdout)
"""
TRANSFORM_RUNS = ("", "rotate,flip", "crop", "rotate,flip,crop")


def timed_hashes(names: list[str], folder: Path, hash_one: Callable[[Path], int]) -> tuple:
    start = time.process_time()
    values = np.array([hash_one(folder / name) for name in names], dtype=np.uint64)
    return values, (time.process_time() - start) * 1000 / len(names)


def plain(method: Callable) -> Callable[[Path], int]:
    def hash_one(path: Path) -> int:
        with Image.open(path) as img:
            return int(str(method(img)), 16)

    return hash_one


def curve(bench: dupbench.Benchmark, names: list[str], hashes: np.ndarray) -> list:
    return distance_curve(bench, names, dupbench.hamming_matrix(hashes))


def match_distances(fingerprints: list[Fingerprint]) -> np.ndarray:
    """dupwatch's match distance (fingerprint.match_distance) between every two files."""
    full = dupbench.hamming_matrix(np.array([f.bits for f in fingerprints], dtype=np.uint64))
    centre = dupbench.hamming_matrix(np.array([f.centre for f in fingerprints], dtype=np.uint64))
    return np.maximum(full, (full + centre + 1) // 2)


def distance_curve(bench: dupbench.Benchmark, names: list[str], distances: np.ndarray) -> list:
    upper = np.triu(np.ones(distances.shape, dtype=bool), 1)
    rows = []
    for radius in RADII:
        i, j = np.nonzero(upper & (distances <= radius))
        pairs = {frozenset((names[a], names[b])) for a, b in zip(i, j, strict=True)}
        rows.append((radius, dupbench.score(bench, pairs)))
    return rows


def choose_radius(bench: dupbench.Benchmark, rows: list) -> int:
    """The radius of best near F1 among those with no near false pair."""
    clean = [(s.near_f1, -r) for r, s in rows if s.near_false == 0]
    return -max(clean or [(0.0, 0)])[1]


def border_recall(score: dupbench.Score) -> float:
    return float(np.mean([score.recall[n] for n in dupbench.BORDERS]))


def rotate_flip_recall(score: dupbench.Score) -> float:
    return float(np.mean([score.recall[n] for n in dupbench.ROTATE_FLIP]))


def pixel_recall(score: dupbench.Score) -> float:
    return min(score.recall[t.name] for t in dupbench.TRANSFORMS if t.kind == dupbench.PIXEL)


def print_curve(bench: dupbench.Benchmark, label: str, rows: list) -> None:
    print(f"\n{label}: pairs found at each radius (Hamming distance <= r of 64 bits)")
    print(
        f"{'r':>3} {'near R':>7} {'near P':>7} {'near F1':>7} {'near false':>10} "
        f"{'all false':>9} {'exact R':>7} {'pixel R':>7} {'border R':>8} {'rot/flip R':>10} "
        f"{'crop20 R':>8}"
    )
    for radius, s in rows:
        print(
            f"{radius:>3} {s.near_recall:>7.4f} {s.near_precision:>7.4f} {s.near_f1:>7.4f} "
            f"{s.near_false:>10} {s.false_pairs:>9} {s.recall['byte_copy']:>7.3f} "
            f"{pixel_recall(s):>7.3f} {border_recall(s):>8.3f} {rotate_flip_recall(s):>10.3f} "
            f"{s.recall['crop20']:>8.3f}"
        )


def run_imagededup(python: str, folder: Path, names: list[str]) -> tuple | None:
    start = time.monotonic()
    try:
        done = subprocess.run(
            [python, "-c", IMAGEDEDUP_SCRIPT, str(folder)],
            capture_output=True,
            text=True,
            timeout=3600,
        )
    except OSError as error:
        print(f"imagededup: cannot run {python}: {error}")
        return None
    if done.returncode != 0:
        print(f"imagededup: failed ({python}): {done.stderr.strip().splitlines()[-1:]}")
        return None
    seconds = time.monotonic() - start
    result = json.loads(done.stdout)
    pairs = {
        frozenset((name, other))
        for name, others in result["duplicates"].items()
        for other in others
    }
    encodings = result["encodings"]
    hashes = np.array([int(encodings.get(n) or "0", 16) for n in names], dtype=np.uint64)
    return pairs, hashes, seconds * 1000 / len(names)


def run_index(folder: Path, transforms: str, radius: int) -> tuple[dupbench.Score, float, dict]:
    """Index the benchmark folder with the real Index; the pairs it reports as files arrive."""
    place = Path(tempfile.mkdtemp(prefix="dupbench-index-", dir="/tmp"))
    chosen = [t for t in transforms.split(",") if t]
    start = time.monotonic()
    try:
        with Index.open(place, radius=radius, transforms=chosen) as index:
            report = index.update([folder], workers=1)
    finally:
        shutil.rmtree(place)
    seconds = time.monotonic() - start
    pairs: dict[frozenset[str], str] = {}
    for result in report.results:
        for match in result.matches:
            pair = frozenset((Path(result.record.fspath).name, Path(match.record.fspath).name))
            pairs[pair] = match.transform or str(match.kind)
    return dupbench.score(dupbench.load(folder), pairs), seconds, pairs


def print_transform_table(columns: dict[str, dupbench.Score], bench: dupbench.Benchmark) -> None:
    labels = list(columns)
    width = max(11, *(len(label) for label in labels))
    print(f"{'transform':<14} {'kind':<6}" + "".join(f" {label:>{width}}" for label in labels))
    for t in dupbench.ALL_TRANSFORMS:
        cells = "".join(f" {columns[label].recall[t.name]:>{width}.3f}" for label in labels)
        print(f"{t.name:<14} {t.kind:<6}{cells}")
    for name, value in (
        ("near F1", lambda s: f"{s.near_f1:.4f}"),
        ("near false", lambda s: str(s.near_false)),
        ("all false", lambda s: str(s.false_pairs)),
    ):
        cells = "".join(f" {value(columns[label]):>{width}}" for label in labels)
        print(f"{name:<21}{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--originals", type=int, default=228, help="228: every tile")
    parser.add_argument("--copies", type=int, default=60, help="copies per transform")
    parser.add_argument("--keep", type=Path, help="generate into (or reuse) this folder")
    parser.add_argument("--imagededup-python", default=sys.executable)
    parser.add_argument(
        "--radius", type=int, default=DEFAULT_RADIUS, help="radius of the Index runs"
    )
    parser.add_argument(
        "--families", type=int, default=40, help="sprites and diagrams (each); 0: photos only"
    )
    parser.add_argument(
        "--curve-only", action="store_true", help="only dupwatch's curve (for a sweep of seeds)"
    )
    args = parser.parse_args()

    folder = args.keep or Path(tempfile.mkdtemp(prefix="dupbench-", dir="/tmp")) / "bench"
    try:
        if (folder / "truth.json").exists():
            bench = dupbench.load(folder)
        else:
            bench = dupbench.generate(
                folder,
                seed=args.seed,
                count=args.originals,
                copies=args.copies,
                families=args.families,
            )
        evaluate(bench, folder, args)
    finally:
        if args.keep is None:
            shutil.rmtree(folder.parent)


def evaluate(bench: dupbench.Benchmark, folder: Path, args: argparse.Namespace) -> None:
    names = sorted(bench.files)
    print("\n".join(bench.description))
    print(f"command: python tests/bench/accuracy.py {' '.join(sys.argv[1:])}")
    print(f"{os.cpu_count()} cores; CPU ms per image in one process")
    start = time.process_time()
    ours = [fingerprint(folder / name) for name in names]
    ours_ms = (time.process_time() - start) * 1000 / len(names)
    full_rows = curve(bench, names, np.array([f.bits for f in ours], dtype=np.uint64))
    print_curve(bench, "dupwatch's pHash alone (the picture inside uniform borders)", full_rows)
    rows = distance_curve(bench, names, match_distances(ours))
    print_curve(bench, "dupwatch's match distance (whole picture and centre)", rows)
    # The curve has no second look: with sprites and diagrams (--families) it pairs some
    # at every radius, and its choice falls to 0. The Index runs at what users get.
    print(f"\nthe curve's radius: {choose_radius(bench, rows)} (best near F1, no near false pair)")
    chosen = args.radius
    if args.curve_only:
        return

    columns: dict[str, dupbench.Score] = {}
    speed = {"dupwatch": ours_ms}
    print("\nplain imagehash, brute force, full decode (best threshold by near F1, no near false)")
    for label, method in PLAIN_HASHES.items():
        hashes, ms = timed_hashes(names, folder, plain(method))
        speed[label] = ms
        plain_rows = curve(bench, names, hashes)
        best = choose_radius(bench, plain_rows)
        s = plain_rows[best][1]
        columns[f"{label}<={best}"] = s
        print(
            f"  {label}: best threshold {best}: near R {s.near_recall:.4f} P {s.near_precision:.4f}"
            f" F1 {s.near_f1:.4f}; all false pairs {s.false_pairs}; border R "
            f"{border_recall(s):.3f}; rot/flip R {rotate_flip_recall(s):.3f}"
        )
        if label == "pHash":
            print_curve(bench, "plain imagehash pHash", plain_rows)

    imagededup = run_imagededup(args.imagededup_python, folder, names)
    if imagededup is not None:
        pairs, hashes, ms = imagededup
        speed["imagededup"] = ms
        columns["imagededup"] = dupbench.score(bench, pairs)
        print(f"\nimagededup PHash find_duplicates (threshold 10): wall ms/img {ms:.1f}")

    print(f"\nthe real Index (scan of the folder, one process) at radius {chosen}:")
    index_columns = {}
    for transforms in TRANSFORM_RUNS:
        score, seconds, _ = run_index(folder, transforms, chosen)
        label = f"dw {transforms or 'plain'}"
        index_columns[label] = score
        print(f"  {label}: {seconds:.1f} s wall for {len(names)} files")
    print()
    print_transform_table({**index_columns, **columns}, bench)
    print("\nhashing cost, CPU ms per image (one process):")
    print("  " + ", ".join(f"{k} {v:.1f}" for k, v in speed.items()))


if __name__ == "__main__":
    main()
