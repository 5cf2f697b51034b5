"""The substring (multi-index hashing) tables agree with brute force and a Python set, on a real
LMDB, at every radius 0-16, on random and clustered hashes, through rebuilds of the base."""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lmdb
import numpy as np
import pytest
from hash_sets import (
    HASH_MAX,
    MACHINE_SETTINGS,
    SETTINGS,
    HashSetAgainstASet,
    brute_force,
    flip,
    hash_lists,
    hashes64,
    queries_near,
    radii,
)
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant

from dupwatch.index.store.multi_index import Layout, ball, thresholds
from dupwatch.index.store.substrings import SubstringIndex

# Layouts a small set can afford: the default one, and more, narrower substrings (the wide
# 3 x 21-22 bit layout is tested once, below: its offsets alone take 64 MB).
LAYOUTS = {
    "4x16": Layout((16, 16, 16, 16)),
    "8x8": Layout((8,) * 8),
    "5x13": Layout((13, 13, 13, 13, 12)),
}


@contextmanager
def fresh_index(**knobs: object) -> Iterator[SubstringIndex]:
    """An index in a folder of its own; hypothesis examples cannot share pytest's tmp_path."""
    folder = tempfile.mkdtemp(prefix="substrings-", dir="/tmp")
    index = SubstringIndex.open(folder, map_size=1 << 30, **knobs)
    try:
        yield index
    finally:
        index.close()
        shutil.rmtree(folder)


# --- the pigeonhole -----------------------------------------------------------------------------


@pytest.mark.parametrize("widths", [(16, 16, 16, 16), (21, 21, 22), (8,) * 8, (13,) * 4 + (12,)])
def test_thresholds_cover_every_radius(widths: tuple[int, ...]) -> None:
    for radius in range(65):
        ts = thresholds(radius, widths)
        assert sum(t + 1 for t in ts) == radius + 1
        assert max(ts) - min(ts) <= 1 and min(ts) >= -1


def test_ball_holds_every_mask_within_the_radius() -> None:
    for width, radius in [(4, 0), (4, 2), (8, 3), (16, 2)]:
        masks = ball(width, radius)
        expected = [m for m in range(1 << width) if m.bit_count() <= radius]
        assert sorted(masks.tolist()) == expected


# --- find against brute force -------------------------------------------------------------------


@pytest.mark.parametrize("layout", list(LAYOUTS.values()), ids=list(LAYOUTS))
@pytest.mark.parametrize("min_delta", [4, 10_000], ids=["small-delta", "all-in-delta"])
@given(data=st.data(), items=hash_lists)
@SETTINGS
def test_find_equals_brute_force(
    layout: Layout, min_delta: int, data: st.DataObject, items: list[int]
) -> None:
    with fresh_index(layout=layout, min_delta=min_delta) as index:
        half = len(items) // 2
        # Two updates: with a small delta the first makes a base, the second a delta over it.
        added = index.update(items[:half]) + index.update(items[half:])
        assert added == len(set(items))
        for _ in range(4):
            bits = data.draw(queries_near(items), label="query")
            for radius in range(17):
                assert index.find(bits, radius) == brute_force(items, bits, radius)
        for bits in set(items):
            assert index.find(bits, 0) == [(0, bits)]


@given(data=st.data(), items=hash_lists)
@SETTINGS
def test_find_many_equals_one_find_per_query(data: st.DataObject, items: list[int]) -> None:
    with fresh_index(min_delta=8) as index:
        index.update(items)
        queries = [data.draw(queries_near(items), label="query") for _ in range(12)]
        radius = data.draw(radii, label="radius")
        owner, distances, hashes = index.find_many(queries, radius)
        got = sorted(zip(owner.tolist(), distances.tolist(), hashes.tolist(), strict=True))
        expected = sorted(
            (i, d, h) for i, q in enumerate(queries) for d, h in brute_force(items, q, radius)
        )
        assert got == expected


