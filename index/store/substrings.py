"""An exact Hamming radius search over 64-bit hashes, stored in one LMDB table: multi-index
hashing (store/multi_index.py) over a base of sorted substring runs.

At 1M hashes and radius 12 a query reads ~17k candidates instead of 1M. Layout (one LMDB
table, a handful of keys, every value a packed array read zero-copy):

- base: every hash m times, section i sorted by substring i; offs: where each run starts.
- delta: hashes added since the base was built, in 16 sorted chunks (by their top 4 bits),
  scanned flat; dead: hashes of the base removed since. When either outgrows
  max(MIN_DELTA, base / DELTA_SHARE) the base is rebuilt from the live set, in the writing
  transaction. A single add rewrites one small delta chunk, never the base.
- head: the layout (m and the widths) and the counts.

py-lmdb touches every page of a value it returns (~2 us per MB: ~70 us for the base at 1M,
~0.5 ms at 10M), so reads hold on to the base: a pin (_Pin) keeps one read transaction open
and its base at hand, and a query whose head carries the same token (every base written
gets a new one) reads the base there and only the small keys in its own transaction. Any
write through this object, and the Store before each write and map resize, lets the pin go:
held, it keeps its snapshot's pages from being reused. The base is not split into finer
values instead: a query at radius 12 would then read dozens of them.

Opening reads nothing: there is nothing to rebuild. Like the BK-tree (bktree.py, whose
interface this keeps), this is a set of distinct hashes; mapping them to files is the
Index's job.
"""

from __future__ import annotations

import operator
import os
import struct
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import lmdb
import numpy as np

from dupwatch.index.store.hash_set import StoredHashSet
from dupwatch.index.store.multi_index import (
    HASH_BITS,
    Layout,
    build_base,
    join,
    probe,
    scan,
)

__all__ = ["SubstringIndex"]

MIN_DELTA = 16384  # hashes; the delta's flat scan costs ~15 us at this size
DELTA_SHARE = 16  # the delta may grow to 1/16 of the base before a rebuild
DELTA_CHUNKS = 16  # by the top 4 bits: one add rewrites 1/16 of the delta
JOIN_FROM = 256  # queries from which find_many walks them in sorted order (join())

_HEAD_KEY = b"head"
_BASE_KEY = b"base"
_OFFS_KEY = b"offs"
_DEAD_KEY = b"dead"
_DELTA_PREFIX = b"d"
_HEAD = struct.Struct("<B8sQQQ8s")  # m, widths, base, delta and dead counts, base token
PIN_SECONDS = 5.0  # a pin older than this is taken anew, so its snapshot is never old
_U64 = np.dtype("<u8")
_I64 = np.dtype("<i8")
_EMPTY = np.empty(0, _U64)


def _member(values: np.ndarray, among: np.ndarray) -> np.ndarray:
    """np.isin by sorting: numpy 2.0.0 picks its lookup-table method for uint64 arrays of a
    small range and overflows computing the offsets of hashes at or above 2**63."""
    return np.isin(values, among, kind="sort")


def _check_bits(bits: object) -> int:
    value = operator.index(bits)  # ints and numpy integers; not floats or strings
    if not 0 <= value < 1 << HASH_BITS:
        raise ValueError(f"hash {value} is not an unsigned 64-bit integer")
    return value


