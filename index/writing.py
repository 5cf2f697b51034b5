"""Changing an index's files inside one write transaction (the Index runs the transaction):
a file stored with its matches and pairs, one at a time as it arrives (put) or a batch of new
paths with one hash search for them all (put_new); a file forgotten (delete). bulk.py stores
many more at once, on arrays, with the same helpers."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import lmdb
import numpy as np

from dupwatch.index.fingerprint.file import Fingerprint
from dupwatch.index.matches import AddResult, Match
from dupwatch.index.matching import Matcher
from dupwatch.index.pair_table import PairTable
from dupwatch.index.pixel_digests import PixelDigests
from dupwatch.index.store.crops import CropTable
from dupwatch.index.store.environment import Store
from dupwatch.index.store.ignored import is_ignored
from dupwatch.index.store.pairs import Pair
from dupwatch.index.store.records import FileRecord, encode_record, path_key, u64
from dupwatch.index.store.substrings import SubstringIndex

Item = tuple[bytes, Fingerprint, os.stat_result]  # an absolute path, its fingerprint and stat


class Writer:
    """What storing a file touches: the store and its hash search, the matcher, the pairs,
    the pixel digests and the crop table; `radius` is the index's (matches shown)."""

    def __init__(
        self,
        store: Store,
        hashes: SubstringIndex,
        matcher: Matcher,
        pairs: PairTable,
        pixels: PixelDigests,
        crop_table: CropTable | None,
        radius: int,
    ) -> None:
        self.store = store
        self.hashes = hashes
        self.matcher = matcher
        self.pairs = pairs
        self.pixels = pixels
        self.crop_table = crop_table
        self.radius = radius
        self.transforms = matcher.transforms

    def put(
        self, txn: lmdb.Transaction, path: bytes, fp: Fingerprint, st: os.stat_result
    ) -> AddResult:
        """Store one file (replacing a record of its path), its pairs, what it matches."""
        old = self.store.find_path(txn, path)
        if old is not None:
            self.delete(txn, old)
        record = self.new_record(txn, path, fp, st)
        # Pairs are kept at the index's pair radius; the caller sees matches at its own radius.
        pair_radius = self.pairs.radius(txn)
        radius = max(self.radius, pair_radius)
        matches = self.matcher.find(txn, fp.bits, fp.centre, fp, path, radius, writable=True)
        record = self.with_known_pixels(record, fp)
        self.store_record(txn, record)
        self.hashes.add(record.bits, txn=txn)
        return self.settle(txn, record, fp, matches, pair_radius)

    def put_new(self, txn: lmdb.Transaction, items: Sequence[Item]) -> list[AddResult]:
        """put() for each of `items`, whose paths are new and distinct, in order: each file
        matched against the files before it, with one hash search for the whole batch (the
        records and hashes are stored first; each file's later ones are left out)."""
        records = [self.new_record(txn, *item) for item in items]
        for record in records:
            self.store_record(txn, record)
        self.hashes.update(np.array([r.bits for r in records], dtype=np.uint64), txn=txn)
        pair_radius = self.pairs.radius(txn)
        radius = max(self.radius, pair_radius)
        queries = np.array([fp.bits for _, fp, _ in items], dtype=np.uint64)
        owner, distances, found = self.hashes.find_many(queries, radius, txn=txn)
        bounds = np.searchsorted(owner, np.arange(len(items) + 1)).tolist()
        results = []
        for i, ((path, fp, _), record) in enumerate(zip(items, records, strict=True)):
            lo, hi = bounds[i], bounds[i + 1]
            near = zip(distances[lo:hi].tolist(), found[lo:hi].tolist(), strict=True)
            later = {r.id for r in records[i:]}  # itself, and the files after it
            matches = self.matcher.find(
                txn, fp.bits, fp.centre, fp, path, radius, exclude=later, writable=True, near=near
            )
            known = self.with_known_pixels(record, fp)
            if known is not record:
                self.store_record(txn, known, derived=False)
            results.append(self.settle(txn, known, fp, matches, pair_radius))
        return results

    def new_record(
        self, txn: lmdb.Transaction, path: bytes, fp: Fingerprint, st: os.stat_result
    ) -> FileRecord:
        return FileRecord(
            id=self.store.next_file_id(txn),
            path=path,
            dev=st.st_dev,
            ino=st.st_ino,
            size=fp.size,
            mtime_ns=st.st_mtime_ns,
            bits=fp.bits,
            digest=fp.digest,
            width=fp.width,
            height=fp.height,
            format=fp.format,
            centre=fp.centre,
            low_information=fp.low_information,
            thumbnail=fp.thumbnail,
            framed=fp.framed,
            orientations=fp.orientations[1:],
        )

    def with_known_pixels(self, record: FileRecord, fp: Fingerprint) -> FileRecord:
        """The record with its pixel digest, when one was made while matching it."""
        pixels = self.pixels.known(fp.digest)
        if pixels is None or record.pixel_digest == pixels:
            return record
        return dataclasses.replace(record, pixel_digest=pixels)

    def store_record(
        self, txn: lmdb.Transaction, record: FileRecord, *, derived: bool = True
    ) -> None:
        """Write a record and (`derived`) its entries in by_path, by_hash and by_digest; a
        file stored is no longer one that failed."""
        dbs = self.store.dbs
        key = u64(record.id)
        txn.put(key, encode_record(record), db=dbs[b"files"])
        if derived:
            txn.put(path_key(record.path), key, db=dbs[b"by_path"])
            txn.delete(path_key(record.path), db=dbs[b"failed"])
            txn.put(u64(record.bits), key, db=dbs[b"by_hash"])
            txn.put(record.digest, key, db=dbs[b"by_digest"])

    def settle(
        self,
        txn: lmdb.Transaction,
        record: FileRecord,
        fp: Fingerprint,
        matches: list[Match],
        pair_radius: int,
    ) -> AddResult:
        """Keep a new file's crop hashes and pairs; what the caller is shown of its matches."""
        if self.crop_table is not None:
            self.crop_table.add(record.id, fp.crops)
        for match in matches:
            if match.distance <= pair_radius:
                pair = Pair(match.record.id, match.distance, match.kind, match.transform)
                self.pairs.put(txn, record.id, pair)
        # A pair marked "not a duplicate" stays stored (so unignoring needs no rehash) but is
        # never returned, so the service's alerts skip it.
        shown = [
            m
            for m in matches
            if m.distance <= self.radius
            and not is_ignored(self.store, txn, fp.digest, m.record.digest)
        ]
        return AddResult(record, shown)

    def note_transforms(self, txn: lmdb.Transaction) -> None:
        """After storing files: their pairs were looked for through this index's transforms
        only, so the index no longer says every file's were looked for through others."""
        looked_through = self.pairs.transforms(txn)
        if not looked_through <= self.transforms:
            self.pairs.set_transforms(txn, looked_through & self.transforms)

    def delete(self, txn: lmdb.Transaction, record: FileRecord) -> None:
        """Forget one file: its record, entries, pairs, and its hash with the last file."""
        dbs = self.store.dbs
        key = u64(record.id)
        self.pairs.delete(txn, record.id)
        txn.delete(key, db=dbs[b"files"])
        txn.delete(path_key(record.path), key, db=dbs[b"by_path"])
        txn.delete(record.digest, key, db=dbs[b"by_digest"])
        hash_key = u64(record.bits)
        txn.delete(hash_key, key, db=dbs[b"by_hash"])
        if txn.get(hash_key, db=dbs[b"by_hash"]) is None:
            self.hashes.remove(record.bits, txn=txn)