def test_a_batch_against_a_large_delta_equals_brute_force(tmp_path: Path) -> None:
    """Hundreds of queries against a delta of thousands (a bulk batch's search) join it
    through a base made of it on the spot; the answers are the pairs a full comparison finds,
    below and above the radius from which that pays."""
    rng = np.random.default_rng(11)
    centres = rng.integers(0, 2**63, 400, dtype=np.uint64) * np.uint64(2)
    flips = rng.integers(0, 64, (400, 20, 6)).astype(np.uint64)
    noise = np.bitwise_or.reduce(np.uint64(1) << flips, axis=2)
    noise[rng.random((400, 20)) < 0.3] = 0  # some members are their centre
    items = np.unique((centres[:, None] ^ noise).ravel())
    index = SubstringIndex.open(tmp_path / "ix", min_delta=100_000)
    index.update(items[:200])
    index.rebuild(items[:200])  # a small base, and the rest in the delta
    index.update(items[200:])
    assert index.stats()["delta"] == len(items) - 200 > 5000
    queries = items[rng.choice(len(items), 400)] ^ (
        np.uint64(1) << rng.integers(0, 64, 400).astype(np.uint64)
    )
    distance = np.bitwise_count(queries[:, None] ^ items[None, :])
    for radius in (0, 2, 4, 8, 12, 16):
        owner, distances, hashes = index.find_many(queries, radius)
        got = sorted(zip(owner.tolist(), distances.tolist(), hashes.tolist(), strict=True))
        at, where = np.nonzero(distance <= radius)
        expected = sorted(
            zip(at.tolist(), distance[at, where].tolist(), items[where].tolist(), strict=True)
        )
        assert got == expected, radius
    index.close()


@given(items=hash_lists, bits=hashes64)
@SETTINGS
def test_radius_64_finds_everything(items: list[int], bits: int) -> None:
    with fresh_index(min_delta=8) as index:
        index.update(items)
        assert index.find(bits, 64) == brute_force(items, bits, 64)


def test_wide_layout_equals_brute_force(tmp_path: Path) -> None:
    """The layout of big indexes (3 substrings of 21-22 bits), on 3,000 clustered hashes."""
    rng = random.Random(7)
    centres = [rng.getrandbits(64) for _ in range(60)]
    items = [flip(c, rng.sample(range(64), rng.randint(0, 9))) for c in centres for _ in range(50)]
    index = SubstringIndex.open(tmp_path / "wide", layout=Layout((21, 21, 22)), min_delta=100)
    index.update(items[:2000])
    index.update(items[2000:])
    assert index.stats()["widths"] == (21, 21, 22)
    for bits in rng.sample(items, 20):
        query = flip(bits, rng.sample(range(64), 3))
        for radius in range(17):
            assert index.find(query, radius) == brute_force(items, query, radius)
    assert index.problems() == []
    index.close()


def test_layout_follows_the_size() -> None:
    assert Layout.for_size(1000).widths == (16, 16, 16, 16)
    assert Layout.for_size(10_000_000).widths == (21, 21, 22)


# --- the set ------------------------------------------------------------------------------------


def test_empty_index_finds_nothing(tmp_path: Path) -> None:
    index = SubstringIndex.open(tmp_path / "ix")
    assert index.find(0, 64) == []
    assert len(index) == 0 and list(index) == [] and 5 not in index
    assert index.remove(5) is False
    index.close()


def test_out_of_range_bits_raise_value_error(tmp_path: Path) -> None:
    index = SubstringIndex.open(tmp_path / "ix")
    for bad in (-1, 2**64):
        with pytest.raises(ValueError):
            index.add(bad)
        with pytest.raises(ValueError):
            index.find(bad, 3)
    with pytest.raises(ValueError):
        index.find(1, -1)
    with pytest.raises(TypeError):
        index.add(1.5)
    assert "x" not in index
    index.close()


