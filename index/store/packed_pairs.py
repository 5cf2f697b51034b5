"""The pairs table many entries at a time, as arrays: no Python object per pair.

The table (pairs.py) packs its values (LMDB dupfixed: the other file's id, the distance, the
kind, the transform, 11 bytes), so the entries of many files come back as one buffer
(`Cursor.getmulti`), and a recompute appends its entries in key order into the emptied
table (pages filled whole, no page splits).

- PackedPairs: the stored entries within a radius, per file (11 bytes an entry in memory);
  what groups are built from (index/grouping.py).
- put_plain: plain pairs (no transform) under both of their files, in one call.
- PairSpool: plain pairs spilled to files by range of file id, then appended in key order;
  memory is one range at a time.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import lmdb
import numpy as np

from dupwatch.index.store.pairs import KIND_CODES, KINDS, TRANSFORM_CODES, TRANSFORMS, Pair

VALUE_BYTES = 11  # Pair.code(): other id (8, big-endian), distance, kind, transform
READ_KEYS = 1 << 16  # files whose entries are read at once
_ENTRY = np.dtype(
    [("key", ">u8"), ("other", ">u8"), ("distance", "u1"), ("kind", "u1"), ("transform", "u1")]
)
_SPOOLED = np.dtype([("key", ">u8"), ("other", ">u8"), ("distance", "u1"), ("kind", "u1")])


@dataclass
class PackedPairs:
    """Pair entries per file: file `ids[i]` (sorted) has entries `start[i]:start[i + 1]`,
    in the table's order (by the other file's id); each names the other file by its position
    in `ids` (`other`, -1 when that file has no entries here), with the distance, kind code
    and transform code as stored (store/pairs.py: how this file is the other transformed)."""

    ids: np.ndarray  # int64
    start: np.ndarray  # int64, len(ids) + 1
    other: np.ndarray  # int64 positions
    distance: np.ndarray  # uint8
    kind: np.ndarray  # uint8 kind codes
    transform: np.ndarray  # uint8 transform codes

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def owner(self) -> np.ndarray:
        """The position of the file each entry is stored under."""
        return np.repeat(np.arange(len(self.ids)), np.diff(self.start))

    def pair(self, entry: int) -> Pair:
        """An entry as a Pair (as stored under its file)."""
        code = int(self.transform[entry])
        return Pair(
            int(self.ids[self.other[entry]]),
            int(self.distance[entry]),
            KINDS[int(self.kind[entry])],
            TRANSFORMS[code],
        )

    def pairs_of(self, position: int) -> list[Pair]:
        return [self.pair(e) for e in range(self.start[position], self.start[position + 1])]

    def keep(self, wanted: np.ndarray) -> PackedPairs:
        """The same files, with only the entries `wanted` (a mask over the entries)."""
        counts = np.bincount(self.owner[wanted], minlength=len(self.ids))
        start = np.zeros(len(self.ids) + 1, dtype=np.int64)
        np.cumsum(counts, out=start[1:])
        return PackedPairs(self.ids, start, *(column[wanted] for column in self._columns()))

    def _columns(self) -> tuple[np.ndarray, ...]:
        return self.other, self.distance, self.kind, self.transform

    @classmethod
    def of(cls, pairs: Mapping[int, Sequence[Pair]], universe: Iterable[int] = ()) -> PackedPairs:
        """From Pair lists by file id (small tables made by hand); the files of `universe`
        are listed too, those without pairs with none."""
        ids = np.array(sorted(set(pairs) | set(universe)), dtype=np.int64)
        rows = [(file_id, p) for file_id in ids.tolist() for p in pairs.get(file_id, ())]
        return cls._from_entries(
            ids,
            np.array([file_id for file_id, _ in rows], dtype=np.int64),
            np.array([p.other for _, p in rows], dtype=np.int64),
            np.array([p.distance for _, p in rows], dtype=np.uint8),
            np.array([KIND_CODES[p.kind] for _, p in rows], dtype=np.uint8),
            np.array([TRANSFORM_CODES[p.transform] for _, p in rows], dtype=np.uint8),
        )

    @classmethod
    def _from_entries(
        cls,
        ids: np.ndarray,
        keys: np.ndarray,
        others: np.ndarray,
        distance: np.ndarray,
        kind: np.ndarray,
        transform: np.ndarray,
    ) -> PackedPairs:
        """From entries sorted by key (file id), `ids` every key."""
        start = np.searchsorted(keys, ids, "left")
        start = np.append(start, len(keys)).astype(np.int64)
        return cls(ids, start, _positions(ids, others), distance, kind, transform)


def _positions(ids: np.ndarray, others: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """Each of `others` (file ids) as its position in `ids` (sorted), -1 where it is not
    there: written over `others` when it is an int64 array, a chunk at a time."""
    positions = np.asarray(others, dtype=np.int64)
    if not len(ids):
        positions[:] = -1
        return positions
    for first in range(0, len(positions), chunk):
        part = positions[first : first + chunk]
        at = np.minimum(np.searchsorted(ids, part), len(ids) - 1)
        part[:] = np.where(ids[at] == part, at, -1)
    return positions


def _entry_chunks(txn: lmdb.Transaction, db: object) -> Iterator[np.ndarray]:
    """Every stored entry as arrays with the fields key, other, distance, kind and
    transform, the entries of READ_KEYS files at a time, in the table's order."""
    cursor = txn.cursor(db=db)
    keys = list(cursor.iternext_nodup(keys=True, values=False))
    for first in range(0, len(keys), READ_KEYS):
        raw = cursor.getmulti(
            keys[first : first + READ_KEYS],
            dupdata=True,
            dupfixed_bytes=VALUE_BYTES,
            keyfixed=True,
        )
        yield np.frombuffer(raw, dtype=_ENTRY)


