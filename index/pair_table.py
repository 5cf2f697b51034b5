"""The duplicate pairs an index keeps (the `pairs` table): each pair found when a file
arrived, stored under both files, so that listing groups is a read; read back at a radius
(packed arrays, store/packed_pairs.py), and found again for every file when the radius grows
(a self-join of every hash, store/selfjoin.py, judged on arrays: pair_arrays.py)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields

import lmdb
import numpy as np

from dupwatch.index.errors import StoreError
from dupwatch.index.matching import Matcher, as_fingerprint
from dupwatch.index.pair_arrays import NEAR, Catalog, judge, looks_alike, thumbnails_by_row
from dupwatch.index.store.environment import Store
from dupwatch.index.store.packed_pairs import PackedPairs, PairSpool, read_entries, read_within
from dupwatch.index.store.pairs import KIND_CODES, KINDS, TRANSFORMS, Pair
from dupwatch.index.store.records import u64
from dupwatch.index.store.selfjoin import gathered, self_join, self_join_beside

log = logging.getLogger(__name__)

# Files from which recompute's self-join runs in a thread beside the judging, when there is
# a second core (at 1M: 242 -> 207 s); below it the whole join takes seconds.
BESIDE_FROM = 100_000

# Every pair of rows (a, b), a < b, of a hash array within a radius, with its distance, in
# batches of selfjoin.GATHERED pairs or more (the judging costs per batch).
Join = Callable[[np.ndarray, int], Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]]


def local_join(bits: np.ndarray, radius: int) -> Iterator[tuple[np.ndarray, ...]]:
    """The self-join on this machine: in a thread beside the caller when there is a second
    core and enough files for it to matter."""
    if len(bits) >= BESIDE_FROM and len(os.sched_getaffinity(0)) > 1:
        return self_join_beside(bits, radius)
    return gathered(self_join(bits, radius))


@dataclass
class _Judged:
    """The plain pairs of `catalog`'s files at `radius`, judged and spooled."""

    catalog: Catalog
    radius: int
    spool: PairSpool

    def fits(self, catalog: Catalog, radius: int) -> bool:
        """True when these are the pairs of `catalog` at `radius`: the same files, with the
        same content, hashes and detail (another process may write between two calls)."""
        return radius == self.radius and all(
            np.array_equal(getattr(catalog, f.name), getattr(self.catalog, f.name))
            for f in fields(Catalog)
        )