def test_shared_environment_and_caller_transactions(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path / "env"), max_dbs=4, map_size=1 << 28)
    try:
        index = SubstringIndex(env, name=b"substrings", min_delta=2)
        with env.begin(write=True) as txn:
            assert index.add(1, txn=txn) is True
            assert index.update([2, 3, 3, 4, 5], txn=txn) == 4  # past the delta: a base
            assert index.find(1, 1, txn=txn) == [(0, 1), (1, 3), (1, 5)]
        # An aborted transaction leaves it as it was.
        txn = env.begin(write=True)
        index.add(100, txn=txn)
        index.remove(1, txn=txn)
        txn.abort()
        assert sorted(index) == [1, 2, 3, 4, 5]
        with env.begin() as txn:
            assert index.find(2, 0, txn=txn) == [(0, 2)]
    finally:
        env.close()


def test_read_only_environment_serves_reads(tmp_path: Path) -> None:
    items = [1, 2, 3, 2**63, HASH_MAX]
    index = SubstringIndex.open(tmp_path / "ix", min_delta=2)
    index.update(items)
    index.close()
    env = lmdb.open(str(tmp_path / "ix"), readonly=True, max_dbs=2)
    try:
        reader = SubstringIndex(env, db=env.open_db(b"substrings", create=False))
        assert sorted(reader) == items and HASH_MAX in reader
        assert reader.find(1, 1) == [(0, 1), (1, 3)]
        with pytest.raises(lmdb.ReadonlyError):
            reader.add(5)
    finally:
        env.close()


def test_problems_name_a_damaged_table(tmp_path: Path) -> None:
    index = SubstringIndex.open(tmp_path / "ix", min_delta=4)
    index.update(range(0, 4000, 3))
    index.update([7, 8])
    index.remove(3)
    assert index.problems() == []
    with index.env.begin(write=True) as txn:
        raw = bytearray(txn.get(b"base", db=index._db))
        raw[0:16] = raw[8:16] + raw[0:8]  # two hashes of section 0 swap places
        txn.put(b"base", bytes(raw), db=index._db)
    assert any("section 0 is not sorted" in p for p in index.problems())
    with index.env.begin(write=True) as txn:
        txn.put(b"dead", np.array([5], dtype="<u8").tobytes(), db=index._db)
    assert any("removed hash is not in the base" in p for p in index.problems())
    index.rebuild(np.arange(100, dtype=np.uint64))
    assert index.problems() == [] and sorted(index) == list(range(100))
    index.close()


# --- the pinned base ----------------------------------------------------------------------------


@SETTINGS
@given(
    first=hash_lists,
    steps=st.lists(
        st.tuples(st.sampled_from(["update", "remove", "rebuild"]), hash_lists), max_size=8
    ),
    data=st.data(),
)
def test_a_reader_sees_every_write_made_beside_its_pin(
    first: list[int], steps: list[tuple[str, list[int]]], data: st.DataObject
) -> None:
    """Another object writes (as another process would): the reader's pin is never let go
    by those writes, yet every read equals brute force on what is stored now."""
    folder = tempfile.mkdtemp(prefix="substrings-", dir="/tmp")
    env = lmdb.open(folder, max_dbs=2, map_size=1 << 30)
    try:
        writer = SubstringIndex(env, min_delta=2)
        reader = SubstringIndex(env, min_delta=2)
        writer.rebuild(np.array(first, dtype=np.uint64))
        model = set(first)
        for action, items in steps:
            if action == "update":
                writer.update(items)
                model |= set(items)
            elif action == "remove":
                for bits in items[:3] + list(model)[:2]:
                    writer.remove(bits)
                    model.discard(bits)
            else:
                writer.rebuild(np.array(items, dtype=np.uint64))
                model = set(items)
            queries = [data.draw(queries_near(sorted(model)))] if model else [0]
            for bits in queries:
                radius = data.draw(radii)
                assert reader.find(bits, radius) == brute_force(model, bits, radius)
            assert sorted(reader) == sorted(model)
    finally:
        env.close()
        shutil.rmtree(folder)


