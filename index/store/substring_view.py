"""How the substring tables (substrings.py) lie in their LMDB table, and reading them: a view
of one transaction's tables as zero-copy arrays, and the pin that holds a base between reads.

Keys (every value a packed array):

- base: every hash m times, section i sorted by substring i; offs: where each run starts.
- delta: hashes added since the base was built, in DELTA_CHUNKS sorted chunks (by their top
  bits); dead: hashes of the base removed since.
- head: the layout (m and the widths), the counts, and the base's token: new with each base
  written, so that two heads with one token describe the same base.

py-lmdb touches every page of a value it returns (~2 us per MB: ~70 us for the base at 1M,
~0.5 ms at 10M), so reads hold on to the base: a pin keeps one read transaction open with
its base at hand, and a view whose head carries the pin's token reads the base there and
only the small keys in its own transaction. Held, a pin keeps its snapshot's pages from
being reused: SubstringIndex lets it go before each of its writes, and the Store before
each write and map resize (after which the pin's memory views would point at the old map).
The base is not split into finer values instead: a query at radius 12 would read dozens.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

import lmdb
import numpy as np

from dupwatch.index.store.multi_index import HASH_BITS, Layout, build_base, join, probe, scan

HEAD_KEY = b"head"
BASE_KEY = b"base"
OFFS_KEY = b"offs"
DEAD_KEY = b"dead"
_DELTA_PREFIX = b"d"
_HEAD = struct.Struct("<B8sQQQ8s")  # m, widths, base, delta and dead counts, base token
DELTA_CHUNKS = 16  # by the top 4 bits: one add rewrites 1/16 of the delta
JOIN_FROM = 256  # queries from which find_many walks them in sorted order (join())
PIN_SECONDS = 5.0  # a pin older than this is taken anew, so its snapshot is never old
U64 = np.dtype("<u8")
_I64 = np.dtype("<i8")
EMPTY = np.empty(0, U64)


@dataclass
class Head:
    layout: Layout
    base: int
    delta: int
    dead: int
    token: bytes | None = None  # None: no base was ever written

    def pack(self) -> bytes:
        widths, token = self.layout.widths, self.token or bytes(8)
        return _HEAD.pack(
            len(widths), self.layout.encode(), self.base, self.delta, self.dead, token
        )

    @staticmethod
    def unpack(raw: bytes | memoryview | None) -> Head:
        if raw is None:
            return Head(Layout.for_size(0), 0, 0, 0)
        m, widths, base, delta, dead, token = _HEAD.unpack(bytes(raw))
        return Head(Layout.decode(m, widths), base, delta, dead, token)

    @property
    def count(self) -> int:
        return self.base - self.dead + self.delta


class Pin:
    """A read transaction held open, with the base and offsets of its snapshot."""

    def __init__(self, env: lmdb.Environment, db: object) -> None:
        self.txn = env.begin(buffers=True)  # aborted when the last reference goes
        self.token = Head.unpack(self.txn.get(HEAD_KEY, db=db)).token
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
    base, offs = txn.get(BASE_KEY, db=db), txn.get(OFFS_KEY, db=db)
    if base is None:
        return EMPTY, np.zeros(1, _I64)
    return np.frombuffer(base, dtype=U64), np.frombuffer(offs, dtype=_I64)


class View:
    """Everything a read needs, as zero-copy arrays valid inside one transaction (or the
    pin's, which the view holds on to). `pinned(token)` gives a pin holding that base, or
    None; without it, the base is read in `txn`."""

    def __init__(
        self,
        txn: lmdb.Transaction,
        db: object,
        pinned: Callable[[bytes | None], Pin | None] | None = None,
    ) -> None:
        get = txn.get
        self.head = Head.unpack(get(HEAD_KEY, db=db))
        self.pin = pinned(self.head.token) if pinned and self.head.base else None
        if self.pin is not None:
            self.base, self.offs = self.pin.base, self.pin.offs
        elif self.head.base:
            self.base, self.offs = _read_base(txn, db)
        else:
            self.base, self.offs = EMPTY, np.zeros(1, _I64)
        self.dead = array_of(get(DEAD_KEY, db=db))
        if self.head.delta:
            chunks = [get(delta_key(c), db=db) for c in range(DELTA_CHUNKS)]
            self.delta = np.frombuffer(b"".join(c for c in chunks if c is not None), dtype=U64)
        else:
            self.delta = EMPTY

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
        delta_layout = Layout.for_size(len(self.delta))
        if len(queries) >= JOIN_FROM and delta_layout.worth_probing(len(self.delta), radius):
            # A bulk batch against a large delta (up to 1/16 of the base): sorting the delta
            # into a base of its own and joining beats comparing every pair.
            delta_base, delta_offs = build_base(self.delta, delta_layout)
            parts += list(join(delta_base, delta_offs, delta_layout, queries, radius))
        else:
            parts += list(scan(self.delta, queries, radius))
        if not parts:
            return np.empty(0, np.int64), np.empty(0, np.uint8), EMPTY
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


def array_of(raw: bytes | memoryview | None) -> np.ndarray:
    return EMPTY if raw is None else np.frombuffer(raw, dtype=U64)


def delta_key(chunk: int) -> bytes:
    return _DELTA_PREFIX + bytes([chunk])


def chunk_of(bits: np.ndarray) -> np.ndarray:
    return (bits >> np.uint64(HASH_BITS - 4)).astype(np.int64)
