"""The LMDB BK-tree agrees with brute force, pybktree and a Python set, on a real LMDB."""

from __future__ import annotations

import inspect
import random
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lmdb
import numpy as np
import pybktree
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
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize

from dupwatch.index.store.bktree import BKTree, hamming

# Small leaves make a few hundred hashes build a tree of several levels, so splits get exercised.
SMALL_LEAF = 4


def popcount_distance(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def leaf_kwargs(leaf_size: int | None) -> dict[str, int]:
    """`leaf_size=` for the tree when it takes one (a test knob; the default suits production)."""
    if leaf_size is None:
        return {}
    if "leaf_size" not in inspect.signature(BKTree.open).parameters:
        return {}
    return {"leaf_size": leaf_size}


def open_tree(folder: Path | str, leaf_size: int | None = SMALL_LEAF) -> BKTree:
    return BKTree.open(folder, **leaf_kwargs(leaf_size))


@contextmanager
def fresh_tree(leaf_size: int | None = SMALL_LEAF) -> Iterator[BKTree]:
    """A tree in a folder of its own; hypothesis examples cannot share pytest's tmp_path."""
    folder = tempfile.mkdtemp(prefix="bktree-", dir="/tmp")
    tree = open_tree(folder, leaf_size)
    try:
        yield tree
    finally:
        tree.close()
        shutil.rmtree(folder)


# --- hamming ------------------------------------------------------------------------------------


@given(hashes64, hashes64)
@settings(deadline=None)
def test_hamming_is_the_popcount_of_the_xor(a: int, b: int) -> None:
    assert hamming(a, b) == popcount_distance(a, b) == pybktree.hamming_distance(a, b)


# --- find against brute force -------------------------------------------------------------------


@pytest.mark.parametrize("leaf_size", [SMALL_LEAF, None], ids=["small-leaves", "default-leaves"])
@given(data=st.data(), items=hash_lists)
@SETTINGS
def test_find_equals_brute_force(
    leaf_size: int | None, data: st.DataObject, items: list[int]
) -> None:
    with fresh_tree(leaf_size) as tree:
        assert tree.update(items) == len(set(items))
        for _ in range(5):
            bits = data.draw(queries_near(items), label="query")
            # Every radius, so queries land on the edges of the children's distance ranges.
            for radius in range(17):
                assert tree.find(bits, radius) == brute_force(items, bits, radius)
        for bits in set(items):
            assert tree.find(bits, 0) == [(0, bits)]


@given(items=hash_lists, data=st.data())
@SETTINGS
def test_find_equals_pybktree(items: list[int], data: st.DataObject) -> None:
    reference = pybktree.BKTree(pybktree.hamming_distance, sorted(set(items)))
    with fresh_tree() as tree:
        for bits in items:
            tree.add(bits)
        for _ in range(5):
            bits = data.draw(queries_near(items), label="query")
            radius = data.draw(radii, label="radius")
            # pybktree orders by distance only; sorting adds the tie-break on bits.
            assert tree.find(bits, radius) == sorted(reference.find(bits, radius))


@given(items=hash_lists, bits=hashes64)
@SETTINGS
def test_radius_64_finds_everything(items: list[int], bits: int) -> None:
    with fresh_tree() as tree:
        tree.update(items)
        assert tree.find(bits, 64) == brute_force(items, bits, 64)
        assert len(tree.find(bits, 64)) == len(set(items))


def test_empty_tree_finds_nothing(tmp_path: Path) -> None:
    tree = open_tree(tmp_path / "tree")
    try:
        assert len(tree) == 0
        assert list(tree) == []
        assert 0 not in tree
        for radius in (0, 8, 64):
            assert tree.find(0, radius) == []
            assert tree.find(HASH_MAX, radius) == []
        assert tree.remove(123) is False
    finally:
        tree.close()


def test_tree_emptied_by_removes_finds_nothing(tmp_path: Path) -> None:
    items = [0, 1, 3, 7, 2**63, HASH_MAX, 0xDEADBEEF, 0xDEADBEEE, 0xDEADBEEC]
    tree = open_tree(tmp_path / "tree")
    try:
        tree.update(items)
        for bits in items:
            assert tree.remove(bits) is True
        assert len(tree) == 0
        assert list(tree) == []
        assert tree.find(0xDEADBEEF, 64) == []
    finally:
        tree.close()


# --- a large batch ------------------------------------------------------------------------------


def clustered_array(rng: np.random.Generator, centres: int, per_centre: int) -> np.ndarray:
    """`centres` random hashes, each with `per_centre` copies with about 3 of 64 bits flipped."""
    base = rng.integers(0, HASH_MAX, size=centres, dtype=np.uint64, endpoint=True)
    flips = rng.random((centres, per_centre, 64)) < 3 / 64
    masks = (flips.astype(np.uint64) << np.arange(64, dtype=np.uint64)).sum(axis=2, dtype=np.uint64)
    return np.concatenate([base, (base[:, None] ^ masks).ravel()])


def test_large_update_with_small_leaves_equals_brute_force(tmp_path: Path) -> None:
    rng = np.random.default_rng(20240601)
    uniform = rng.integers(0, HASH_MAX, size=25_000, dtype=np.uint64, endpoint=True)
    items_array = np.concatenate([uniform, clustered_array(rng, 2_500, 9)])  # 50k, some repeats
    items = [int(x) for x in items_array]
    distinct = np.unique(items_array)

    tree = open_tree(tmp_path / "tree", leaf_size=64)
    try:
        assert tree.update(iter(items)) == len(distinct)  # a generator, not a list
        assert len(tree) == len(distinct)
        assert sorted(tree) == [int(x) for x in distinct]
        assert tree.update(items[:1000]) == 0
        if hasattr(tree, "stats"):  # not in the contract; when present, prove the splits happened
            assert tree.stats()["depth"] > 2

        stored = rng.choice(items_array, size=30)
        for position, base in enumerate(stored):
            bits = flip(int(base), rng.choice(64, size=position % 5, replace=False).tolist())
            radius = int(rng.integers(0, 17))
            distances = np.bitwise_count(distinct ^ np.uint64(bits))
            hit = distances <= radius
            order = np.lexsort((distinct[hit], distances[hit]))
            pairs = zip(distances[hit][order], distinct[hit][order], strict=True)
            expected = [(int(d), int(b)) for d, b in pairs]
            assert tree.find(bits, radius) == expected
    finally:
        tree.close()


# --- set semantics ------------------------------------------------------------------------------


def test_add_and_remove_report_membership_changes(tmp_path: Path) -> None:
    tree = open_tree(tmp_path / "tree")
    try:
        assert tree.add(42) is True
        assert tree.add(42) is False
        assert len(tree) == 1
        assert tree.remove(42) is True
        assert tree.remove(42) is False
        assert len(tree) == 0
        assert tree.add(42) is True
        assert tree.find(42, 0) == [(0, 42)]
    finally:
        tree.close()


def test_update_counts_duplicates_once(tmp_path: Path) -> None:
    tree = open_tree(tmp_path / "tree")
    try:
        assert tree.update([5, 5, 5, 6, 6, HASH_MAX, HASH_MAX, 0, 0]) == 4
        assert tree.update([5, 7, 7]) == 1
        assert tree.update([]) == 0
        assert sorted(tree) == [0, 5, 6, 7, HASH_MAX]
        assert len(tree) == 5
    finally:
        tree.close()


@pytest.mark.parametrize("bad", [-1, 2**64, 2**70, -(2**63)])
def test_out_of_range_bits_raise_value_error(tmp_path: Path, bad: int) -> None:
    tree = open_tree(tmp_path / "tree")
    try:
        tree.add(1)
        with pytest.raises(ValueError):
            tree.add(bad)
        with pytest.raises(ValueError):
            tree.update([bad])
        with pytest.raises(ValueError):
            tree.find(bad, 4)
        with pytest.raises(ValueError):
            tree.remove(bad)
        assert sorted(tree) == [1]
        assert len(tree) == 1
    finally:
        tree.close()


def test_rejected_batch_is_all_or_nothing(tmp_path: Path) -> None:
    """A small batch with one bad hash writes none of it (it fits one transaction)."""
    tree = open_tree(tmp_path / "tree")
    try:
        with pytest.raises(ValueError):
            tree.update([10, 11, -5, 12])
        assert sorted(tree) == []
        assert len(tree) == 0
    finally:
        tree.close()


# --- persistence --------------------------------------------------------------------------------


@given(items=hash_lists, removed=st.data(), data=st.data())
@SETTINGS
def test_results_survive_close_and_reopen(
    items: list[int], removed: st.DataObject, data: st.DataObject
) -> None:
    folder = tempfile.mkdtemp(prefix="bktree-", dir="/tmp")
    try:
        tree = open_tree(folder)
        tree.update(items)
        gone = (
            set(removed.draw(st.lists(st.sampled_from(items)), label="removed")) if items else set()
        )
        for bits in gone:
            assert tree.remove(bits) is True
        model = set(items) - gone
        queries = [(data.draw(queries_near(items)), data.draw(radii)) for _ in range(5)]
        before = [tree.find(bits, radius) for bits, radius in queries]
        tree.close()

        reopened = open_tree(folder)
        try:
            assert len(reopened) == len(model)
            assert sorted(reopened) == sorted(model)
            after = [reopened.find(bits, radius) for bits, radius in queries]
            assert after == before == [brute_force(model, bits, radius) for bits, radius in queries]
        finally:
            reopened.close()
    finally:
        shutil.rmtree(folder)


def test_reopen_with_default_leaf_size_reads_a_small_leaf_tree(tmp_path: Path) -> None:
    rng = random.Random(7)
    items = [rng.getrandbits(64) for _ in range(2_000)]
    tree = open_tree(tmp_path / "tree", leaf_size=8)
    tree.update(items)
    tree.close()
    reopened = open_tree(tmp_path / "tree", leaf_size=None)
    try:
        assert sorted(reopened) == sorted(set(items))
        assert reopened.find(items[0], 10) == brute_force(items, items[0], 10)
        assert reopened.add(items[0] ^ 1) is True
        assert reopened.find(items[0], 1) == brute_force(set(items) | {items[0] ^ 1}, items[0], 1)
    finally:
        reopened.close()


# --- a table inside another environment, and caller-owned transactions -------------------------


def test_table_in_a_shared_environment_and_caller_transactions(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path / "env"), max_dbs=8, map_size=64 * 2**20)
    try:
        other = env.open_db(b"files")
        with env.begin(write=True) as txn:
            txn.put(b"a-key", b"a-value", db=other)
        tree = BKTree(env, name=b"tree")
        second = BKTree(env, name=b"tree2")

        with env.begin(write=True) as txn:
            assert tree.add(1, txn=txn) is True
            assert tree.update([2, 3, 3], txn=txn) == 2
            assert tree.find(1, 1, txn=txn) == [(0, 1), (1, 3)]
        assert sorted(tree) == [1, 2, 3]

        # An aborted transaction leaves the tree as it was.
        txn = env.begin(write=True)
        assert tree.add(100, txn=txn) is True
        assert tree.remove(1, txn=txn) is True
        txn.abort()
        assert sorted(tree) == [1, 2, 3]
        assert 100 not in tree
        assert tree.find(1, 0) == [(0, 1)]

        # A read transaction serves find.
        with env.begin() as txn:
            assert tree.find(2, 0, txn=txn) == [(0, 2)]

        # Two trees in one environment stay apart, and the other table is untouched.
        second.update([7, 8])
        assert sorted(second) == [7, 8]
        assert sorted(tree) == [1, 2, 3]
        with env.begin() as txn:
            assert txn.get(b"a-key", db=other) == b"a-value"
    finally:
        env.close()


