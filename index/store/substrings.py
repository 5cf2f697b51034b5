"""An exact Hamming radius search over 64-bit hashes, stored in one LMDB table: multi-index
hashing (store/multi_index.py) over a base of sorted substring runs.

At 1M hashes and radius 12 a query reads ~17k candidates instead of 1M. The hashes lie in a
base of sorted substring runs, a delta of hashes added since (scanned flat; for a large
batch of queries, sorted into a base of its own first) and a list of base hashes removed
since (substring_view.py has the keys, and reads them). When the delta or the removed
outgrow max(MIN_DELTA, base / DELTA_SHARE) the base is rebuilt from the live set, in the
writing transaction. A single add rewrites one small delta chunk, never the base. Reads
hold the base in a pin between writes (substring_view.py says why).

Opening reads nothing: there is nothing to rebuild. Like the BK-tree (bktree.py, whose
interface this keeps), this is a set of distinct hashes; mapping them to files is the
Index's job.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import lmdb
import numpy as np

from dupwatch.index.store.hash_set import StoredHashSet
from dupwatch.index.store.multi_index import HASH_BITS, Layout, build_base
from dupwatch.index.store.substring_view import (
    BASE_KEY,
    DEAD_KEY,
    HEAD_KEY,
    OFFS_KEY,
    U64,
    Head,
    Pin,
    View,
    array_of,
    chunk_of,
    delta_key,
)

__all__ = ["SubstringIndex"]

MIN_DELTA = 16384  # hashes; the delta's flat scan costs ~15 us at this size
DELTA_SHARE = 16  # the delta may grow to 1/16 of the base before a rebuild


def _member(values: np.ndarray, among: np.ndarray) -> np.ndarray:
    """np.isin by sorting: numpy 2.0.0 picks its lookup-table method for uint64 arrays of a
    small range and overflows computing the offsets of hashes at or above 2**63."""
    return np.isin(values, among, kind="sort")


def _check_bits(bits: object) -> int:
    value = operator.index(bits)  # ints and numpy integers; not floats or strings
    if not 0 <= value < 1 << HASH_BITS:
        raise ValueError(f"hash {value} is not an unsigned 64-bit integer")
    return value


def _delta_limit(head: Head, least: int) -> int:
    return max(least, head.base // DELTA_SHARE)


class SubstringIndex(StoredHashSet):
    """A set of 64-bit hashes searchable by Hamming radius, stored in one LMDB table.

    The BK-tree's interface (find, add, update, remove, clear, len, in, iter), plus
    find_many() for a batch of queries and hashes() for every hash as one array.
    `SubstringIndex.open(folder)` keeps it in an LMDB environment of its own;
    `SubstringIndex(env, db=...)` in a table of an existing one, and every method then
    takes `txn=` so that changes share a transaction with other tables.
    """

    DEFAULT_MAP_SIZE = 1 << 36

    def __init__(
        self,
        env: lmdb.Environment,
        *,
        name: bytes = b"substrings",
        db: object | None = None,
        owns_env: bool = False,
        min_delta: int = MIN_DELTA,
        layout: Layout | None = None,
    ) -> None:
        """`min_delta` and `layout` (every base cut that way, whatever its size) are knobs
        for tests and benchmarks."""
        self.env = env
        self.min_delta = min_delta
        self.layout = layout
        self._owns_env = owns_env
        self._db = db if db is not None else env.open_db(name)
        self._pin: Pin | None = None

    def __repr__(self) -> str:
        return f"<SubstringIndex of {len(self)} hashes>"

    def close(self) -> None:
        self.release()
        super().close()

    def release(self) -> None:
        """Let the pinned snapshot go (a read still using it keeps it until it ends). The
        owner of the environment calls this before every write and map resize."""
        self._pin = None

    def _pinned(self, token: bytes | None) -> Pin | None:
        """The pin, when it holds the base a head with `token` describes (taken anew when
        stale); None when there is none to hold."""
        if token is None:
            return None
        pin = self._pin
        if pin is None or pin.token != token or not pin.usable():
            pin = Pin(self.env, self._db)
            if pin.token != token:  # the caller's snapshot is not the latest: no use
                return None
            self._pin = pin
        return pin

    @contextmanager
    def _writing(self, txn: lmdb.Transaction | None) -> Iterator[lmdb.Transaction]:
        self.release()
        if txn is not None:
            yield txn
        else:
            with self.env.begin(write=True) as own:
                yield own

    # Reading

    def find(
        self, bits: int, radius: int, *, txn: lmdb.Transaction | None = None
    ) -> list[tuple[int, int]]:
        """Every stored hash within `radius` bits of `bits`, as (distance, hash) pairs
        sorted by distance, then hash."""
        bits = _check_bits(bits)
        if radius < 0:
            raise ValueError(f"radius {radius} is negative")
        with self._reading(txn) as read:
            _, distances, hashes = View(read, self._db, self._pinned).find_many(
                np.array([bits], dtype=U64), min(radius, HASH_BITS)
            )
        order = np.lexsort((hashes, distances))
        return list(zip(distances[order].tolist(), hashes[order].tolist(), strict=True))

    def find_many(
        self,
        queries: Iterable[int] | np.ndarray,
        radius: int,
        *,
        txn: lmdb.Transaction | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For many queries at once: (query index, distance, hash) arrays, one row for each
        stored hash within `radius` of each query, ordered by query index, then hash."""
        queries = np.asarray(queries, dtype=U64)
        if radius < 0:
            raise ValueError(f"radius {radius} is negative")
        with self._reading(txn) as read:
            owner, distances, hashes = View(read, self._db, self._pinned).find_many(
                queries, min(radius, HASH_BITS)
            )
            return owner, distances, hashes  # copies: nothing here points into `read`

    def hashes(self, *, txn: lmdb.Transaction | None = None) -> np.ndarray:
        """Every stored hash, sorted, as a new array."""
        with self._reading(txn) as read:
            view = View(read, self._db, self._pinned)
            live = view.section
            if len(view.dead):
                live = live[~_member(live, view.dead)]
            return np.unique(np.concatenate([live, view.delta]))

    def __contains__(self, bits: object) -> bool:
        try:
            return bool(self.find(_check_bits(bits), 0))
        except (TypeError, ValueError):
            return False

    def __len__(self) -> int:
        with self._reading(None) as txn:
            return Head.unpack(txn.get(HEAD_KEY, db=self._db)).count

    def __iter__(self) -> Iterator[int]:
        """Every hash, in ascending order."""
        yield from self.hashes().tolist()

    def stats(self, *, txn: lmdb.Transaction | None = None) -> dict[str, object]:
        with self._reading(txn) as read:
            head = Head.unpack(read.get(HEAD_KEY, db=self._db))
        return {
            "widths": head.layout.widths,
            "base": head.base,
            "delta": head.delta,
            "dead": head.dead,
        }

    def problems(self, *, txn: lmdb.Transaction | None = None) -> list[str]:
        """Inconsistencies inside the tables (what check_index adds to its report)."""
        found = []
        with self._reading(txn) as read:
            view = View(read, self._db)
            head, layout, n = view.head, view.head.layout, view.head.base
            if len(view.base) != n * len(layout.widths):
                return [f"substrings: base holds {len(view.base)} entries for {n} hashes"]
            if n and len(view.offs) != layout.buckets + 1:
                return [f"substrings: {len(view.offs)} offsets for {layout.buckets} values"]
            section0 = np.sort(view.section)
            if len(np.unique(section0)) != n:
                found.append("substrings: the base holds a hash twice")
            if n:
                expected, offs = build_base(section0, layout)
                if not np.array_equal(offs, view.offs):
                    found.append("substrings: the base's offsets do not match its hashes")
                for i in range(len(layout.widths)):
                    part = view.base[i * n : (i + 1) * n]
                    if not np.array_equal(np.sort(part), section0):
                        found.append(f"substrings: section {i} holds other hashes than 0")
                        continue
                    wanted = layout.substring(expected[i * n : (i + 1) * n], i)
                    if not np.array_equal(layout.substring(part, i), wanted):
                        found.append(f"substrings: section {i} is not sorted by substring {i}")
            if len(view.delta) != head.delta:
                found.append(f"substrings: delta holds {len(view.delta)}, head says {head.delta}")
            if len(view.dead) != head.dead:
                found.append(f"substrings: dead holds {len(view.dead)}, head says {head.dead}")
            if _member(view.delta, section0).any():
                found.append("substrings: a hash is in both the delta and the base")
            if not _member(view.dead, section0).all():
                found.append("substrings: a removed hash is not in the base")
        return found

    # Writing

    def add(self, bits: int, *, txn: lmdb.Transaction | None = None) -> bool:
        """Add one hash; True when it was not already there."""
        return self.update([bits], txn=txn) == 1

    def update(
        self, hashes: Iterable[int] | np.ndarray, *, txn: lmdb.Transaction | None = None
    ) -> int:
        """Add many hashes; return how many were new."""
        if isinstance(hashes, np.ndarray):
            bits = np.unique(hashes.astype(U64))
        else:
            bits = np.unique(np.array([_check_bits(b) for b in hashes], dtype=U64))
        if not len(bits):
            return 0
        with self._writing(txn) as write:
            view = View(write, self._db)
            head = view.head
            in_base = view.in_base(bits)
            revived = np.zeros(len(bits), dtype=bool)
            if len(view.dead):
                revived = in_base & _member(bits, view.dead)
            fresh = bits[~in_base & ~_member(bits, view.delta)]
            if not len(fresh) and not revived.any():
                return 0
            dead = view.dead
            if revived.any():
                dead = dead[~_member(dead, bits[revived])]
            if head.delta + len(fresh) > _delta_limit(head, self.min_delta):
                live = view.section[~_member(view.section, dead)] if len(dead) else view.section
                self._write_base(write, np.unique(np.concatenate([live, view.delta, fresh])))
            else:
                self._write_delta(write, view.delta, fresh, head)
                self._write_dead(write, dead, head)
                write.put(HEAD_KEY, head.pack(), db=self._db)
            return len(fresh) + int(revived.sum())

    def remove(self, bits: int, *, txn: lmdb.Transaction | None = None) -> bool:
        """Remove one hash; True when it was there."""
        query = np.array([_check_bits(bits)], dtype=U64)
        with self._writing(txn) as write:
            view = View(write, self._db)
            head = view.head
            if _member(query, view.delta)[0]:
                chunk = int(chunk_of(query)[0])
                part = array_of(write.get(delta_key(chunk), db=self._db))
                self._put_chunk(write, chunk, part[part != query[0]])
                head.delta -= 1
                write.put(HEAD_KEY, head.pack(), db=self._db)
                return True
            if not view.in_base(query)[0] or _member(query, view.dead)[0]:
                return False
            dead = np.union1d(view.dead, query)
            if len(dead) > _delta_limit(head, self.min_delta):
                live = view.section[~_member(view.section, dead)]
                self._write_base(write, np.unique(np.concatenate([live, view.delta])))
            else:
                self._write_dead(write, dead, head)
                write.put(HEAD_KEY, head.pack(), db=self._db)
            return True

    def clear(self, *, txn: lmdb.Transaction | None = None) -> None:
        """Remove every hash."""
        with self._writing(txn) as write:
            write.drop(self._db, delete=False)

    def rebuild(self, hashes: np.ndarray, *, txn: lmdb.Transaction | None = None) -> None:
        """Replace the contents with `hashes` (any order, repeats allowed), as one base."""
        bits = np.unique(np.asarray(hashes, dtype=U64))
        with self._writing(txn) as write:
            self._write_base(write, bits)

    def _write_base(self, txn: lmdb.Transaction, bits: np.ndarray) -> None:
        """Make sorted unique `bits` the base, with an empty delta and no dead hashes."""
        txn.drop(self._db, delete=False)
        layout = self.layout or Layout.for_size(len(bits))
        if len(bits):
            base, offs = build_base(bits, layout)
            txn.put(BASE_KEY, memoryview(base), db=self._db)
            txn.put(OFFS_KEY, memoryview(offs), db=self._db)
        head = Head(layout, len(bits), 0, 0, os.urandom(8))
        txn.put(HEAD_KEY, head.pack(), db=self._db)

    def _write_delta(
        self, txn: lmdb.Transaction, delta: np.ndarray, fresh: np.ndarray, head: Head
    ) -> None:
        chunks = chunk_of(fresh)
        for chunk in np.unique(chunks).tolist():
            part = array_of(txn.get(delta_key(chunk), db=self._db))
            self._put_chunk(txn, chunk, np.union1d(part, fresh[chunks == chunk]))
        head.delta += len(fresh)

    def _put_chunk(self, txn: lmdb.Transaction, chunk: int, part: np.ndarray) -> None:
        if len(part):
            txn.put(delta_key(chunk), part.astype(U64).tobytes(), db=self._db)
        else:
            txn.delete(delta_key(chunk), db=self._db)

    def _write_dead(self, txn: lmdb.Transaction, dead: np.ndarray, head: Head) -> None:
        if len(dead):
            txn.put(DEAD_KEY, dead.astype(U64).tobytes(), db=self._db)
        else:
            txn.delete(DEAD_KEY, db=self._db)
        head.dead = len(dead)
