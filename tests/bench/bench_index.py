"""The index at scale: substring tables against a flat numpy scan, the BK-tree and pybktree.

    python tests/bench/bench_index.py [--size 1000000] [--parts query,build,join] [--queries 200]

On synthetic clustered hashes (bench_tree.clustered_hashes: bursts ~5 bits apart, scenes ~14,
strangers ~32), prints one table:

- query p50/p95 at radius 0/4/8/12 (and 14) for the substring tables (store/substrings.py,
  one read transaction per query, as the Index makes), a flat np.bitwise_count scan, the
  LMDB BK-tree (store/bktree.py, what the Index searched up to schema 4) and pybktree (pure
  Python, in memory; --pybktree-queries of the queries), all answers checked against flat;
- bulk build: Index.put_bulk of `size` fingerprints (clustered pHashes, centre hashes ~3 bits
  off, 2% byte copies, a thumbnail and turned hashes each, so that every near pair takes the
  second look) with their pairs at the default radius 12, then `groups --radius 14`
  (Index.groups: recompute_pairs by the self-join, then the groups), in a fresh process whose
  peak RSS and index size on disk are reported;
- self-join at radius 8 and 12 (store/selfjoin.py), or an estimate from the first
  --join-budget-s seconds of its masks when the whole would take longer; with
  --cluster-join, also the same joins on a distributed.LocalCluster of 2 worker processes
  (cluster_join.py: on one 2-core machine the row shows the cluster's overhead, not a gain).

Flat, tree and pybktree rows for the build, groups and joins are estimates from their
measured query p50 in the same run (a build queries each file against about half the index
on average, a join every hash against all of them); they are marked "est.". Data comes from
a fixed seed; the scratch folders under --workdir are removed at the end.
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

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from bench_tree import (  # noqa: E402
    clustered_hashes,
    flat_find,
    flip_masks,
    folder_bytes,
    memory_kb,
    near_queries,
    percentiles_ms,
    time_queries,
)

RADII = (0, 4, 8, 12, 14)
TARGET_RADII = (0, 4, 8, 12)


def data(size: int, seed: int) -> np.ndarray:
    bits = clustered_hashes(np.random.default_rng(seed), size)
    np.random.default_rng(seed + 3).shuffle(bits)  # arrival order: not sorted
    return bits


# --- queries ------------------------------------------------------------------------------------


def measure_queries(args: argparse.Namespace, bits: np.ndarray) -> dict:
    from dupwatch.index.store.bktree import BKTree
    from dupwatch.index.store.substrings import SubstringIndex

    out: dict = {"rows": [], "facts": {}}
    queries = near_queries(np.random.default_rng(args.seed + 1), bits, args.queries).tolist()
    flat = flat_find(bits)

    start = time.perf_counter()
    table = SubstringIndex.open(args.workdir / "substrings")
    table.rebuild(bits)
    out["facts"]["substrings build (rebuild)"] = f"{time.perf_counter() - start:.1f} s"
    table.close()
    start = time.perf_counter()
    table = SubstringIndex.open(args.workdir / "substrings")
    out["facts"]["substrings open"] = f"{(time.perf_counter() - start) * 1e3:.2f} ms"
    out["facts"]["substrings layout"] = str(table.stats()["widths"])
    out["facts"]["substrings on disk"] = (
        f"{folder_bytes(args.workdir / 'substrings') / len(bits):.1f} B/hash"
    )

    tree = None
    if not args.no_tree:
        start = time.perf_counter()
        tree = BKTree.open(args.workdir / "tree")
        tree.update(bits.tolist())
        out["facts"]["BK-tree build"] = f"{time.perf_counter() - start:.1f} s"
    pybk_queries = queries[: args.pybktree_queries]
    pybk = None
    if pybk_queries:
        import pybktree

        start = time.perf_counter()
        pybk = pybktree.BKTree(pybktree.hamming_distance, bits.tolist())
        out["facts"]["pybktree build"] = f"{time.perf_counter() - start:.1f} s"

    for radius in RADII:
        time_queries(table.find, queries[:10], radius)  # warm-up
        sub = time_queries(table.find, queries, radius)
        flat_s = time_queries(flat, queries, radius)
        tree_s = time_queries(tree.find, queries, radius) if tree else [float("nan")]
        pybk_s = time_queries(pybk.find, pybk_queries, radius) if pybk else [float("nan")]
        expected = [flat(q, radius) for q in queries[: args.checked]]
        if [table.find(q, radius) for q in queries[: args.checked]] != expected:
            raise SystemExit(f"substrings and flat disagree at radius {radius}")
        if tree and [tree.find(q, radius) for q in queries[: args.checked]] != expected:
            raise SystemExit(f"tree and flat disagree at radius {radius}")
        if pybk and [sorted(pybk.find(q, radius)) for q in pybk_queries[: args.checked]] != [
            sorted(flat(q, radius)) for q in pybk_queries[: args.checked]
        ]:
            raise SystemExit(f"pybktree and flat disagree at radius {radius}")
        hits = np.mean([len(flat(q, radius)) for q in queries[:50]])
        out["rows"].append(
            (radius, hits, *percentiles_ms(sub), *percentiles_ms(flat_s),
             *percentiles_ms(tree_s), *percentiles_ms(pybk_s))
        )  # fmt: skip
    table.close()
    if tree:
        tree.close()
    return out


# --- bulk build and groups, in a fresh process --------------------------------------------------


def build_worker(folder: str, size: int, seed: int, groups_radius: int, budget_s: float) -> None:
    """Put `size` synthetic fingerprints with put_bulk (stopping after the batch that passes
    `budget_s`), then groups at `groups_radius`; print JSON."""
    from dupwatch.index import Fingerprint, Index
    from dupwatch.index.bulk import BULK_BATCH
    from dupwatch.index.fingerprint.detail import DETAIL_SIDE
    from dupwatch.index.fingerprint.transforms import CENTRE_REGION, CROP_REGIONS

    bits = data(size, seed)
    rng = np.random.default_rng(seed + 5)
    centres = bits ^ flip_masks(rng, len(bits), 0.05)
    digests = rng.integers(0, 256, (len(bits), 16), dtype=np.uint8)
    copies = np.flatnonzero(rng.random(len(bits)) < 0.02)
    digests[copies] = digests[np.maximum(copies - 1, 0)]
    bits[copies] = bits[np.maximum(copies - 1, 0)]  # a byte copy has the same hashes
    centres[copies] = centres[np.maximum(copies - 1, 0)]
    # Thumbnails a little apart (every near pair passes the second look, as true copies
    # would: its cost is measured, not skipped) and turned hashes (detail known).
    base = rng.integers(6, 244, DETAIL_SIDE**2, dtype=np.uint8)  # base + noise stays in 0..255
    thumbnails = np.empty((len(bits), DETAIL_SIDE**2), dtype=np.uint8)
    for start in range(0, len(bits), 65536):  # in parts: the data's own memory stays small
        part = thumbnails[start : start + 65536]
        part[:] = base + rng.integers(0, 13, part.shape, dtype=np.uint8) - np.uint8(6)
    turned = rng.integers(0, 2**63, (len(bits), 7), dtype=np.uint64)
    st = os.stat(folder)
    blank = [0] * len(CROP_REGIONS)

    marks = []  # (files handed over, seconds): put_bulk asks for file k * BULK_BATCH + 1
    start = time.perf_counter()  # once the previous batch is stored

    def items():
        for i, (b, c) in enumerate(zip(bits.tolist(), centres.tolist(), strict=True)):
            if i and i % BULK_BATCH == 0:
                marks.append((i, time.perf_counter() - start))
                if marks[-1][1] > budget_s:
                    return
            crops = list(blank)
            crops[CENTRE_REGION] = c
            fp = Fingerprint(b, digests[i].tobytes(), 640, 480, "JPEG", 100_000,
                             (b, *turned[i].tolist()), tuple(crops),
                             thumbnail=thumbnails[i].tobytes())  # fmt: skip
            yield f"/photos/{i // 1000:05d}/{i:09d}.jpg", fp, st

    before = memory_kb()
    report: dict = {"memory_before_kb": before}
    index_folder = os.path.join(folder, "index")
    with Index.open(index_folder) as index:
        start = time.perf_counter()
        report["stored"] = index.put_bulk(items())
        report["build_s"] = time.perf_counter() - start
        if not marks or marks[-1][0] != report["stored"]:
            marks.append((report["stored"], report["build_s"]))
        report["batches"] = marks
        if report["stored"] < len(bits):
            report["build_est_s"] = extrapolate(report["batches"], len(bits))
            groups_radius = 0
        with index.store.read() as txn:
            report["pair_entries_12"] = txn.stat(index.store.dbs[b"pairs"])["entries"]
        report["disk_after_build"] = folder_bytes(Path(index_folder))
        report["memory_after_build_kb"] = memory_kb()
        if groups_radius:
            start = time.perf_counter()
            index.recompute_pairs(groups_radius)
            report["recompute_s"] = time.perf_counter() - start
            groups = index.groups(radius=groups_radius)
            report["groups_s"] = time.perf_counter() - start
            report["groups"] = len(groups)
            with index.store.read() as txn:
                report["pair_entries_groups"] = txn.stat(index.store.dbs[b"pairs"])["entries"]
            report["disk_after_groups"] = folder_bytes(Path(index_folder))
    start = time.perf_counter()
    with Index.open(index_folder, readonly=True) as index:
        report["open_ms"] = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        index.query(int(bits[0]), 12)
        report["first_query_ms"] = (time.perf_counter() - start) * 1e3
    report["memory_after_kb"] = memory_kb()
    json.dump(report, sys.stdout)


def extrapolate(marks: list[tuple[int, float]], total: int) -> float:
    """Seconds to store `total` files, from (files stored, seconds) after each batch: a
    batch's time grows linearly with the files already stored (its searches meet a share of
    them), fitted by least squares and summed over the batches left."""
    sizes = np.array([0] + [m[0] for m in marks], dtype=float)
    times = np.array([0] + [m[1] for m in marks], dtype=float)
    per_batch = np.diff(times) / np.diff(sizes)  # seconds a file, at each batch
    slope, intercept = np.polyfit(sizes[:-1], per_batch, 1)
    done = sizes[-1]
    return times[-1] + slope * (total**2 - done**2) / 2 + intercept * (total - done)


def measure_build(args: argparse.Namespace) -> dict:
    folder = args.workdir / "build"
    folder.mkdir()
    command = [sys.executable, __file__, "--build-worker", str(folder), str(args.size),
               str(args.seed), str(args.groups_radius), str(args.build_budget_s)]  # fmt: skip
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    shutil.rmtree(folder)
    return json.loads(done.stdout)


# --- self-join ----------------------------------------------------------------------------------


def measure_join(bits: np.ndarray, radius: int, budget_s: float) -> tuple[float, int, bool]:
    """(seconds, pairs, estimated): the whole self-join, or its first `budget_s` seconds of
    masks scaled by the share of masks done (each mask meets about the same candidates)."""
    from dupwatch.index.store.multi_index import Layout
    from dupwatch.index.store.selfjoin import SortedRuns, join_part, join_parts

    widths = Layout.for_size(len(bits)).widths
    units = [(i, mu) for i, masks in join_parts(widths, radius) for mu in masks]
    start = time.perf_counter()
    pairs = done = 0
    runs, current = None, None
    for i, mu in units:
        if current != i:
            runs, current = SortedRuns.of(bits, widths, i), i
        for a, _, _ in join_part(runs, radius, widths, i, (mu,)):
            pairs += len(a)
        done += 1
        if time.perf_counter() - start > budget_s:
            break
    elapsed = time.perf_counter() - start
    if done < len(units):
        # The first masks (fewest bits) find most pairs: the pairs are not extrapolated.
        return elapsed * len(units) / done, -pairs, True
    return elapsed, pairs, False


def measure_cluster_join(bits: np.ndarray, radii: list[int]) -> dict[int, tuple[float, int]]:
    """(seconds, pairs) of the whole self-join on a LocalCluster, at each radius."""
    import distributed

    from dupwatch.index.cluster_join import ClusterJoin

    out = {}
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        for radius in radii:
            start = time.perf_counter()
            pairs = sum(len(a) for a, _, _ in ClusterJoin(cluster.scheduler_address)(bits, radius))
            out[radius] = (time.perf_counter() - start, pairs)
            print(f"joined on the cluster at {radius}", file=sys.stderr, flush=True)
    return out


# --- output -------------------------------------------------------------------------------------


def fmt_s(seconds: float) -> str:
    if seconds != seconds:
        return "-"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def main() -> None:
    if len(sys.argv) == 7 and sys.argv[1] == "--build-worker":
        build_worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]),
                     float(sys.argv[6]))  # fmt: skip
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--parts", default="query,build,join")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--checked", type=int, default=20, help="queries compared with flat")
    parser.add_argument("--groups-radius", type=int, default=14)
    parser.add_argument("--join-radii", default="8,12")
    parser.add_argument("--join-budget-s", type=float, default=600)
    parser.add_argument("--cluster-join", action="store_true",
                        help="also the self-joins on a LocalCluster")  # fmt: skip
    parser.add_argument("--build-budget-s", type=float, default=float("inf"),
                        help="stop the build after this and extrapolate")  # fmt: skip
    parser.add_argument("--no-tree", action="store_true", help="skip the BK-tree")
    parser.add_argument("--pybktree-queries", type=int, default=20,
                        help="queries for pybktree (0: skip it)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    made = args.workdir is None
    args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-index-", dir="/tmp"))
    print(f"command: python tests/bench/bench_index.py {' '.join(sys.argv[1:])}")
    try:
        bits = data(args.size, args.seed)
        n = len(bits)
        q = measure_queries(args, bits) if parts & {"query", "build", "join"} else None
        build = measure_build(args) if "build" in parts else None
        joins = {}
        if "join" in parts:
            for radius in (int(r) for r in args.join_radii.split(",")):
                joins[radius] = measure_join(bits, radius, args.join_budget_s)
                print(f"joined at {radius}", file=sys.stderr, flush=True)
        cluster_joins = measure_cluster_join(bits, list(joins)) if args.cluster_join else {}
    finally:
        if made:
            shutil.rmtree(args.workdir, ignore_errors=True)

    p50 = {r[0]: {"sub": r[2], "flat": r[4], "tree": r[6], "pybk": r[8]} for r in q["rows"]}
    print(f"\n{n:,} clustered hashes; {args.queries} near queries per radius "
          f"({args.pybktree_queries} for pybktree); ms")  # fmt: skip
    head = (f"{'r':>3} {'hits/q':>8} | {'subst p50':>9} {'p95':>7} | {'flat p50':>8} {'p95':>7} | "
            f"{'tree p50':>8} {'p95':>7} | {'pybk p50':>8} {'p95':>7} | "
            f"{'sub/flat':>8} {'sub/tree':>8}")  # fmt: skip
    print(head)
    print("-" * len(head))
    for r, hits, s50, s95, f50, f95, t50, t95, b50, b95 in q["rows"]:
        print(f"{r:>3} {hits:>8.1f} | {s50:>9.3f} {s95:>7.3f} | {f50:>8.3f} {f95:>7.3f} | "
              f"{t50:>8.3f} {t95:>7.3f} | {b50:>8.2f} {b95:>7.2f} | "
              f"{s50 / f50:>8.2f} {s50 / t50:>8.2f}")  # fmt: skip
    for name, value in q["facts"].items():
        print(f"    {name:<28} {value}")

    print(f"\n{'job':<34} | {'this':>10} | {'flat (est.)':>12} | {'tree (est.)':>12} | "
          f"{'pybk (est.)':>12} | detail")  # fmt: skip
    if build:
        # A build queries each file against the files before it: about half the index.
        est = {k: n * p50[12][k] / 2e3 for k in ("flat", "tree", "pybk")}
        pairs12 = build["pair_entries_12"] // 2
        label = fmt_s(build["build_s"])
        if "build_est_s" in build:
            label = fmt_s(build["build_est_s"]) + " est."
            print(
                f"    (built {build['stored']:,} files in {fmt_s(build['build_s'])}, "
                "then extrapolated; per batch: "
                + ", ".join(f"{k:,}: {fmt_s(t)}" for k, t in build["batches"])
                + ")"
            )
        print(f"{'bulk build, pairs at r12':<34} | {label:>10} | "
              f"{fmt_s(est['flat']):>12} | {fmt_s(est['tree']):>12} | "
              f"{fmt_s(est['pybk']):>12} | "
              f"{build['stored']:,} files, {pairs12:,} pairs")  # fmt: skip
        if "groups_s" in build:
            r = args.groups_radius
            est = {k: n * p50[r][k] / 1e3 for k in ("flat", "tree", "pybk")}
            print(f"{f'groups --radius {r}':<34} | {fmt_s(build['groups_s']):>10} | "
                  f"{fmt_s(est['flat']):>12} | {fmt_s(est['tree']):>12} | "
                  f"{fmt_s(est['pybk']):>12} | "
                  f"recompute {fmt_s(build['recompute_s'])}, {build['groups']:,} groups, "
                  f"{build['pair_entries_groups'] // 2:,} pairs")  # fmt: skip
    for radius, (seconds, pairs, estimated) in joins.items():
        est = {k: n * p50[radius][k] / 1e3 for k in ("flat", "tree", "pybk")}
        est["flat"] /= 2  # a blocked flat join compares each pair once
        label = fmt_s(seconds) + (" est." if estimated else "")
        found = f"{pairs:,} pairs" if pairs >= 0 else f"{-pairs:,} pairs in the masks done"
        print(f"{f'self-join r{radius}':<34} | {label:>10} | {fmt_s(est['flat']):>12} | "
              f"{fmt_s(est['tree']):>12} | {fmt_s(est['pybk']):>12} | {found}")  # fmt: skip
    for radius, (seconds, pairs) in cluster_joins.items():
        print(f"{f'self-join r{radius}, LocalCluster':<34} | {fmt_s(seconds):>10} | "
              f"{'':>12} | {'':>12} | {'':>12} | {pairs:,} pairs (2 worker processes)")  # fmt: skip
    if build:
        peak = build["memory_after_kb"]["VmHWM"] / 1024
        print(f"\n    index on disk after build     {build['disk_after_build'] / n:.0f} B/image "
              f"({build['disk_after_build'] / 2**20:.0f} MiB)")  # fmt: skip
        if "disk_after_groups" in build:
            print(f"    after groups (more pairs)     {build['disk_after_groups'] / n:.0f} B/image")
        print(
            f"    peak RSS of the build process {peak:.0f} MiB "
            f"({build['memory_before_kb']['VmRSS'] / 1024:.0f} MiB with the data generated)"
        )
        print(f"    open (read-only, fresh)       {build['open_ms']:.1f} ms; first query "
              f"{build['first_query_ms']:.1f} ms")  # fmt: skip
    print("\nGoals (2 cores):")
    goals = [
        ("query p50 r12 <= 0.3x flat", p50[12]["sub"] <= 0.3 * p50[12]["flat"]),
        ("query p50 r4 <= 0.1x flat", p50[4]["sub"] <= 0.1 * p50[4]["flat"]),
    ]
    if n >= 5_000_000:
        goals.append(("query p50 r12 <= 2 ms", p50[12]["sub"] <= 2))
    if build:
        limit = 3600 if n >= 5_000_000 else 180
        seconds = build.get("build_est_s", build["build_s"])
        goals.append((f"bulk build <= {fmt_s(limit)}", seconds <= limit))
        if "groups_s" in build and n < 5_000_000:
            goals.append(("groups --radius 14 <= 3 min", build["groups_s"] <= 180))
    if 8 in joins and n < 5_000_000:
        goals.append(("self-join r8 <= 15 s", joins[8][0] <= 15))
    for name, ok in goals:
        print(f"    {'PASS' if ok else 'MISS'}  {name}")
    print(f"\n{os.cpu_count()} CPUs, numpy {np.__version__}, python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
