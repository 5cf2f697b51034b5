"""A BK-tree of 64-bit hashes whose nodes live in LMDB and whose leaves are buckets.

A classic BK-tree keeps one hash per node and, at the radii that matter for
near-duplicates (4 to 12 bits of 64), visits most of its nodes. Here an inner
node holds a pivot hash and routes every hash by its Hamming distance to the
pivot into one of a few children, each owning a contiguous range of distances
(a BK-tree edge labelled with a range instead of one distance, so that children
stay balanced). Leaves are sorted buckets of packed little-endian uint64
hashes, scanned with numpy straight out of LMDB's memory map. The triangle
inequality prunes: a child whose range misses [d - radius, d + radius], where d
is the query's distance to the pivot, cannot hold a match.

The tree is a set of distinct hashes. Mapping hashes to files is the Index's
job. Opening a tree reads nothing but a header: there is nothing to rebuild.
"""

from __future__ import annotations

import operator
import os
import struct
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import lmdb
import numpy as np

from dupwatch.index.store.hash_set import StoredHashSet

__all__ = ["BKTree", "hamming"]

HASH_BITS = 64
# Hashes per bucket before it splits (256 KiB of uint64). Visiting a bucket costs
# a few microseconds however small it is, so at radius 8-12, where most buckets
# are visited, fewer larger buckets win; measured in tests/bench/bench_tree.py.
DEFAULT_LEAF_SIZE = 32768
DEFAULT_FANOUT = 8  # children made when a bucket splits
BATCH_SIZE = 100_000  # hashes per write transaction in update()

_HEADER_KEY = b"H"  # node keys are 8 bytes, so a 1-byte key cannot collide
_HEADER = struct.Struct("<QQQII")  # root id, next id, count, leaf size, fanout
_LEAF = b"L"
_INNER = b"N"
_NODE_HEAD = 8  # kind byte + padding, so packed hashes start 8 bytes in
_U64 = np.dtype("<u8")


def hamming(a: int, b: int) -> int:
    """Number of bits that differ between two hashes.

    >>> hamming(0b1011, 0b0001)
    2
    """
    return (a ^ b).bit_count()


def _check_bits(bits: int) -> int:
    bits = operator.index(bits)  # ints and numpy integers; not floats or strings
    if not 0 <= bits < 1 << HASH_BITS:
        raise ValueError(f"hash {bits} is not an unsigned 64-bit integer")
    return bits


def _node_key(node_id: int) -> bytes:
    return node_id.to_bytes(8, "big")


@dataclass
class _Leaf:
    bits: np.ndarray  # sorted, unique uint64


@dataclass
class _Inner:
    pivot: int
    his: list[int]  # child i owns distances his[i-1]+1 .. his[i]; his[-1] == 64
    children: list[int]

    def child_for(self, distance: int) -> int:
        for hi, child in zip(self.his, self.children, strict=True):
            if distance <= hi:
                return child
        raise AssertionError("ranges cover 0..64")


def _encode(node: _Leaf | _Inner) -> bytes:
    if isinstance(node, _Leaf):
        return _LEAF + bytes(_NODE_HEAD - 1) + node.bits.astype(_U64, copy=False).tobytes()
    k = len(node.children)
    return b"".join(
        [
            _INNER + bytes([k]) + bytes(_NODE_HEAD - 2),
            struct.pack("<Q", node.pivot),
            struct.pack(f"<{k}Q", *node.children),
            bytes(node.his),
        ]
    )


def _decode(raw: bytes | memoryview) -> _Leaf | _Inner:
    if raw[:1] == _LEAF:
        return _Leaf(np.frombuffer(raw, dtype=_U64, offset=_NODE_HEAD).copy())
    k = raw[1]
    (pivot,) = struct.unpack_from("<Q", raw, _NODE_HEAD)
    children = list(struct.unpack_from(f"<{k}Q", raw, _NODE_HEAD + 8))
    his = list(bytes(raw[_NODE_HEAD + 8 + 8 * k : _NODE_HEAD + 8 + 9 * k]))
    return _Inner(pivot, his, children)