class PairTable:
    """The pairs of one index; `default_radius` is the radius pairs are kept at until
    store_all() records another."""

    def __init__(self, store: Store, matcher: Matcher, default_radius: int) -> None:
        self.store = store
        self.matcher = matcher
        self.default_radius = default_radius
        self.db = store.dbs[b"pairs"]
        self._judged: _Judged | None = None  # store_all's, when the map cut it short
        self.join: Join = local_join  # or on a cluster: dupwatch.index.cluster_join

    def put(self, txn: lmdb.Transaction, file_id: int, pair: Pair) -> None:
        """Store `pair` of `file_id`, under both of its files."""
        txn.put(u64(file_id), pair.code(), db=self.db)
        txn.put(u64(pair.other), pair.seen_from(file_id).code(), db=self.db)

    def of(self, txn: lmdb.Transaction, file_id: int) -> list[Pair]:
        cursor = txn.cursor(db=self.db)
        if not cursor.set_key(u64(file_id)):
            return []
        return [Pair.decode(raw) for raw in map(bytes, cursor.iternext_dup())]

    def delete(self, txn: lmdb.Transaction, file_id: int) -> None:
        """Forget every pair of `file_id`, both entries of each."""
        for pair in self.of(txn, file_id):
            txn.delete(u64(pair.other), pair.seen_from(file_id).code(), db=self.db)
        txn.delete(u64(file_id), db=self.db)

    def radius(self, txn: lmdb.Transaction) -> int:
        """The radius up to which pairs are stored: the radius the index was made with,
        until store_all() changes it."""
        raw = self.store.get_meta(txn, b"pair_radius")
        return int(raw) if raw is not None else self.default_radius

    def transforms(self, txn: lmdb.Transaction) -> frozenset[str]:
        """The transforms every file's pairs were looked for through (`--transforms`); none
        for an index that never said (it was made before they were recorded)."""
        raw = self.store.get_meta(txn, b"pair_transforms")
        return frozenset(json.loads(raw)) if raw is not None else frozenset()

    def set_transforms(self, txn: lmdb.Transaction, transforms: Iterable[str]) -> None:
        self.store.put_meta(txn, b"pair_transforms", json.dumps(sorted(transforms)).encode())

    def store_through(self, txn: lmdb.Transaction, radius: int) -> int:
        """Look for every file's pairs through the matcher's transforms (for an index whose
        files were indexed without them): the hashes of each record turned, against the
        stored hashes, each candidate confirmed on pixels. Returns the pairs added."""
        added = 0
        for record in list(self.store.records(txn)):
            known = {p.other for p in self.of(txn, record.id)} | {record.id}
            fp = as_fingerprint(record)
            for match in self.matcher.through_transforms(txn, fp, record.path, radius, known):
                if match.distance <= radius:
                    self.put(txn, record.id, Pair(match.record.id, match.distance, match.kind,
                                                  match.transform))  # fmt: skip
                    added += 1
        return added

    def look_through(self, transforms: frozenset[str]) -> None:
        """Pair the indexed files through `transforms` when they were indexed without them.

        Raises StoreError saying what to run when it cannot: crop hashes are kept only while
        `crop` is on, and an index opened read-only cannot store the pairs."""
        where = self.store.folder
        with self.store.read() as txn:
            missing = transforms - self.transforms(txn)
            turned = bool(missing - {"crop"})
            lacking = turned and any(not r.orientations for r in self.store.records(txn))
        if not missing:
            return
        if "crop" in missing:
            raise StoreError(
                f"{where}: files were indexed without `--transforms crop`, so their crop hashes "
                "were not kept: run `dupwatch reindex --transforms crop` once (it reads every "
                "file again)"
            )
        if lacking:
            raise StoreError(
                f"{where}: files indexed by an older dupwatch have no turned hashes: run "
                "`dupwatch reindex` once"
            )
        if self.store.readonly:
            raise StoreError(
                f"{where}: pairs through {', '.join(sorted(missing))} were never looked for here, "
                "and the index is read-only: run the command once with write access"
            )

        def change(txn: lmdb.Transaction) -> None:
            added = self.store_through(txn, self.radius(txn))
            self.set_transforms(txn, self.transforms(txn) | transforms)
            log.info("%s: %d pairs found through %s", where, added, ", ".join(sorted(missing)))

        self.store.write(change)

    def within(self, txn: lmdb.Transaction, radius: int) -> PackedPairs:
        """Every file's pairs at `radius` or closer, packed."""
        return read_within(txn, self.db, radius)

    def store_all(self, txn: lmdb.Transaction, radius: int) -> None:
        """Find every plain pair again at `radius`, by a self-join of every file's hash
        (store/selfjoin.py) judged on arrays as Matcher.find and pair_kind judge one pair
        (pair_arrays.py), spooled to files and appended in key order. Pairs found through a
        transform were confirmed on the pixels of both files when one arrived; they are kept
        (those still within the radius) rather than read again.

        The pairs can outgrow the map: Store.write then grows it and calls this again in a
        new transaction. The judged pairs are kept for that call, and used when the files
        are still what they were judged from (at 1M files and radius 14, the join and the
        judging took ~100 s a time and were done twice)."""
        transformed = self._transformed_within(txn, radius)
        catalog = Catalog.read(self.store, txn)
        judged, self._judged = self._judged, None
        if judged is None or not judged.fits(catalog, radius):
            if judged is not None:
                judged.spool.discard()
            judged = self._judge_all(txn, catalog, radius)
        try:
            txn.drop(self.db, delete=False)
            judged.spool.store(txn, self.db)
            for file_id, pair in transformed:
                if all(p.other != pair.other for p in self.of(txn, file_id)):
                    self.put(txn, file_id, pair)
            self.store.put_meta(txn, b"pair_radius", str(radius).encode())
        except lmdb.MapFullError:
            self._judged = judged  # for the call after the map has grown
            raise
        finally:
            if self._judged is not judged:
                judged.spool.discard()

    def forget_judged(self) -> None:
        """Drop what store_all kept for a call that never came (the map could not grow)."""
        if self._judged is not None:
            self._judged.spool.discard()
            self._judged = None

    def _judge_all(self, txn: lmdb.Transaction, catalog: Catalog, radius: int) -> _Judged:
        """Every plain pair of the catalog's files at `radius`, judged and spooled."""
        thumbnails = thumbnails_by_row(self.store, txn, self.store.folder)
        highest = int(catalog.ids[-1]) if len(catalog) else 0
        spool = PairSpool(self.store.folder, highest)
        try:
            for a, b, full in self.join(catalog.bits, radius):
                self._spool_judged(txn, catalog, thumbnails, a, b, full, radius, spool)
        except BaseException:
            spool.discard()
            raise
        return _Judged(catalog, radius, spool)

    def _transformed_within(self, txn: lmdb.Transaction, radius: int) -> list[tuple[int, Pair]]:
        """The stored pairs found through a transform, at `radius` or closer, each once."""
        entries = read_entries(
            txn, self.db,
            lambda e: (e["transform"] != 0) & (e["key"] < e["other"]) & (e["distance"] <= radius),
        )  # fmt: skip
        return [
            (key, Pair(other, distance, KINDS[kind], TRANSFORMS[transform]))
            for key, other, distance, kind, transform in entries.tolist()
        ]

    def _spool_judged(
        self,
        txn: lmdb.Transaction,
        catalog: Catalog,
        thumbnails: np.ndarray,
        a: np.ndarray,
        b: np.ndarray,
        full: np.ndarray,
        radius: int,
        spool: PairSpool,
    ) -> None:
        """Judge catalog rows (a, b), `a` the earlier file, as store_all did one record at a
        time (`thumbnails` by row: thumbnails_by_row); hand those that are pairs at `radius`
        to `spool`."""
        distance, kinds, pixels = judge(catalog, a, b, full)
        keep = distance <= radius
        a, b, distance, kinds, pixels = a[keep], b[keep], distance[keep], kinds[keep], pixels[keep]
        for i in np.flatnonzero(pixels).tolist():
            earlier = self.store.record(txn, int(catalog.ids[a[i]]))
            later = self.store.record(txn, int(catalog.ids[b[i]]))
            kinds[i] = KIND_CODES[self.matcher.pair_kind(txn, earlier, later)]
        near = np.flatnonzero(kinds == NEAR)
        allowed = looks_alike(
            catalog.low[a[near]], catalog.thumbnail[a[near]],
            catalog.low[b[near]], catalog.thumbnail[b[near]],
            lambda pairs: (thumbnails[a[near[pairs]]], thumbnails[b[near[pairs]]]),
        )  # fmt: skip
        keep = np.ones(len(a), dtype=bool)
        keep[near[~allowed]] = False
        spool.add(catalog.ids[a[keep]], catalog.ids[b[keep]], distance[keep], kinds[keep])
