"""Pairs judged on arrays, many at once, as Matcher.find and PairTable.store_all judge them one
at a time: the columns of many file records (Catalog), what a candidate pair of them is
(judge: the match distance, exact or near, whether pixels must tell) and whether a near pair
passes the second look (looks_alike). For put_bulk and the self-join recompute: no Python
object per pair, only for the few pairs that need pixels or thumbnails compared.

The distance is fingerprint.match_distance: a pair of rows whose hashes are `full` bits
apart is `max(full, (full + centres' distance + 1) // 2)` apart when both centres are known.
It is `exact` when the digests agree, and may be `pixel` only when the hashes agree and the
sizes too (the caller asks Matcher.kind or pair_kind for those few, which decode).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields

import lmdb
import numpy as np

from dupwatch.index.fingerprint.detail import DETAIL_SIDE, confirms_many
from dupwatch.index.store.environment import Store
from dupwatch.index.store.pairs import KIND_CODES, Kind
from dupwatch.index.store.records import (
    DETAIL_KNOWN,
    HEAD_FIELDS,
    LOW_INFORMATION,
    FileRecord,
    detail_known,
    encoded_thumbnail,
)

EXACT = KIND_CODES[Kind.EXACT]
NEAR = KIND_CODES[Kind.NEAR]
ROW_BYTES = 51  # what one row of a Catalog holds, for the memory figures
THUMBNAIL_BYTES = DETAIL_SIDE**2
LOOK_CHUNK = 4096  # near pairs given the second look at once


_COLUMNS = {
    "ids": np.int64, "bits": np.uint64, "centre": np.uint64, "has_centre": bool,
    "width": np.uint32, "height": np.uint32, "low": bool, "thumbnail": bool,
}  # fmt: skip
_NUMPY_CODES = {"Q": "<u8", "?": "?", "16s": "S16", "I": "<u4", "B": "u1"}
# A record's head up to its flags, as records.py lays it out (every field Catalog needs).
_HEAD_NAMES = ("bits", "centre", "has_centre", "digest", "width", "height", "flags")
_HEADS = np.dtype({
    "names": list(_HEAD_NAMES),
    "formats": [_NUMPY_CODES[HEAD_FIELDS[name][1]] for name in _HEAD_NAMES],
    "offsets": [HEAD_FIELDS[name][0] for name in _HEAD_NAMES],
    "itemsize": HEAD_FIELDS["flags"][0] + 1,
})  # fmt: skip


@dataclass
class Catalog:
    """Per file: id, hash, centre hash (and whether known), digest, width and height, low
    information, and whether its stored record reads a thumbnail back (records.detail_known:
    a thumbnail stored without turned hashes is not)."""

    ids: np.ndarray
    bits: np.ndarray
    centre: np.ndarray
    has_centre: np.ndarray
    digest: np.ndarray  # (n, 2) uint64: the 16-byte content digest
    width: np.ndarray
    height: np.ndarray
    low: np.ndarray
    thumbnail: np.ndarray

    @classmethod
    def of(cls, records: Iterable[FileRecord]) -> Catalog:
        columns: tuple[list, ...] = ([], [], [], [], [], [], [], [], [])
        ids, bits, centre, known, digests, width, height, low, thumbnail = columns
        for r in records:
            ids.append(r.id)
            bits.append(r.bits)
            centre.append(r.centre or 0)
            known.append(r.centre is not None)
            digests.append(r.digest)
            width.append(r.width)
            height.append(r.height)
            low.append(r.low_information)
            thumbnail.append(detail_known(r))
        return cls(
            np.array(ids, dtype=np.int64),
            np.array(bits, dtype=np.uint64),
            np.array(centre, dtype=np.uint64),
            np.array(known, dtype=bool),
            np.frombuffer(b"".join(digests), dtype=">u8").astype(np.uint64).reshape(-1, 2),
            np.array(width, dtype=np.uint32),
            np.array(height, dtype=np.uint32),
            np.array(low, dtype=bool),
            np.array(thumbnail, dtype=bool),
        )

    @classmethod
    def read(cls, store: Store, txn: lmdb.Transaction, chunk: int = 65536) -> Catalog:
        """Every stored record, read straight from its encoded head into arrays a chunk of
        records at a time: ~51 bytes a file, where Catalog.of(store.records(txn)) held some
        600 in Python objects before it made arrays."""
        count, raws = store.raw_records(txn)
        columns = {name: np.empty(count, dtype) for name, dtype in _COLUMNS.items()}
        digest = np.empty((count, 2), dtype=np.uint64)
        heads = bytearray(_HEADS.itemsize * chunk)
        keys = bytearray(8 * chunk)
        done = 0
        while done < count:
            n = 0
            for key, raw in raws:
                heads[n * _HEADS.itemsize : (n + 1) * _HEADS.itemsize] = raw[: _HEADS.itemsize]
                keys[8 * n : 8 * n + 8] = key
                n += 1
                if n == chunk:
                    break
            if n == 0:
                break  # fewer records than counted: only if the caller's txn changed them
            rows = np.frombuffer(heads, dtype=_HEADS, count=n)
            part = slice(done, done + n)
            columns["ids"][part] = np.frombuffer(keys, dtype=">u8", count=n)
            for name in ("bits", "centre", "has_centre", "width", "height"):
                columns[name][part] = rows[name]
            columns["centre"][part][~rows["has_centre"]] = 0
            digest[part] = np.ascontiguousarray(rows["digest"]).view(">u8").reshape(n, 2)
            columns["low"][part] = (rows["flags"] & LOW_INFORMATION) != 0
            columns["thumbnail"][part] = (rows["flags"] & DETAIL_KNOWN) != 0
            done += n
        trimmed = {name: column[:done] for name, column in columns.items()}
        return cls(
            trimmed["ids"], trimmed["bits"], trimmed["centre"], trimmed["has_centre"],
            digest[:done], trimmed["width"], trimmed["height"], trimmed["low"],
            trimmed["thumbnail"],
        )  # fmt: skip

    def __len__(self) -> int:
        return len(self.ids)

    def extend(self, other: Catalog) -> Catalog:
        names = [f.name for f in fields(self)]
        return Catalog(*(np.concatenate([getattr(self, n), getattr(other, n)]) for n in names))


class ByHash:
    """Rows of a catalog by hash: every row holding a given hash, found with one sort."""

    def __init__(self, bits: np.ndarray) -> None:
        self.order = np.argsort(bits, kind="stable")
        self.sorted = bits[self.order]

    def rows(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query index, row) for every row whose hash equals a query."""
        first = np.searchsorted(self.sorted, queries, "left")
        last = np.searchsorted(self.sorted, queries, "right")
        counts = last - first
        owner = np.repeat(np.arange(len(queries)), counts)
        ends = np.cumsum(counts)
        at = np.repeat(first - ends + counts, counts) + np.arange(int(ends[-1]) if len(ends) else 0)
        return owner, self.order[at]