def test_read_only_environment_serves_reads(tmp_path: Path) -> None:
    items = [1, 2, 3, 2**63, HASH_MAX]
    tree = open_tree(tmp_path / "tree")
    tree.update(items)
    tree.close()
    env = lmdb.open(str(tmp_path / "tree"), readonly=True, max_dbs=2)
    try:
        reader = BKTree(env, db=env.open_db(b"tree", create=False))
        assert len(reader) == len(items)
        assert sorted(reader) == items
        assert HASH_MAX in reader
        assert reader.find(1, 1) == [(0, 1), (1, 3)]
        with pytest.raises(lmdb.ReadonlyError):
            reader.add(5)
    finally:
        env.close()


# --- interleaved inserts and removes ------------------------------------------------------------


class TreeAgainstASet(HashSetAgainstASet):
    """The BK-tree against a set, with leaves small enough to split often."""

    @initialize(leaf_size=st.sampled_from([2, 3, SMALL_LEAF, 16]))
    def open(self, leaf_size: int) -> None:
        self.leaf_size = leaf_size
        self.hashes = open_tree(self.folder, leaf_size)

    def reopened(self) -> BKTree:
        return open_tree(self.folder, self.leaf_size)


TreeAgainstASet.TestCase.settings = MACHINE_SETTINGS
test_tree_against_a_set = TreeAgainstASet.TestCase
