"""The substring (multi-index hashing) tables agree with brute force and a Python set, on a real
LMDB, at every radius 0-16, on random and clustered hashes, through rebuilds of the base."""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import lmdb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from dupwatch.index.store.multi_index import Layout, ball, thresholds
from dupwatch.index.store.substrings import SubstringIndex

HASH_MAX = 2**64 - 1
# Layouts a small set can afford: the default one, and more, narrower substrings (the wide
# 3 x 21-22 bit layout is tested once, below: its offsets alone take 64 MB).
LAYOUTS = {
    "4x16": Layout((16, 16, 16, 16)),
    "8x8": Layout((8,) * 8),
    "5x13": Layout((13, 13, 13, 13, 12)),
}

hashes64 = st.integers(min_value=0, max_value=HASH_MAX)
radii = st.integers(min_value=0, max_value=16)

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def brute_force(items: Iterable[int], bits: int, radius: int) -> list[tuple[int, int]]:
    found = (((bits ^ item).bit_count(), item) for item in set(items))
    return sorted(pair for pair in found if pair[0] <= radius)


def flip(bits: int, positions: Iterable[int]) -> int:
    for position in positions:
        bits ^= 1 << position
    return bits


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


@st.composite
def clustered_hashes(draw: st.DrawFn, max_centres: int = 6, max_members: int = 40) -> list[int]:
    """A few centres, each with near copies a few bits away: the shape real photo hashes have."""
    centres = draw(st.lists(hashes64, min_size=1, max_size=max_centres))
    rng = random.Random(draw(st.integers(min_value=0, max_value=2**32)))
    out = list(centres)
    for centre in centres:
        for _ in range(rng.randint(0, max_members)):
            out.append(flip(centre, rng.sample(range(64), rng.randint(1, 8))))
    return out


hash_lists = st.one_of(
    st.lists(hashes64, max_size=200),
    clustered_hashes(),
    st.lists(st.sampled_from([0, 1, 2**63, 2**63 - 1, HASH_MAX, HASH_MAX - 1]), max_size=6),
)


@st.composite
def queries_near(draw: st.DrawFn, items: list[int]) -> int:
    """Mostly a stored hash with a few bits flipped, so the answers are not empty."""
    if not items or draw(st.integers(0, 4)) == 0:
        return draw(hashes64)
    return flip(draw(st.sampled_from(items)), draw(st.lists(st.integers(0, 63), max_size=10)))


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


# --- interleaved adds and removes ---------------------------------------------------------------


class IndexAgainstASet(RuleBasedStateMachine):
    """Random adds, removes, updates, finds and reopens, through base rebuilds; the index must
    act as the set does."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.mkdtemp(prefix="substrings-sm-", dir="/tmp")
        self.model: set[int] = set()
        self.index: SubstringIndex | None = None

    @initialize(min_delta=st.sampled_from([1, 3, 20]), layout=st.sampled_from(list(LAYOUTS)))
    def open(self, min_delta: int, layout: str) -> None:
        self.knobs = {"min_delta": min_delta, "layout": LAYOUTS[layout], "map_size": 1 << 30}
        self.index = SubstringIndex.open(self.folder, **self.knobs)

    def teardown(self) -> None:
        if self.index is not None:
            self.index.close()
        shutil.rmtree(self.folder)

    def nearby(self, data: st.DataObject) -> int:
        return data.draw(queries_near(sorted(self.model)))

    @rule(data=st.data())
    def add(self, data: st.DataObject) -> None:
        bits = self.nearby(data)
        assert self.index.add(bits) is (bits not in self.model)
        self.model.add(bits)

    @rule(data=st.data(), size=st.integers(0, 40))
    def update(self, data: st.DataObject, size: int) -> None:
        batch = [self.nearby(data) for _ in range(size)]
        assert self.index.update(batch) == len(set(batch) - self.model)
        self.model.update(batch)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def remove_present(self, data: st.DataObject) -> None:
        bits = data.draw(st.sampled_from(sorted(self.model)))
        assert self.index.remove(bits) is True
        self.model.discard(bits)

    @rule(data=st.data())
    def remove_any(self, data: st.DataObject) -> None:
        bits = self.nearby(data)
        assert self.index.remove(bits) is (bits in self.model)
        self.model.discard(bits)

    @rule(data=st.data(), radius=radii)
    def find(self, data: st.DataObject, radius: int) -> None:
        bits = self.nearby(data)
        assert self.index.find(bits, radius) == brute_force(self.model, bits, radius)

    @rule()
    def reopen(self) -> None:
        self.index.close()
        self.index = SubstringIndex.open(self.folder, **self.knobs)

    @invariant()
    def same_members(self) -> None:
        if self.index is None:
            return
        assert len(self.index) == len(self.model)
        assert list(self.index) == sorted(self.model)
        assert self.index.problems() == []


IndexAgainstASet.TestCase.settings = settings(
    max_examples=30, stateful_step_count=30, deadline=None
)
test_index_against_a_set = IndexAgainstASet.TestCase
