"""Hamming search at 100k and 1M hashes: the LMDB BK-tree against pybktree and a flat numpy scan.

    python tests/bench/bench_tree.py [--sizes 100000,1000000] [--queries 200]

Prints one table of query latencies (p50/p95 per radius) and one of build, insert, open and
memory figures per data set, then the issue's targets at the largest size. The LMDB tree is
opened and queried in a fresh process, so its open time and RSS are its own. The data comes
from a fixed seed; the tree folders are scratch under --workdir and removed at the end.
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

RADII = (0, 4, 8, 12)
HASH_MAX = 2**64 - 1
Result = list[tuple[int, int]]


# --- data ---------------------------------------------------------------------------------------


def flip_masks(rng: np.random.Generator, count: int, probability: float) -> np.ndarray:
    """`count` masks, each bit set with `probability`; built bit by bit to keep memory small."""
    masks = np.zeros(count, dtype=np.uint64)
    for bit in range(64):
        masks |= (rng.random(count) < probability).astype(np.uint64) << np.uint64(bit)
    return masks


def uniform_hashes(rng: np.random.Generator, size: int) -> np.ndarray:
    return np.unique(rng.integers(0, HASH_MAX, size=size, dtype=np.uint64, endpoint=True))


def clustered_hashes(rng: np.random.Generator, size: int) -> np.ndarray:
    """Photos in scenes in families: bursts ~5 bits apart, related scenes ~14, strangers ~32.

    Families are uniform; a scene is its family with each bit flipped at p=0.12 (~8 bits);
    a photo is its scene with each bit flipped at p=0.04 (~2.5 bits), 8 photos a scene.
    """
    scenes_count = size // 8
    families = rng.integers(0, HASH_MAX, size=max(1, size // 200), dtype=np.uint64, endpoint=True)
    scenes = families[rng.integers(0, len(families), size=scenes_count)]
    scenes ^= flip_masks(rng, scenes_count, 0.12)
    photos = np.repeat(scenes, 8) ^ flip_masks(rng, scenes_count * 8, 0.04)
    return np.unique(photos)


def near_queries(rng: np.random.Generator, stored: np.ndarray, count: int) -> np.ndarray:
    """Stored hashes with two random bits flipped, so every radius above 1 finds something."""
    picked = rng.choice(stored, size=count)
    bits = np.array([rng.choice(64, size=2, replace=False) for _ in range(count)])
    one = np.uint64(1)
    return picked ^ (one << bits[:, 0].astype(np.uint64)) ^ (one << bits[:, 1].astype(np.uint64))


# --- timing -------------------------------------------------------------------------------------


def time_queries(
    find: Callable[[int, int], Result], queries: list[int], radius: int
) -> list[float]:
    """Seconds per query."""
    out = []
    for bits in queries:
        start = time.perf_counter()
        find(bits, radius)
        out.append(time.perf_counter() - start)
    return out


def percentiles_ms(seconds: list[float]) -> tuple[float, float]:
    p50, p95 = np.percentile(np.array(seconds) * 1e3, [50, 95])
    return float(p50), float(p95)


def flat_find(stored: np.ndarray) -> Callable[[int, int], Result]:
    """The baseline: popcount every stored hash, then the same sorted (distance, bits) list."""

    def find(bits: int, radius: int) -> Result:
        distances = np.bitwise_count(stored ^ np.uint64(bits))
        hits = np.flatnonzero(distances <= radius)
        found_d, found_b = distances[hits], stored[hits]
        order = np.lexsort((found_b, found_d))
        return list(zip(found_d[order].tolist(), found_b[order].tolist(), strict=True))

    return find


def memory_kb() -> dict[str, int]:
    fields = ("VmRSS", "RssAnon", "RssFile", "VmHWM")
    out = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in fields:
                out[name] = int(value.split()[0])
    return out


# --- the LMDB tree, measured in a fresh process -------------------------------------------------


def worker(folder: str, queries_path: str, checked: int) -> None:
    """Open an existing tree, time the open and the queries, print JSON on stdout."""
    from dupwatch.index.store.bktree import BKTree

    queries = np.load(queries_path).tolist()
    before = memory_kb()
    start = time.perf_counter()
    tree = BKTree.open(folder)
    open_s = time.perf_counter() - start
    start = time.perf_counter()
    tree.find(queries[0], 8)
    first_query_s = time.perf_counter() - start
    time_queries(tree.find, queries[:20], 4)  # warm-up
    report: dict = {"open_s": open_s, "first_query_s": first_query_s, "radii": {}}
    for radius in RADII:
        report["radii"][radius] = {
            "seconds": time_queries(tree.find, queries, radius),
            "hits": sum(len(tree.find(bits, radius)) for bits in queries) / len(queries),
            "results": [tree.find(bits, radius) for bits in queries[:checked]],
        }
    report["stats"] = tree.stats() if hasattr(tree, "stats") else {}
    report["memory_before_open_kb"] = before
    report["memory_after_kb"] = memory_kb()
    tree.close()
    json.dump(report, sys.stdout)


def measure_tree_in_subprocess(folder: Path, queries: np.ndarray, checked: int) -> dict:
    queries_path = folder.parent / f"{folder.name}-queries.npy"
    np.save(queries_path, queries)
    command = [sys.executable, __file__, "--worker", str(folder), str(queries_path), str(checked)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


# --- one data set -------------------------------------------------------------------------------


@dataclass
class DataSetFigures:
    label: str
    size: int
    requested: int  # the --sizes entry; clustered sets lose a few percent to repeats
    rows: list[tuple] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)
    p50_ms: dict[tuple[str, int], float] = field(default_factory=dict)


def build_tree(folder: Path, stored: np.ndarray) -> float:
    from dupwatch.index.store.bktree import BKTree

    items = stored.tolist()
    start = time.perf_counter()
    tree = BKTree.open(folder)
    added = tree.update(items)
    tree.close()
    elapsed = time.perf_counter() - start
    assert added == len(items), (added, len(items))
    return elapsed


def time_single_writes(folder: Path, fresh: list[int]) -> tuple[float, float]:
    """Hashes a second with one transaction per add, then per remove (each commit is synced)."""
    from dupwatch.index.store.bktree import BKTree

    tree = BKTree.open(folder)
    start = time.perf_counter()
    for bits in fresh:
        tree.add(bits)
    add_s = time.perf_counter() - start
    start = time.perf_counter()
    for bits in fresh:
        tree.remove(bits)
    remove_s = time.perf_counter() - start
    tree.close()
    return len(fresh) / add_s, len(fresh) / remove_s


def measure_pybktree(
    stored: np.ndarray, queries: list[int]
) -> tuple[float, dict[int, list[float]]]:
    import pybktree

    start = time.perf_counter()
    tree = pybktree.BKTree(pybktree.hamming_distance, stored.tolist())
    build_s = time.perf_counter() - start
    return build_s, {radius: time_queries(tree.find, queries, radius) for radius in RADII}


def folder_bytes(folder: Path) -> int:
    return sum(entry.stat().st_blocks * 512 for entry in folder.iterdir())


def measure_data_set(
    args: argparse.Namespace, label: str, stored: np.ndarray, requested: int
) -> DataSetFigures:
    size = len(stored)
    rng = np.random.default_rng(args.seed + 1)
    queries = near_queries(rng, stored, args.queries)
    query_list = queries.tolist()
    folder = args.workdir / f"{label}-{size}"
    figures = DataSetFigures(label, size, requested)

    build_s = build_tree(folder, stored)
    tree = measure_tree_in_subprocess(folder, queries, args.checked)

    flat = flat_find(stored)
    flat_seconds = {}
    for radius in RADII:
        time_queries(flat, query_list[:10], radius)  # warm-up
        flat_seconds[radius] = time_queries(flat, query_list, radius)
        expected = [flat(bits, radius) for bits in query_list[: args.checked]]
        results = [
            [tuple(pair) for pair in found] for found in tree["radii"][str(radius)]["results"]
        ]
        if results != expected:
            raise SystemExit(f"{label} {size}: tree and flat scan disagree at radius {radius}")

    pybk_count = args.pybktree_queries if size <= 200_000 else args.pybktree_queries_large
    pybk_build_s, pybk_seconds = (None, {})
    if pybk_count:
        pybk_build_s, pybk_seconds = measure_pybktree(stored, query_list[:pybk_count])

    for radius in RADII:
        tree_p = percentiles_ms(tree["radii"][str(radius)]["seconds"])
        flat_p = percentiles_ms(flat_seconds[radius])
        pybk_p = percentiles_ms(pybk_seconds[radius]) if pybk_seconds else (float("nan"),) * 2
        figures.p50_ms.update({("tree", radius): tree_p[0], ("flat", radius): flat_p[0]})
        figures.p50_ms[("pybktree", radius)] = pybk_p[0]
        hits = tree["radii"][str(radius)]["hits"]
        figures.rows.append((radius, hits, *tree_p, *flat_p, *pybk_p, pybk_count))

    fresh = uniform_hashes(np.random.default_rng(args.seed + 2), args.adds).tolist()
    add_rate, remove_rate = time_single_writes(folder, fresh)
    after = tree["memory_after_kb"]
    before = tree["memory_before_open_kb"]
    stats = tree["stats"]
    figures.facts = {
        "bulk update": f"{size / build_s:,.0f} hashes/s ({build_s:.2f} s)",
        "one txn per add": f"{add_rate:,.0f} adds/s ({args.adds:,} adds)",
        "one txn per remove": f"{remove_rate:,.0f} removes/s",
        "open (fresh process)": f"{tree['open_s'] * 1e3:.2f} ms",
        "first query r=8": f"{tree['first_query_s'] * 1e3:.2f} ms",
        "RSS after open+queries": (
            f"{after['VmRSS'] / 1024:.0f} MB (anon {after['RssAnon'] / 1024:.0f}, "
            f"file {after['RssFile'] / 1024:.0f}; {before['VmRSS'] / 1024:.0f} MB after imports)"
        ),
        "tree shape": ", ".join(f"{k} {v}" for k, v in stats.items()) or "n/a",
        "on disk": f"{folder_bytes(folder) / 2**20:.1f} MB",
        "pybktree build": f"{pybk_build_s:.1f} s" if pybk_build_s is not None else "skipped",
    }
    shutil.rmtree(folder)
    return figures


# --- output -------------------------------------------------------------------------------------


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b and not np.isnan(a) and not np.isnan(b) else "-"


def print_tables(all_figures: list[DataSetFigures], queries: int) -> None:
    head = (
        f"{'N':>9} {'hashes':<9} {'r':>2} {'hits/q':>8} | {'tree p50':>8} {'p95':>7} | "
        f"{'flat p50':>8} {'p95':>7} | {'pybk p50':>9} {'p95':>9} {'n':>4} | "
        f"{'tree/flat':>9} {'pybk/tree':>9}"
    )
    print(
        f"\nQuery latency in ms: {queries} near queries a radius for tree and flat; pybktree\n"
        "runs only the first n of them (few at 1M, where one query takes up to seconds)"
    )
    print(head)
    print("-" * len(head))
    for figures in all_figures:
        for radius, hits, t50, t95, f50, f95, p50, p95, n in figures.rows:
            print(
                f"{figures.size:>9,} {figures.label:<9} {radius:>2} {hits:>8.1f} | "
                f"{t50:>8.3f} {t95:>7.3f} | {f50:>8.3f} {f95:>7.3f} | "
                f"{p50:>9.2f} {p95:>9.2f} {n:>4} | {ratio(t50, f50):>9} {ratio(p50, t50):>9}"
            )
    print("\nBuild, writes, open and memory")
    for figures in all_figures:
        print(f"{figures.size:,} {figures.label}:")
        for name, value in figures.facts.items():
            print(f"    {name:<24} {value}")


def print_targets(all_figures: list[DataSetFigures]) -> None:
    largest = max(figures.requested for figures in all_figures)
    print("\nTargets at the largest size (p50):")
    for figures in (f for f in all_figures if f.requested == largest):
        p = figures.p50_ms
        checks = [(f"r={r} within 2x of flat", p[("tree", r)] <= 2 * p[("flat", r)]) for r in RADII]
        checks += [(f"r={r} faster than flat", p[("tree", r)] < p[("flat", r)]) for r in (0, 4)]
        speedup = p[("pybktree", 8)] / p[("tree", 8)]
        if not np.isnan(speedup):
            checks.append((f"r=8 >=100x pybktree ({speedup:.0f}x)", speedup >= 100))
        open_ms = float(figures.facts["open (fresh process)"].split()[0])
        checks.append((f"open < 100 ms ({open_ms:.2f} ms)", open_ms < 100))
        for name, ok in checks:
            print(f"    {figures.size:,} {figures.label:<9} {'PASS' if ok else 'MISS'}  {name}")


# --- main ---------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated hash counts")
    parser.add_argument("--queries", type=int, default=200, help="queries per radius (tree, flat)")
    parser.add_argument("--pybktree-queries", type=int, default=100, help="up to 200k hashes")
    parser.add_argument("--pybktree-queries-large", type=int, default=20, help="above 200k")
    parser.add_argument("--adds", type=int, default=5_000, help="single-transaction adds")
    parser.add_argument("--checked", type=int, default=20, help="queries compared with flat")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (disk)")
    return parser.parse_args()


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    args = parse_args()
    made_workdir = args.workdir is None
    args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-tree-", dir="/tmp"))
    all_figures = []
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            for label, make in (("uniform", uniform_hashes), ("clustered", clustered_hashes)):
                stored = make(np.random.default_rng(args.seed), size)
                started = time.perf_counter()
                all_figures.append(measure_data_set(args, label, stored, size))
                took = time.perf_counter() - started
                print(
                    f"measured {len(stored):,} {label} in {took:.0f} s", file=sys.stderr, flush=True
                )
    finally:
        if made_workdir:
            shutil.rmtree(args.workdir, ignore_errors=True)
    print_tables(all_figures, args.queries)
    print_targets(all_figures)
    print(f"\n{os.cpu_count()} CPUs, numpy {np.__version__}, python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