def test_reads_reuse_the_pin_and_writes_let_it_go(tmp_path: Path) -> None:
    index = SubstringIndex.open(tmp_path / "ix", min_delta=2)
    index.rebuild(np.arange(0, 3000, 7, dtype=np.uint64))
    assert index.find(14, 0) == [(0, 14)]
    pin = index._pin
    assert pin is not None
    index.find(21, 3)
    index.find_many([0, 7], 2)
    assert index._pin is pin  # one snapshot, read once, for every query
    index.add(1)  # into the delta: the base is the same, the pin is let go all the same
    assert index._pin is None
    assert index.find(1, 0) == [(0, 1)]
    assert index._pin is not None and index._pin.token == pin.token
    index.close()
    assert index._pin is None


def test_the_store_lets_the_pin_go_before_a_write_and_a_resize(tmp_path: Path) -> None:
    from dupwatch.index.index import Index

    with Index.open(tmp_path / "index") as index:
        with index.store.read() as txn:
            index.hashes.find(3, 4, txn=txn)  # an empty table: nothing to pin
        index.hashes.rebuild(np.arange(1000, dtype=np.uint64))
        with index.store.read() as txn:
            assert index.hashes.find(3, 0, txn=txn) == [(0, 3)]
        assert index.hashes._pin is not None
        index.store.write(lambda txn: None)
        assert index.hashes._pin is None
        with index.store.read() as txn:
            index.hashes.find(3, 0, txn=txn)
        index.store._grow()
        assert index.hashes._pin is None
        with index.store.read() as txn:
            assert index.hashes.find(999, 0, txn=txn) == [(0, 999)]


# --- interleaved adds and removes ---------------------------------------------------------------


class IndexAgainstASet(HashSetAgainstASet):
    """The substring tables against a set, through base rebuilds; every step leaves them
    consistent."""

    max_flips = 10

    @initialize(min_delta=st.sampled_from([1, 3, 20]), layout=st.sampled_from(list(LAYOUTS)))
    def open(self, min_delta: int, layout: str) -> None:
        self.knobs = {"min_delta": min_delta, "layout": LAYOUTS[layout], "map_size": 1 << 30}
        self.hashes = SubstringIndex.open(self.folder, **self.knobs)

    def reopened(self) -> SubstringIndex:
        return SubstringIndex.open(self.folder, **self.knobs)

    @invariant()
    def consistent(self) -> None:
        if self.hashes is not None:
            assert list(self.hashes) == sorted(self.model)  # in order
            assert self.hashes.problems() == []


IndexAgainstASet.TestCase.settings = MACHINE_SETTINGS
test_index_against_a_set = IndexAgainstASet.TestCase


def test_reads_in_one_thread_while_another_writes(tmp_path: Path) -> None:
    """The daemon's shape: queries in one thread, writes (some rebuilding the base) in another.
    Every read sees a whole snapshot: the hashes that never change are always found."""
    import threading

    rng = np.random.default_rng(5)
    fixed = np.unique(rng.integers(0, 2**63, 3000, dtype=np.uint64))
    index = SubstringIndex.open(tmp_path / "ix", min_delta=64)
    index.rebuild(fixed)
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for _ in range(40):
                added = rng.integers(0, 2**63, 50, dtype=np.uint64) | np.uint64(1 << 63)
                index.update(added)  # every other round past the delta's limit: a new base
                for bits in added[:10].tolist():
                    index.remove(bits)
        except BaseException as error:  # noqa: BLE001 (handed to the main thread)
            errors.append(error)
        finally:
            stop.set()

    writer = threading.Thread(target=write)
    writer.start()
    reads = 0
    while not stop.is_set() or reads < 50:
        bits = int(fixed[reads % len(fixed)])
        assert index.find(bits, 0) == [(0, bits)]
        owner, _, found = index.find_many(fixed[:300], 2)
        assert set(fixed[:300].tolist()) <= set(found.tolist())
        reads += 1
    writer.join()
    assert not errors and index.problems() == []
    index.close()
