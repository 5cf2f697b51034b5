"""Storing many fingerprints at once (a first scan, a reindex, a cluster's results): batches of
files, each one transaction with its pairs, the pairs found by one batched hash search and
judged on arrays (pair_arrays.py) instead of one query and a Python object per pair.

The pairs, their kinds and transforms are those put() would store one file at a time in the
same order: each file is paired with the files before it, the second look is detail's
near_allowed, the few pairs whose kind needs pixels are told by Matcher.kind, the turned and
cropped copies are looked for file by file (Matcher.through_transforms) past the files it
matched plainly, and the crop table grows in order. No AddResult is made (put_many makes
them, for alerts). tests/test_bulk.py holds put_bulk to put().

Memory: a catalog of every file (pair_arrays.ROW_BYTES each: 51 MB a million) and its sort
by hash (16 bytes a file), and one batch's candidate pairs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

import lmdb
import numpy as np

from dupwatch.index.fingerprint.file import Fingerprint
from dupwatch.index.folders import absolute
from dupwatch.index.pair_arrays import (
    NEAR,
    THUMBNAIL_BYTES,
    ByHash,
    Catalog,
    Thumbnails,
    judge,
    looks_alike,
    stack,
)
from dupwatch.index.store.multi_index import expand
from dupwatch.index.store.packed_pairs import put_plain
from dupwatch.index.store.pairs import KIND_CODES, Pair
from dupwatch.index.writing import Item, Writer

BULK_BATCH = 65536  # files per transaction


@dataclass
class _State:
    """What put_bulk carries from one batch to the next."""

    catalog: Catalog | None = None  # every stored file's columns; None: read them again
    bytes_per_file: float = 0.0  # the most a batch grew the map by, per file


def put_bulk(
    writer: Writer,
    items: Iterable[tuple[str | bytes | os.PathLike, Fingerprint, os.stat_result]],
    *,
    batch: int = BULK_BATCH,
    every_s: float | None = None,
) -> int:
    """Store `items`, `batch` files to a transaction (or what came in `every_s` seconds, when
    they come slowly), each committed whole with its pairs; a path already indexed (or met
    twice) is replaced as put() would, in its turn. Returns how many were stored."""
    state = _State()
    pending: list[Item] = []
    stored = 0
    started = time.monotonic()
    for path, fp, st in items:
        if not pending:
            started = time.monotonic()
        pending.append((absolute(path), fp, st))
        late = every_s is not None and time.monotonic() - started >= every_s
        if len(pending) >= batch or late:
            stored += _store_batch(writer, state, pending)
            pending = []
    return stored + _store_batch(writer, state, pending)


def _store_batch(writer: Writer, state: _State, items: list[Item]) -> int:
    """Store `items` in one transaction: in bulk up to a path already indexed (or met before
    in the batch), which put() replaces in its turn, and so on."""
    if not items:
        return 0
    store = writer.store

    def first_known(txn: lmdb.Transaction, rest: list[Item]) -> int:
        met: set[bytes] = set()
        for i, (path, _, _) in enumerate(rest):
            if path in met or store.find_path(txn, path) is not None:
                return i
            met.add(path)
        return len(rest)

    def change(txn: lmdb.Transaction) -> None:
        rest = items
        while rest:
            known = first_known(txn, rest)
            if known:
                _store_new(writer, txn, state, rest[:known])
            if known < len(rest):
                writer.put(txn, *rest[known])
                state.catalog = None  # a record was replaced: read the catalog again
            rest = rest[known + 1 :]
        writer.note_transforms(txn)

    # A batch that fills the map runs again whole once it has grown (its search is most of
    # a batch's time: ~70 s at 10M files): room for twice what the largest batch took is
    # made first.
    store.reserve(round(2 * state.bytes_per_file * len(items)))
    used = store.used_bytes()
    try:
        store.write(change)
    except BaseException:
        state.catalog = None  # what it held was not committed
        raise
    grown = (store.used_bytes() - used) / len(items)
    state.bytes_per_file = max(state.bytes_per_file, grown)
    return len(items)


def _store_new(writer: Writer, txn: lmdb.Transaction, state: _State, items: list[Item]) -> None:
    """Store files whose paths are all new, with their pairs, in `txn`."""
    old = state.catalog if state.catalog is not None else Catalog.read(writer.store, txn)
    records = [writer.new_record(txn, *item) for item in items]
    for record in records:
        writer.store_record(txn, record)
    bits = np.array([r.bits for r in records], dtype=np.uint64)
    writer.hashes.update(bits, txn=txn)
    catalog = old.extend(Catalog.of(records))
    first = len(old)  # the row of the first new file
    pair_radius = writer.pairs.radius(txn)
    radius = max(writer.radius, pair_radius)
    later, earlier, full = _candidates(writer, txn, catalog, first, bits, radius)
    distance, kinds, pixels = judge(catalog, earlier, later, full)
    keep = distance <= radius
    later, earlier, distance, kinds = later[keep], earlier[keep], distance[keep], kinds[keep]
    _tell_pixels(writer, txn, catalog, items, records, later, earlier, kinds, pixels[keep])
    near = np.flatnonzero(kinds == NEAR)
    thumbnails = Thumbnails(writer.store, txn)
    new_thumbnail = np.array([len(fp.thumbnail) == THUMBNAIL_BYTES for _, fp, _ in items])

    def both_thumbnails(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        new_rows = (later[near[pairs]] - first).tolist()
        mine = stack(items[row][1].thumbnail for row in new_rows)
        return mine, thumbnails.of(catalog.ids[earlier[near[pairs]]])

    allowed = looks_alike(
        catalog.low[later[near]], new_thumbnail[later[near] - first],
        catalog.low[earlier[near]], catalog.thumbnail[earlier[near]], both_thumbnails,
    )  # fmt: skip
    matched = np.ones(len(later), dtype=bool)
    matched[near[~allowed]] = False
    stored = matched & (distance <= pair_radius)
    put_plain(
        txn, writer.pairs.db, catalog.ids[later[stored]], catalog.ids[earlier[stored]],
        distance[stored], kinds[stored],
    )  # fmt: skip
    if writer.transforms:
        plain = (catalog.ids[later[matched]], catalog.ids[earlier[matched]])
        _through_transforms(writer, txn, items, records, plain, radius, pair_radius)
    state.catalog = catalog


def _candidates(
    writer: Writer, txn: lmdb.Transaction, catalog: Catalog, first: int, bits: np.ndarray,
    radius: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """(new row, earlier row, full distance) of every pair of a new file (rows from `first`)
    with a file stored before it whose hashes are within `radius`."""
    queries = np.unique(bits)
    owner, full, found = writer.hashes.find_many(queries, radius, txn=txn)
    by_hash = ByHash(catalog.bits)
    query_at, query_rows = by_hash.rows(queries)
    new = query_rows >= first
    query_at, query_rows = query_at[new], query_rows[new]  # the new rows of each query
    starts = np.searchsorted(query_at, np.arange(len(queries) + 1))
    found_at, found_rows = by_hash.rows(found)  # the rows of each hash found
    # Every new row of a query meets every row of each hash it found.
    query = owner[found_at]
    repeats = starts[query + 1] - starts[query]
    later = query_rows[expand(starts[query], repeats)]
    earlier = np.repeat(found_rows, repeats)
    full = np.repeat(full[found_at], repeats)
    before = earlier < later  # rows are in id order: the files stored before it
    order = np.lexsort((earlier[before], later[before]))
    return later[before][order], earlier[before][order], full[before][order]


def _tell_pixels(
    writer: Writer,
    txn: lmdb.Transaction,
    catalog: Catalog,
    items: list[Item],
    records: list,
    later: np.ndarray,
    earlier: np.ndarray,
    kinds: np.ndarray,
    pixels: np.ndarray,
) -> None:
    """File by file in order, as put() does: the kind of each pair whose pixels must tell
    pixel from near (Matcher.kind decodes, and keeps the digests it makes), then the file's
    record with the pixel digest made on the way, if any."""
    first = len(catalog) - len(items)
    pending = np.flatnonzero(pixels)  # in order of the new row (later is sorted)
    bounds = np.searchsorted(later[pending], first + np.arange(len(items) + 1)).tolist()
    for i, ((path, fp, _), record) in enumerate(zip(items, records, strict=True)):
        for entry in pending[bounds[i] : bounds[i + 1]].tolist():
            other = writer.store.record(txn, int(catalog.ids[earlier[entry]]))
            kind = writer.matcher.kind(txn, other, fp, path, 0, writable=True)
            kinds[entry] = KIND_CODES[kind]
        known = writer.with_known_pixels(record, fp)
        if known is not record:
            writer.store_record(txn, known, derived=False)


def _through_transforms(
    writer: Writer,
    txn: lmdb.Transaction,
    items: list[Item],
    records: list,
    plain: tuple[np.ndarray, np.ndarray],
    radius: int,
    pair_radius: int,
) -> None:
    """The turned and cropped matches of a batch's files, one by one and in order as put()
    finds them: `plain` holds (file id, earlier file id) of the plain matches, which a
    transform does not match again; the crop table takes each file after its turn."""
    matched: dict[int, set[int]] = {}
    for mine, theirs in zip(*(column.tolist() for column in plain), strict=True):
        matched.setdefault(mine, set()).add(theirs)
    for (path, fp, _), record in zip(items, records, strict=True):
        seen = _Skipped(matched.get(record.id, set()), record.id)
        for match in writer.matcher.through_transforms(txn, fp, path, radius, seen):
            if match.distance <= pair_radius:
                pair = Pair(match.record.id, match.distance, match.kind, match.transform)
                writer.pairs.put(txn, record.id, pair)
        if writer.crop_table is not None:
            writer.crop_table.add(record.id, fp.crops)


class _Skipped:
    """The files a new file is not matched with through a transform: those it matched as it
    is (`matched`), and itself and every file stored after it (ids from `first` on)."""

    def __init__(self, matched: set[int], first: int) -> None:
        self.matched = matched
        self.first = first

    def __contains__(self, file_id: object) -> bool:
        return file_id in self.matched or (isinstance(file_id, int) and file_id >= self.first)

    def __or__(self, more: Iterable[int]) -> _Skipped:
        return _Skipped(self.matched | set(more), self.first)