def judge(
    catalog: Catalog, a: np.ndarray, b: np.ndarray, full: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For row pairs (a, b) whose hashes are `full` apart: (match distance, kind code,
    whether the kind needs the pixels compared to tell pixel from near)."""
    full = full.astype(np.int64)
    centres = np.bitwise_count(catalog.centre[a] ^ catalog.centre[b]).astype(np.int64)
    both = catalog.has_centre[a] & catalog.has_centre[b]
    distance = np.where(both, np.maximum(full, (full + centres + 1) // 2), full)
    exact = (catalog.digest[a] == catalog.digest[b]).all(axis=1)
    same_size = (catalog.width[a] == catalog.width[b]) & (catalog.height[a] == catalog.height[b])
    kinds = np.where(exact, EXACT, NEAR).astype(np.uint8)
    return distance, kinds, ~exact & (full == 0) & same_size


def looks_alike(
    low_a: np.ndarray,
    thumbnail_a: np.ndarray,
    low_b: np.ndarray,
    thumbnail_b: np.ndarray,
    thumbnails: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
) -> np.ndarray:
    """detail.near_allowed for many near pairs, by their sides' low information and whether
    their thumbnails are known: never with a low-information side; detail.confirms_many on
    the thumbnails where both are known (`thumbnails(pairs)`: both sides' thumbnails of
    those pairs, as stack() makes them), LOOK_CHUNK pairs at a time; where one is not known,
    its thumbnail cannot say no (detail.confirms). tests/test_bulk.py holds this to
    near_allowed."""
    allowed = ~(low_a | low_b)
    look = np.flatnonzero(allowed & thumbnail_a & thumbnail_b)
    for start in range(0, len(look), LOOK_CHUNK):
        pairs = look[start : start + LOOK_CHUNK]
        mine, theirs = thumbnails(pairs)
        allowed[pairs] = confirms_many(mine, theirs)
    return allowed


def stack(thumbnails: Iterable[bytes]) -> np.ndarray:
    """Known thumbnails as the rows of a uint8 array."""
    return np.frombuffer(b"".join(thumbnails), dtype=np.uint8).reshape(-1, THUMBNAIL_BYTES)


class Thumbnails:
    """Stored records' thumbnails by file id, each read once (for a batch of pairs), straight
    from the encoded record."""

    def __init__(self, store: Store, txn: lmdb.Transaction) -> None:
        self.store = store
        self.txn = txn
        self._known: dict[int, bytes] = {}

    def of(self, file_ids: np.ndarray) -> np.ndarray:
        """The thumbnails of these files, whose records say they are known."""
        return stack(self._one(file_id) for file_id in file_ids.tolist())

    def _one(self, file_id: int) -> bytes:
        known = self._known.get(file_id)
        if known is None:
            known = self._known[file_id] = self.store.thumbnail(self.txn, file_id)
        return known


def thumbnails_by_row(
    store: Store, txn: lmdb.Transaction, folder: str, chunk: int = 65536
) -> np.ndarray:
    """Every stored record's thumbnail, by catalog row (Catalog.read's order; zeros where
    none is known), read in one pass over the records into a temporary file in `folder`
    (the index's) and mapped: 256 bytes a file that the page cache holds, not the process,
    where reading each near pair's two thumbnails from its records took most of a recompute
    (at 1M files and radius 14: 36M record reads)."""
    count, raws = store.raw_records(txn)
    if not count:
        return np.zeros((0, THUMBNAIL_BYTES), dtype=np.uint8)
    blank = bytes(THUMBNAIL_BYTES)
    with tempfile.TemporaryFile(prefix="thumbnails-", dir=folder) as handle:
        part = bytearray()
        for _, raw in raws:
            part += encoded_thumbnail(raw) or blank
            if len(part) >= chunk * THUMBNAIL_BYTES:
                handle.write(part)
                part.clear()
        handle.write(part)
        handle.flush()
        rows = handle.tell() // THUMBNAIL_BYTES  # fewer than counted only if txn changed them
        # The map keeps its own handle to the (already unlinked) file.
        mapped = np.memmap(handle, dtype=np.uint8, mode="r", shape=(rows, THUMBNAIL_BYTES))
        return np.asarray(mapped)