def _distances(bits: np.ndarray, pivot: int) -> np.ndarray:
    return np.bitwise_count(bits ^ np.uint64(pivot))


def _ranges(distances: np.ndarray, fanout: int) -> list[int]:
    """Upper bounds of contiguous distance ranges holding about len/fanout hashes each.

    A range closes before it would overflow, so two distinct distances always
    give two ranges and a split always makes progress.
    """
    counts = np.bincount(distances, minlength=HASH_BITS + 1)
    target = len(distances) / fanout
    his: list[int] = []
    held = 0
    last = 0
    for distance in np.flatnonzero(counts).tolist():
        if held and held + counts[distance] > target:
            his.append(last)
            held = 0
        held += int(counts[distance])
        last = distance
    his.append(HASH_BITS)
    return his


class _Edit:
    """The nodes one write transaction touches, kept decoded until flush()."""

    def __init__(self, tree: BKTree, txn: lmdb.Transaction) -> None:
        self.tree = tree
        self.txn = txn
        self.nodes: dict[int, _Leaf | _Inner] = {}
        self.dirty: set[int] = set()
        self.root, self.next_id, self.count = tree._read_header(txn)

    def node(self, node_id: int) -> _Leaf | _Inner:
        if node_id not in self.nodes:
            raw = self.txn.get(_node_key(node_id), db=self.tree._db)
            self.nodes[node_id] = _decode(raw)
        return self.nodes[node_id]

    def put(self, node_id: int, node: _Leaf | _Inner) -> None:
        self.nodes[node_id] = node
        self.dirty.add(node_id)

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def add(self, node_id: int, bits: np.ndarray) -> int:
        """Add sorted unique `bits` below `node_id`; return how many were new."""
        node = self.node(node_id)
        if isinstance(node, _Inner):
            added = 0
            slots = np.searchsorted(node.his, _distances(bits, node.pivot))
            for slot in np.unique(slots):
                added += self.add(node.children[slot], bits[slots == slot])
            return added
        # The bucket is sorted: insert the new hashes in place instead of re-sorting it.
        stored = node.bits
        at = np.searchsorted(stored, bits)
        present = np.zeros(len(bits), dtype=bool)
        inside = at < len(stored)
        present[inside] = stored[at[inside]] == bits[inside]
        added = len(bits) - int(present.sum())
        if added:
            merged = np.insert(stored, at[~present], bits[~present])
            self.put(node_id, _Leaf(merged))
            if len(merged) > self.tree.leaf_size:
                self.split(node_id, merged)
        return added

    def split(self, node_id: int, bits: np.ndarray) -> None:
        """Turn an overfull leaf into an inner node over balanced child leaves."""
        pivot = int(bits[len(bits) // 2])
        distances = _distances(bits, pivot)
        his = _ranges(distances, self.tree.fanout)
        slots = np.searchsorted(his, distances)
        children = [self.new_id() for _ in his]
        self.put(node_id, _Inner(pivot, his, children))
        for slot, child in enumerate(children):
            part = bits[slots == slot]
            self.put(child, _Leaf(part))
            # One distance can hold more than a bucket; a new pivot splits it again.
            if len(part) > self.tree.leaf_size and len(his) > 1:
                self.split(child, part)

    def remove(self, bits: int) -> bool:
        node_id = self.root
        node = self.node(node_id)
        while isinstance(node, _Inner):
            node_id = node.child_for(hamming(bits, node.pivot))
            node = self.node(node_id)
        at = int(np.searchsorted(node.bits, np.uint64(bits)))
        if at == len(node.bits) or int(node.bits[at]) != bits:
            return False
        # An emptied bucket stays: its range still routes future hashes.
        self.put(node_id, _Leaf(np.delete(node.bits, at)))
        return True

    def flush(self) -> None:
        for node_id in self.dirty:
            self.txn.put(_node_key(node_id), _encode(self.nodes[node_id]), db=self.tree._db)
        self.tree._write_header(self.txn, self.root, self.next_id, self.count)


class BKTree(StoredHashSet):
    """A set of 64-bit hashes searchable by Hamming radius, stored in LMDB.

    `BKTree.open(folder, leaf_size=..., fanout=...)` gives a tree in an LMDB environment of
    its own;
    `BKTree(env, name=b"tree")` keeps it in a named table of an existing
    environment, and every method then takes `txn=` so that tree changes can
    share a transaction with other tables.
    """

    def __init__(
        self,
        env: lmdb.Environment,
        *,
        name: bytes = b"tree",
        db: object | None = None,
        leaf_size: int = DEFAULT_LEAF_SIZE,
        fanout: int = DEFAULT_FANOUT,
        owns_env: bool = False,
    ) -> None:
        """`db` is a table handle already opened (for an environment opened read-only)."""
        if leaf_size < 2 or not 2 <= fanout <= 64:
            raise ValueError("leaf_size must be >= 2 and fanout within 2..64")
        self.env = env
        self._owns_env = owns_env
        self._db = db if db is not None else env.open_db(name)
        with env.begin(db=self._db) as txn:
            header = txn.get(_HEADER_KEY)
        if header is None and not env.flags()["readonly"]:
            with env.begin(write=True, db=self._db) as txn:
                txn.put(_node_key(1), _encode(_Leaf(np.empty(0, _U64))))
                txn.put(_HEADER_KEY, _HEADER.pack(1, 2, 0, leaf_size, fanout))
        elif header is not None:
            # A tree keeps the shape it was built with.
            _, _, _, leaf_size, fanout = _HEADER.unpack(header)
        self.leaf_size = leaf_size
        self.fanout = fanout

    @classmethod
    def open(
        cls,
        folder: str | os.PathLike,
        *,
        map_size: int | None = None,
        leaf_size: int = DEFAULT_LEAF_SIZE,
        fanout: int = DEFAULT_FANOUT,
    ) -> BKTree:
        """Open (or create) a tree in an LMDB environment of its own in `folder`."""
        return super().open(folder, map_size=map_size, leaf_size=leaf_size, fanout=fanout)

    def __repr__(self) -> str:
        return f"<BKTree of {len(self)} hashes, buckets of {self.leaf_size}>"

    # Transactions

    @contextmanager
    def _editing(self, txn: lmdb.Transaction | None) -> Iterator[_Edit]:
        if txn is not None:
            edit = _Edit(self, txn)
            yield edit
            edit.flush()
        else:
            with self.env.begin(write=True) as own:
                edit = _Edit(self, own)
                yield edit
                edit.flush()

    def _read_header(self, txn: lmdb.Transaction) -> tuple[int, int, int]:
        raw = txn.get(_HEADER_KEY, db=self._db)
        if raw is None:
            return 1, 2, 0  # a reader that came before the writer made the tree: empty
        root, next_id, count, _, _ = _HEADER.unpack(bytes(raw))
        return root, next_id, count

    def _write_header(self, txn: lmdb.Transaction, root: int, next_id: int, count: int) -> None:
        header = _HEADER.pack(root, next_id, count, self.leaf_size, self.fanout)
        txn.put(_HEADER_KEY, header, db=self._db)

    def clear(self, *, txn: lmdb.Transaction | None = None) -> None:
        """Remove every hash."""
        with self._editing(txn) as edit:
            edit.txn.drop(self._db, delete=False)
            edit.root, edit.next_id, edit.count = 1, 2, 0
            edit.nodes.clear()
            edit.dirty.clear()
            edit.put(1, _Leaf(np.empty(0, _U64)))

    # The set

    def add(self, bits: int, *, txn: lmdb.Transaction | None = None) -> bool:
        """Add one hash; True when it was not already in the tree."""
        return self.update([bits], txn=txn) == 1

    def update(self, hashes: Iterable[int], *, txn: lmdb.Transaction | None = None) -> int:
        """Add many hashes, BATCH_SIZE to a transaction; return how many were new."""
        batch: list[int] = []
        added = 0
        for bits in hashes:
            batch.append(_check_bits(bits))
            if len(batch) == BATCH_SIZE:
                added += self._add_batch(batch, txn)
                batch = []
        if batch:
            added += self._add_batch(batch, txn)
        return added

    def _add_batch(self, batch: list[int], txn: lmdb.Transaction | None) -> int:
        bits = np.unique(np.array(batch, dtype=_U64))
        with self._editing(txn) as edit:
            added = edit.add(edit.root, bits)
            edit.count += added
        return added

    def remove(self, bits: int, *, txn: lmdb.Transaction | None = None) -> bool:
        """Remove one hash; True when it was there."""
        bits = _check_bits(bits)
        with self._editing(txn) as edit:
            removed = edit.remove(bits)
            edit.count -= removed
        return removed

    def find(
        self, bits: int, radius: int, *, txn: lmdb.Transaction | None = None
    ) -> list[tuple[int, int]]:
        """Every stored hash within `radius` bits of `bits`, as (distance, hash)
        pairs sorted by distance, then hash."""
        bits = _check_bits(bits)
        if radius < 0:
            raise ValueError(f"radius {radius} is negative")
        query = np.uint64(bits)
        found_distances: list[np.ndarray] = []
        found_bits: list[np.ndarray] = []
        with self._reading(txn) as read:
            get = read.get
            db = self._db
            root, _, _ = self._read_header(read)
            pending = [root]
            while pending:
                raw = get(_node_key(pending.pop()), db=db)
                if raw is None:
                    break  # the tree is not made yet
                if raw[:1] == _LEAF:
                    stored = np.frombuffer(raw, dtype=_U64, offset=_NODE_HEAD)
                    distances = np.bitwise_count(stored ^ query)
                    # min() first: most buckets hold no match, and one call is cheaper than two.
                    if len(distances) and distances.min() <= radius:
                        hits = np.flatnonzero(distances <= radius)
                        found_distances.append(distances[hits])
                        found_bits.append(stored[hits])
                    continue
                node = _decode(raw)
                d = hamming(bits, node.pivot)
                lo = 0
                for hi, child in zip(node.his, node.children, strict=True):
                    if lo <= d + radius and hi >= d - radius:
                        pending.append(child)
                    lo = hi + 1
        if not found_bits:
            return []
        distances = np.concatenate(found_distances)
        hashes = np.concatenate(found_bits)
        order = np.lexsort((hashes, distances))
        return list(zip(distances[order].tolist(), hashes[order].tolist(), strict=True))

    def __contains__(self, bits: object) -> bool:
        try:
            return bool(self.find(_check_bits(bits), 0))
        except (TypeError, ValueError):
            return False

    def __len__(self) -> int:
        with self._reading(None) as txn:
            return self._read_header(txn)[2]

    def __iter__(self) -> Iterator[int]:
        """Every hash, in no particular order."""
        with self.env.begin(db=self._db) as txn:
            for key, raw in txn.cursor(db=self._db):
                if len(key) == 8 and raw[:1] == _LEAF:
                    yield from np.frombuffer(raw, dtype=_U64, offset=_NODE_HEAD).tolist()

    def stats(self, *, txn: lmdb.Transaction | None = None) -> dict[str, int]:
        """Shape of the tree: inner nodes, leaves, largest bucket, depth."""
        inner = leaves = largest = depth = 0
        with self._reading(txn) as read:
            root, _, _ = self._read_header(read)
            pending = [(root, 1)]
            while pending:
                node_id, level = pending.pop()
                node = _decode(read.get(_node_key(node_id), db=self._db))
                depth = max(depth, level)
                if isinstance(node, _Leaf):
                    leaves += 1
                    largest = max(largest, len(node.bits))
                else:
                    inner += 1
                    pending.extend((child, level + 1) for child in node.children)
        return {"inner": inner, "leaves": leaves, "largest_leaf": largest, "depth": depth}
