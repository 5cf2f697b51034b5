"""Hashing on a Dask cluster: a real distributed.LocalCluster (2 worker processes), started
once per test session; the scan's index must be what a local scan makes, file for file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lmdb
import numpy as np
import pytest
from PIL import Image

from dupwatch.index import Index
from dupwatch.index.cluster_join import ClusterJoin
from dupwatch.index.hashing.child import HASH, ChildHasher
from dupwatch.index.hashing.cluster import ClusterError, DaskEngine
from dupwatch.index.hashing.limits import TimedOut
from dupwatch.index.hashing.tasks import hash_file
from dupwatch.index.store import TABLES, u64
from dupwatch.index.store.selfjoin import self_join

from support import TIMEOUT_S, dupwatch, photo, wait_for

distributed = pytest.importorskip("distributed")

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")


@pytest.fixture(scope="session")
def cluster():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as local:
        yield local


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real photographs, cut into tiles, with copies (exact, re-encoded, resized) and files
    that cannot be fingerprinted."""
    folder = tmp_path_factory.mktemp("cluster") / "pictures"
    (folder / "sub").mkdir(parents=True)
    for i, name in enumerate(PHOTOS):
        img = photo(name)
        for k in range(8):
            box = ((k % 4) * img.width // 4, (k // 4) * img.height // 2)
            tile = img.crop((*box, box[0] + img.width // 4, box[1] + img.height // 2))
            tile.save(folder / f"{i}-{k}.png")
            if k % 3 == 0:
                tile.save(folder / "sub" / f"{i}-{k}-q80.jpg", quality=80)
            if k % 4 == 1:
                tile.resize((tile.width // 2, tile.height // 2)).save(folder / f"{i}-{k}-half.png")
        (folder / f"{i}-copy.png").write_bytes((folder / f"{i}-0.png").read_bytes())
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "not-an-image.png").write_bytes(b"plain text, not a picture\n" * 10)
    (folder / "truncated.jpg").write_bytes((folder / "sub" / "0-0-q80.jpg").read_bytes()[:300])
    return folder


def dump(index_path: Path, folder: Path) -> dict:
    """Every record (all its fields), group and failure of an index, by relative path."""
    base = os.fsencode(folder)
    with Index.open(index_path, readonly=True) as index:
        records = sorted(
            (os.path.relpath(r.path, base), r.bits, r.digest, r.width, r.height, r.format,
             r.size, r.centre, r.pixel_digest)
            for r in index.files()
        )  # fmt: skip
        groups = sorted(
            (os.path.relpath(g.keep.path, base),
             sorted((os.path.relpath(m.record.path, base), str(m.kind), m.distance)
                    for m in g.members))
            for g in index.groups()
        )  # fmt: skip
        failures = sorted((os.path.relpath(f.path, base), f.reason) for f in index.failures())
    return {"records": records, "groups": groups, "failures": failures}


def test_a_cluster_scan_makes_the_index_a_local_scan_makes(cluster, pictures, tmp_path) -> None:
    local = dupwatch("scan", pictures, "--json", index=tmp_path / "local", check=True)
    remote = dupwatch(
        "scan", pictures, "--json", "--cluster", cluster.scheduler_address,
        index=tmp_path / "remote", check=True,
    )  # fmt: skip
    assert json.loads(remote.stdout) == json.loads(local.stdout)
    assert remote.stderr == local.stderr  # the same failures, named alike
    summary = json.loads(remote.stdout)["summary"]
    assert {Path(f["path"]).name for f in summary["failed"]} == {"empty.jpg", "truncated.jpg"}
    assert {Path(f["path"]).name for f in summary["not_images"]} == {"not-an-image.png"}
    assert summary["groups"] >= len(PHOTOS)
    assert dump(tmp_path / "remote", pictures) == dump(tmp_path / "local", pictures)


def test_reindex_on_the_cluster_from_the_config_file(cluster, pictures, tmp_path) -> None:
    dupwatch("scan", pictures, index=tmp_path / "index", check=True)
    before = dump(tmp_path / "index", pictures)
    config = tmp_path / "config.toml"
    config.write_text(f'cluster = "{cluster.scheduler_address}"\n')
    result = dupwatch("reindex", "--config", config, "--progress", index=tmp_path / "index")
    assert result.returncode == 0, result.stderr
    assert dump(tmp_path / "index", pictures) == before
    assert " left, 2 workers" in result.stderr  # the cluster's worker threads, in the progress


def test_the_time_limit_holds_on_the_workers(cluster, tmp_path) -> None:
    heavy = tmp_path / "heavy.png"  # a legitimate 16-bit PNG that takes ~2 s to fingerprint
    Image.linear_gradient("L").resize((6000, 6000)).convert("I").convert("I;16").save(
        heavy, compress_level=1
    )
    small = tmp_path / "small.png"
    photo("coffee.png").save(small)
    paths = [os.fsencode(heavy), os.fsencode(small)]
    with DaskEngine(cluster.scheduler_address, timeout_s=0.3) as engine:
        outcomes = {path: outcome for batch in engine.hash(paths) for path, outcome, _ in batch}
    local = hash_file(os.fsencode(heavy), timeout_s=0.3)[1]
    assert isinstance(outcomes[os.fsencode(heavy)], TimedOut)
    assert outcomes[os.fsencode(heavy)].reason == local.reason
    assert outcomes[os.fsencode(small)].bits == hash_file(os.fsencode(small))[1].bits


def test_a_worker_lost_mid_scan_loses_no_file(cluster, pictures, tmp_path) -> None:
    with DaskEngine(cluster.scheduler_address) as engine:
        pids = engine.client.run(os.getpid)
        killed: list[int] = []

        def kill_one_worker(done: int, total: int) -> None:
            if not killed:  # the first batch is back: kill a worker with a task in hand
                busy = wait_for(
                    lambda: [w for w, tasks in engine.client.processing().items() if tasks],
                    TIMEOUT_S,
                    "a worker with a task in hand",
                )
                victim = pids[busy[0]]
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)

        with Index.open(tmp_path / "index") as index:
            report = index.update([pictures], progress=kill_one_worker, engine=engine)
        # The nanny starts the worker again; wait, so later tests have both.
        wait_for(lambda: len(engine.client.nthreads()) == 2, TIMEOUT_S, "a new worker")
    assert killed
    dupwatch("scan", pictures, index=tmp_path / "local", check=True)
    assert dump(tmp_path / "index", pictures) == dump(tmp_path / "local", pictures)
    assert report.hashed + len(report.failed) == report.seen


def test_ctrl_c_leaves_the_index_consistent(cluster, pictures, tmp_path) -> None:
    with DaskEngine(cluster.scheduler_address) as engine:

        def interrupt(done: int, total: int) -> None:
            if done < total:
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, in the middle of the scan

        with Index.open(tmp_path / "index") as index:
            with pytest.raises(KeyboardInterrupt):
                index.update([pictures], progress=interrupt, engine=engine)
            assert index.check() == []
            assert len(index) < sum(1 for p in pictures.rglob("*") if p.is_file())
            index.update([pictures], engine=engine)  # the next scan hashes the rest
    dupwatch("scan", pictures, index=tmp_path / "local", check=True)
    assert dump(tmp_path / "index", pictures) == dump(tmp_path / "local", pictures)


def test_a_folder_the_workers_cannot_see_is_named(cluster, pictures, tmp_path) -> None:
    """A worker in a mount namespace where the folder's parent is an empty tmpfs: as a
    worker on a machine without the network share."""
    hidden = tmp_path / "share"
    (hidden / "labels").mkdir(parents=True)
    photo("chelsea.png").save(hidden / "labels" / "cat.png")
    scheduler = distributed.LocalCluster(n_workers=0, processes=True, dashboard_address=":0")
    worker_command = (
        f"mount -t tmpfs none {hidden} && exec {sys.executable} -m distributed.cli.dask_worker"
        f" {scheduler.scheduler_address} --nthreads 1 --no-nanny --no-dashboard"
    )
    worker = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", worker_command],
        stderr=subprocess.DEVNULL,
    )
    try:
        with distributed.Client(scheduler.scheduler_address) as client:
            wait_for(lambda: client.nthreads(), TIMEOUT_S, "the worker")
            worker_address = next(iter(client.nthreads()))
        result = dupwatch(
            "scan", hidden / "labels", "--cluster", scheduler.scheduler_address,
            index=tmp_path / "index",
        )  # fmt: skip
    finally:
        worker.terminate()
        worker.wait(30)
        scheduler.close()
    assert result.returncode == 2
    assert f"the Dask worker {worker_address} cannot read {hidden / 'labels'}" in result.stderr
    assert "No such file or directory" in result.stderr
    assert "visible to every worker at the same path" in result.stderr
    with Index.open(tmp_path / "index", readonly=True) as index:
        assert len(index) == 0  # nothing was changed


def test_no_cluster_there_is_a_clear_error(tmp_path) -> None:
    started = time.monotonic()
    result = dupwatch("scan", tmp_path, "--cluster", "tcp://127.0.0.1:9", index=tmp_path / "i")
    assert result.returncode == 2
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in result.stderr
    assert time.monotonic() - started < 60


def test_the_child_hasher_blames_the_file_that_kills_it(tmp_path) -> None:
    """One file at a time in the child: a crash is that file's, reported at its second."""
    good = tmp_path / "good.png"
    photo("coffee.png").save(good)
    # 16-bit 9000x9000: needs ~2 GB, over a 700 MB cap (the child's own libraries, with
    # pillow-heif's, take ~300 MB of address space before any file).
    bomb = tmp_path / "bomb.png"
    Image.fromarray(np.zeros((9000, 9000), dtype=np.uint16)).save(bomb)
    hasher = ChildHasher(timeout_s=30, memory_bytes=700 << 20)
    try:
        outcomes = hasher.run(HASH, [os.fsencode(bomb), os.fsencode(good)])
    finally:
        hasher.close()
    assert [type(o).__name__ for _p, o, _st in outcomes] == ["OutOfMemory", "Fingerprint"]


def test_a_cluster_error_is_a_dupwatch_error() -> None:
    with pytest.raises(ClusterError, match="cannot reach"):
        DaskEngine("tcp://127.0.0.1:9")


# The self-join on the cluster


def clustered_hashes(count: int, seed: int) -> np.ndarray:
    """Random 64-bit hashes, a third of them copies of others with 1-8 bits flipped, and
    some equal ones."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2**64, count, dtype=np.uint64)
    copies = rng.choice(count, count // 3, replace=False)
    flips = rng.integers(0, 64, (len(copies), 8))
    for column in range(rng.integers(1, 9)):
        bits[copies] = bits[copies - 1] ^ (np.uint64(1) << flips[:, column].astype(np.uint64))
    bits[: count // 50] = bits[count // 50 : 2 * (count // 50)]
    return bits


def parts_done(cluster) -> int:
    """Self-join parts the cluster has finished so far (dask names them by the function)."""
    prefix = cluster.scheduler.task_prefixes.get("join_remote")
    return prefix.state_counts["memory"] if prefix is not None else 0


def all_pairs(batches) -> list[tuple[int, int, int]]:
    return sorted(
        (a, b, d) for batch in batches for a, b, d in zip(*(c.tolist() for c in batch), strict=True)
    )


@pytest.mark.parametrize("radius", [0, 3, 8, 12, 16])
def test_the_self_join_on_the_cluster_finds_the_local_pairs(cluster, radius) -> None:
    bits = clustered_hashes(20_000, seed=radius)
    expected = all_pairs(self_join(bits, radius))
    assert expected  # there are pairs to find at every radius
    assert all_pairs(ClusterJoin(cluster.scheduler_address)(bits, radius)) == expected


def test_a_worker_lost_mid_join_loses_no_pair(cluster) -> None:
    bits = clustered_hashes(100_000, seed=7)
    join = ClusterJoin(cluster.scheduler_address)
    parts = join._parts(bits, 10)  # part by part, to kill a worker between two of them
    found = [next(parts)]
    with distributed.Client(cluster.scheduler_address) as client:
        pids = client.run(os.getpid)
        busy = wait_for(
            lambda: [w for w, tasks in client.processing().items() if tasks],
            TIMEOUT_S,
            "a worker with a part in hand",
        )
        os.kill(pids[busy[0]], signal.SIGKILL)
        found.extend(parts)
        wait_for(lambda: len(client.nthreads()) == 2, TIMEOUT_S, "a new worker")
    assert all_pairs(found) == all_pairs(self_join(bits, 10))


def test_groups_at_a_larger_radius_find_their_pairs_on_the_cluster(
    cluster, pictures, tmp_path
) -> None:
    dupwatch("scan", pictures, "--radius", "6", index=tmp_path / "local", check=True)
    dupwatch("scan", pictures, "--radius", "6", index=tmp_path / "remote", check=True)
    joined_before = parts_done(cluster)
    local = dupwatch("groups", "--radius", "14", "--json", index=tmp_path / "local", check=True)
    config = tmp_path / "config.toml"
    config.write_text(f'cluster = "{cluster.scheduler_address}"\n')
    remote = dupwatch(
        "groups", "--radius", "14", "--json", "--config", config,
        index=tmp_path / "remote", check=True,
    )  # fmt: skip
    assert json.loads(remote.stdout) == json.loads(local.stdout)
    assert dump(tmp_path / "remote", pictures) == dump(tmp_path / "local", pictures)
    assert parts_done(cluster) > joined_before  # the parts ran on the cluster's workers


def test_a_repair_finds_the_pairs_again_on_the_cluster(cluster, pictures, tmp_path) -> None:
    index = tmp_path / "index"
    dupwatch("scan", pictures, index=index, check=True)
    before = dump(index, pictures)
    with Index.open(index) as ix:
        record = next(iter(ix.files()))
    env = lmdb.open(str(index), max_dbs=len(TABLES))
    pairs = env.open_db(b"pairs", dupsort=True, create=False)
    by_hash = env.open_db(b"by_hash", dupsort=True, create=False)
    with env.begin(write=True) as txn:
        txn.drop(pairs, delete=False)  # the pairs lost
        txn.delete(u64(record.bits), u64(record.id), db=by_hash)  # damage check finds
    env.close()
    lost = dump(index, pictures)
    assert lost["groups"] == []

    unreachable = dupwatch("check", "--repair", "--cluster", "tcp://127.0.0.1:9", index=index)
    assert unreachable.returncode == 2
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in unreachable.stderr
    assert dump(index, pictures) == lost  # nothing changed

    joined_before = parts_done(cluster)
    repaired = dupwatch("check", "--repair", "--cluster", cluster.scheduler_address, index=index)
    assert repaired.returncode == 0, repaired.stderr
    assert dump(index, pictures) == before
    assert parts_done(cluster) > joined_before
    assert dupwatch("check", index=index).returncode == 0