@dataclass
class _Head:
    layout: Layout
    base: int
    delta: int
    dead: int
    token: bytes | None = None  # new with each base written; None: no base

    def pack(self) -> bytes:
        widths, token = self.layout.widths, self.token or bytes(8)
        return _HEAD.pack(
            len(widths), self.layout.encode(), self.base, self.delta, self.dead, token
        )

    @staticmethod
    def unpack(raw: bytes | memoryview | None) -> _Head:
        if raw is None:
            return _Head(Layout.for_size(0), 0, 0, 0)
        m, widths, base, delta, dead, token = _HEAD.unpack(bytes(raw))
        return _Head(Layout.decode(m, widths), base, delta, dead, token)

    @property
    def count(self) -> int:
        return self.base - self.dead + self.delta

    def delta_limit(self, least: int) -> int:
        return max(least, self.base // DELTA_SHARE)


class _Pin:
    """A read transaction held open, with the base and offsets of its snapshot."""

    def __init__(self, env: lmdb.Environment, db: object) -> None:
        self.txn = env.begin(buffers=True)  # aborted when the last reference goes
        self.token = _Head.unpack(self.txn.get(_HEAD_KEY, db=db)).token
        self.base, self.offs = _read_base(self.txn, db)
        self.taken = time.monotonic()

    def usable(self) -> bool:
        """Not too old, and not closed by py-lmdb (3.0 closes every transaction of an
        environment whose map is resized, even by a call that bypasses the Store)."""
        try:
            self.txn.id()
        except lmdb.Error:
            return False
        return time.monotonic() - self.taken <= PIN_SECONDS


def _read_base(txn: lmdb.Transaction, db: object) -> tuple[np.ndarray, np.ndarray]:
    base, offs = txn.get(_BASE_KEY, db=db), txn.get(_OFFS_KEY, db=db)
    if base is None:
        return _EMPTY, np.zeros(1, _I64)
    return np.frombuffer(base, dtype=_U64), np.frombuffer(offs, dtype=_I64)


class _View:
    """Everything a read needs, as zero-copy arrays valid inside one transaction (or the
    pin's, which the view holds on to)."""

    def __init__(self, index: SubstringIndex, txn: lmdb.Transaction, *, pin: bool) -> None:
        get = txn.get
        db = index._db
        self.head = _Head.unpack(get(_HEAD_KEY, db=db))
        self.pin = index._pinned(self.head.token) if pin and self.head.base else None
        if self.pin is not None:
            self.base, self.offs = self.pin.base, self.pin.offs
        elif self.head.base:
            self.base, self.offs = _read_base(txn, db)
        else:
            self.base, self.offs = _EMPTY, np.zeros(1, _I64)
        self.dead = _array(get(_DEAD_KEY, db=db))
        if self.head.delta:
            chunks = [get(_delta_key(c), db=db) for c in range(DELTA_CHUNKS)]
            self.delta = np.frombuffer(b"".join(c for c in chunks if c is not None), dtype=_U64)
        else:
            self.delta = _EMPTY

    @property
    def section(self) -> np.ndarray:
        """Every base hash once (dead ones included), sorted by the first substring."""
        return self.base[: self.head.base]

    def in_base(self, bits: np.ndarray) -> np.ndarray:
        """Which of `bits` the base holds (dead or not)."""
        out = np.zeros(len(bits), dtype=bool)
        if self.head.base:
            for owner, _, _ in probe(self.base, self.offs, self.head.layout, bits, 0):
                out[owner] = True
        return out

    def find_many(
        self, queries: np.ndarray, radius: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query index, distance, hash) of every live hash within `radius`, each once."""
        parts = []
        layout = self.head.layout
        if self.head.base:
            if not layout.worth_probing(self.head.base, radius):
                found = scan(self.section, queries, radius)
            elif len(queries) >= JOIN_FROM:
                found = join(self.base, self.offs, layout, queries, radius)
            else:
                found = probe(self.base, self.offs, layout, queries, radius)
            parts += list(found)
        parts += list(scan(self.delta, queries, radius))
        if not parts:
            return np.empty(0, np.int64), np.empty(0, np.uint8), _EMPTY
        owner, distances, hashes = (np.concatenate(p) for p in zip(*parts, strict=True))
        # A base hash reached through two substrings comes twice; keep each (query, hash) once.
        order = np.lexsort((hashes, owner))
        owner, distances, hashes = owner[order], distances[order], hashes[order]
        first = np.ones(len(owner), dtype=bool)
        first[1:] = (owner[1:] != owner[:-1]) | (hashes[1:] != hashes[:-1])
        if len(self.dead):
            at = np.minimum(np.searchsorted(self.dead, hashes), len(self.dead) - 1)
            first &= self.dead[at] != hashes
        return owner[first], distances[first], hashes[first]


def _array(raw: bytes | memoryview | None) -> np.ndarray:
    return _EMPTY if raw is None else np.frombuffer(raw, dtype=_U64)


def _delta_key(chunk: int) -> bytes:
    return _DELTA_PREFIX + bytes([chunk])


def _chunk_of(bits: np.ndarray) -> np.ndarray:
    return (bits >> np.uint64(HASH_BITS - 4)).astype(np.int64)


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
        self._pin: _Pin | None = None

    def __repr__(self) -> str:
        return f"<SubstringIndex of {len(self)} hashes>"

    def close(self) -> None:
        self.release()
        super().close()

    def release(self) -> None:
        """Let the pinned snapshot go (a read still using it keeps it until it ends). The
        owner of the environment calls this before every write and map resize."""
        self._pin = None

    def _pinned(self, token: bytes | None) -> _Pin | None:
        """The pin, when it holds the base a head with `token` describes (taken anew when
        stale); None when there is none to hold."""
        if token is None:
            return None
        pin = self._pin
        if pin is None or pin.token != token or not pin.usable():
            pin = _Pin(self.env, self._db)
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
            _, distances, hashes = _View(self, read, pin=True).find_many(
                np.array([bits], dtype=_U64), min(radius, HASH_BITS)
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
        queries = np.asarray(queries, dtype=_U64)
        if radius < 0:
            raise ValueError(f"radius {radius} is negative")
        with self._reading(txn) as read:
            owner, distances, hashes = _View(self, read, pin=True).find_many(
                queries, min(radius, HASH_BITS)
            )
            return owner, distances, hashes  # copies: nothing here points into `read`

    def hashes(self, *, txn: lmdb.Transaction | None = None) -> np.ndarray:
        """Every stored hash, sorted, as a new array."""
        with self._reading(txn) as read:
            view = _View(self, read, pin=True)
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
            return _Head.unpack(txn.get(_HEAD_KEY, db=self._db)).count

    def __iter__(self) -> Iterator[int]:
        """Every hash, in ascending order."""
        yield from self.hashes().tolist()

    def stats(self, *, txn: lmdb.Transaction | None = None) -> dict[str, object]:
        with self._reading(txn) as read:
            head = _Head.unpack(read.get(_HEAD_KEY, db=self._db))
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
            view = _View(self, read, pin=False)
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
            bits = np.unique(hashes.astype(_U64))
        else:
            bits = np.unique(np.array([_check_bits(b) for b in hashes], dtype=_U64))
        if not len(bits):
            return 0
        with self._writing(txn) as write:
            view = _View(self, write, pin=False)
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
            if head.delta + len(fresh) > head.delta_limit(self.min_delta):
                live = view.section[~_member(view.section, dead)] if len(dead) else view.section
                self._write_base(write, np.unique(np.concatenate([live, view.delta, fresh])))
            else:
                self._write_delta(write, view.delta, fresh, head)
                self._write_dead(write, dead, head)
                write.put(_HEAD_KEY, head.pack(), db=self._db)
            return len(fresh) + int(revived.sum())

    def remove(self, bits: int, *, txn: lmdb.Transaction | None = None) -> bool:
        """Remove one hash; True when it was there."""
        query = np.array([_check_bits(bits)], dtype=_U64)
        with self._writing(txn) as write:
            view = _View(self, write, pin=False)
            head = view.head
            if _member(query, view.delta)[0]:
                chunk = int(_chunk_of(query)[0])
                part = _array(write.get(_delta_key(chunk), db=self._db))
                self._put_chunk(write, chunk, part[part != query[0]])
                head.delta -= 1
                write.put(_HEAD_KEY, head.pack(), db=self._db)
                return True
            if not view.in_base(query)[0] or _member(query, view.dead)[0]:
                return False
            dead = np.union1d(view.dead, query)
            if len(dead) > head.delta_limit(self.min_delta):
                live = view.section[~_member(view.section, dead)]
                self._write_base(write, np.unique(np.concatenate([live, view.delta])))
            else:
                self._write_dead(write, dead, head)
                write.put(_HEAD_KEY, head.pack(), db=self._db)
            return True

    def clear(self, *, txn: lmdb.Transaction | None = None) -> None:
        """Remove every hash."""
        with self._writing(txn) as write:
            write.drop(self._db, delete=False)

    def rebuild(self, hashes: np.ndarray, *, txn: lmdb.Transaction | None = None) -> None:
        """Replace the contents with `hashes` (any order, repeats allowed), as one base."""
        bits = np.unique(np.asarray(hashes, dtype=_U64))
        with self._writing(txn) as write:
            self._write_base(write, bits)

    def _write_base(self, txn: lmdb.Transaction, bits: np.ndarray) -> None:
        """Make sorted unique `bits` the base, with an empty delta and no dead hashes."""
        txn.drop(self._db, delete=False)
        layout = self.layout or Layout.for_size(len(bits))
        if len(bits):
            base, offs = build_base(bits, layout)
            txn.put(_BASE_KEY, memoryview(base), db=self._db)
            txn.put(_OFFS_KEY, memoryview(offs), db=self._db)
        head = _Head(layout, len(bits), 0, 0, os.urandom(8))
        txn.put(_HEAD_KEY, head.pack(), db=self._db)

    def _write_delta(
        self, txn: lmdb.Transaction, delta: np.ndarray, fresh: np.ndarray, head: _Head
    ) -> None:
        chunks = _chunk_of(fresh)
        for chunk in np.unique(chunks).tolist():
            part = _array(txn.get(_delta_key(chunk), db=self._db))
            self._put_chunk(txn, chunk, np.union1d(part, fresh[chunks == chunk]))
        head.delta += len(fresh)

    def _put_chunk(self, txn: lmdb.Transaction, chunk: int, part: np.ndarray) -> None:
        if len(part):
            txn.put(_delta_key(chunk), part.astype(_U64).tobytes(), db=self._db)
        else:
            txn.delete(_delta_key(chunk), db=self._db)

    def _write_dead(self, txn: lmdb.Transaction, dead: np.ndarray, head: _Head) -> None:
        if len(dead):
            txn.put(_DEAD_KEY, dead.astype(_U64).tobytes(), db=self._db)
        else:
            txn.delete(_DEAD_KEY, db=self._db)
        head.dead = len(dead)