def read_entries(
    txn: lmdb.Transaction, db: object, select: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """The stored entries `select` keeps (a mask over a chunk of entries), in the table's
    order."""
    parts = [entries[select(entries)] for entries in _entry_chunks(txn, db)]
    return np.concatenate(parts) if parts else np.empty(0, dtype=_ENTRY)


def read_within(txn: lmdb.Transaction, db: object, radius: int) -> PackedPairs:
    """Every stored entry at `radius` or closer; a file is listed when it has one. Read
    into the columns a chunk of files at a time: memory is the result (11 bytes an entry)
    and one chunk, not every entry whole (19 bytes) and its int64 copies."""
    ids, counts, others, distance, kind, transform = [], [], [], [], [], []
    for entries in _entry_chunks(txn, db):
        entries = entries[entries["distance"] <= radius]
        keys, n = np.unique(entries["key"], return_counts=True)  # sorted, as the table is
        ids.append(keys.astype(np.int64))
        counts.append(n)
        others.append(entries["other"].astype(np.int64))
        distance.append(entries["distance"].copy())
        kind.append(entries["kind"].copy())
        transform.append(entries["transform"].copy())
    if not ids:
        return PackedPairs.of({})
    ids = np.concatenate(ids)
    start = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(np.concatenate(counts), out=start[1:])
    other = _positions(ids, np.concatenate(others))
    del others
    return PackedPairs(
        ids, start, other, np.concatenate(distance), np.concatenate(kind), np.concatenate(transform)
    )


def _values(others: np.ndarray, distances: np.ndarray, kinds: np.ndarray) -> bytes:
    """Packed values of plain entries (transform 0), as Pair.code() makes them."""
    values = np.zeros((len(others), VALUE_BYTES), dtype=np.uint8)
    values[:, :8] = np.ascontiguousarray(others, dtype=">u8").view(np.uint8).reshape(-1, 8)
    values[:, 8] = distances
    values[:, 9] = kinds
    return values.tobytes()


def _put_sorted(txn: lmdb.Transaction, db: object, keys: np.ndarray, values: bytes) -> None:
    # Not append=True (~25% faster): py-lmdb before 3.0 appends with MDB_APPEND, which drops
    # every entry after a key's first in a dupsort table.
    raw_keys = np.ascontiguousarray(keys, dtype=">u8").tobytes()
    items = (
        (raw_keys[8 * i : 8 * i + 8], values[VALUE_BYTES * i : VALUE_BYTES * (i + 1)])
        for i in range(len(keys))
    )
    txn.cursor(db=db).putmulti(items)


def put_plain(
    txn: lmdb.Transaction,
    db: object,
    ids: np.ndarray,
    others: np.ndarray,
    distances: np.ndarray,
    kinds: np.ndarray,
) -> None:
    """Store plain pairs (ids[i], others[i]) under both of their files, as Pair.code()."""
    if not len(ids):
        return
    keys = np.concatenate([ids, others]).astype(np.int64)
    partners = np.concatenate([others, ids]).astype(np.int64)
    order = np.lexsort((partners, keys))
    values = _values(
        partners[order],
        np.concatenate([distances, distances])[order],
        np.concatenate([kinds, kinds])[order],
    )
    _put_sorted(txn, db, keys[order], values)


class PairSpool:
    """Plain pairs spilled to temporary files by range of file id, then stored in key order
    into an emptied table. Memory: one range at a time (18 bytes an entry); disk, in
    `folder` (the index's): every entry once, until store() or discard()."""

    def __init__(self, folder: str, highest_id: int, ranges: int = 64) -> None:
        self.folder = tempfile.mkdtemp(prefix="pairs-", dir=folder)
        self.width = highest_id // ranges + 1
        self.files = [open(os.path.join(self.folder, f"{i:03d}"), "wb") for i in range(ranges)]

    def add(
        self, ids: np.ndarray, others: np.ndarray, distances: np.ndarray, kinds: np.ndarray
    ) -> None:
        """Pairs (ids[i], others[i]), to be stored under both files."""
        rows = np.empty(2 * len(ids), dtype=_SPOOLED)
        rows["key"] = np.concatenate([ids, others])
        rows["other"] = np.concatenate([others, ids])
        rows["distance"] = np.concatenate([distances, distances])
        rows["kind"] = np.concatenate([kinds, kinds])
        where = rows["key"].astype(np.int64) // self.width
        order = np.argsort(where, kind="stable")
        rows, where = rows[order], where[order]
        bounds = np.searchsorted(where, np.arange(len(self.files) + 1))
        for i in np.flatnonzero(np.diff(bounds)).tolist():
            rows[bounds[i] : bounds[i + 1]].tofile(self.files[i])

    def store(self, txn: lmdb.Transaction, db: object) -> None:
        """Append every entry to the (empty) table `db`, range by range. The files stay
        until discard(): a transaction the map cuts short stores them again."""
        for handle in self.files:
            handle.close()
            rows = np.fromfile(handle.name, dtype=_SPOOLED)
            if not len(rows):
                continue
            rows = rows[np.lexsort((rows["other"], rows["key"]))]
            values = _values(rows["other"], rows["distance"], rows["kind"])
            _put_sorted(txn, db, rows["key"], values)

    def discard(self) -> None:
        for handle in self.files:
            handle.close()
        shutil.rmtree(self.folder, ignore_errors=True)
