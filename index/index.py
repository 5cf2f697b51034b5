"""The Index: files, their fingerprints, the hash search tables and the duplicate pairs, in
one LMDB.

Every change to one file is one write transaction (put_many groups several files in one,
each still whole; put_bulk many more). Reads open their own short transaction, so readers in
other threads or processes run beside the one writer.

A little longer than 450 lines because it is the library's one public object (open, query,
add, put, remove, move, groups, update, check, repair, reindex): each method is a short
transaction over matching.py, writing.py, bulk.py, pair_table.py and store/, which hold the
work.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import lmdb

from dupwatch.index.bulk import BULK_BATCH, put_bulk
from dupwatch.index.errors import FingerprintError, MissingFile, StoreError, UnreadableFile
from dupwatch.index.fingerprint.file import HASH_PARAMS, Fingerprint, fingerprint
from dupwatch.index.fingerprint.transforms import parse_transforms
from dupwatch.index.folders import DEFAULT_IGNORE, absolute, is_under
from dupwatch.index.grouping import build_groups, derived_copies, wanted_pairs
from dupwatch.index.groups import DEFAULT_KEEP, Group, Keeper, Labelled
from dupwatch.index.matches import (
    DEFAULT_RADIUS,
    AddResult,
    Match,
    best_first,
    check_radius,
)
from dupwatch.index.matching import Matcher
from dupwatch.index.pair_table import PairTable
from dupwatch.index.pixel_digests import PixelDigests
from dupwatch.index.store import bookkeeping
from dupwatch.index.store.check import check_index, quick_check, rebuild_derived
from dupwatch.index.store.crops import CropTable
from dupwatch.index.store.environment import Store
from dupwatch.index.store.ignored import ignored_keys, is_ignored
from dupwatch.index.store.location import default_index_path
from dupwatch.index.store.records import Failure, FileRecord, encode_record, path_key, u64
from dupwatch.index.store.substrings import SubstringIndex
from dupwatch.index.update import Plan, Progress, UpdateReport, plan, rehash, update
from dupwatch.index.writing import Writer

if TYPE_CHECKING:
    from dupwatch.index.hashing.engine import Engine

log = logging.getLogger(__name__)


class Index:
    """The one object the rest of dupwatch uses to store and find images."""

    def __init__(self, store: Store, radius: int, transforms: Iterable[str] = ()) -> None:
        self.store = store
        self.radius = check_radius(radius)
        # The distinct hashes of the files, searchable by radius (multi-index hashing).
        self.hashes = SubstringIndex(store.env, db=store.dbs[b"substrings"])
        store.hold_snapshots(self.hashes.release)
        self.pixels = PixelDigests(store)
        # Which transformed copies new files and queries are also matched against.
        self.transforms = parse_transforms(transforms)
        self.crop_table = (
            CropTable(store.folder, readonly=store.readonly) if "crop" in self.transforms else None
        )
        self.matcher = Matcher(store, self.hashes, self.pixels, self.transforms, self.crop_table)
        self.pairs = PairTable(store, self.matcher, self.radius)
        self.writer = Writer(
            store, self.hashes, self.matcher, self.pairs, self.pixels, self.crop_table, self.radius
        )
        if not store.readonly:
            with store.read() as txn:
                known = store.get_meta(txn, b"pair_radius") is not None
                files = txn.stat(store.dbs[b"files"])["entries"]
            if not known:

                def begin(txn: lmdb.Transaction) -> None:
                    store.put_meta(txn, b"pair_radius", b"%d" % self.radius)
                    # A new index looks through its transforms from its first file.
                    self.pairs.set_transforms(txn, self.transforms if not files else ())

                store.write(begin)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike | None = None,
        *,
        radius: int | None = None,
        readonly: bool = False,
        check_params: bool = True,
        transforms: Iterable[str] = (),
    ) -> Index:
        """Open the index in `path` (created when missing unless `readonly`).

        `check_params=False` opens an index made with other hash parameters, for reindex().
        `transforms` ("rotate", "flip", "crop") also matches turned, mirrored or cropped copies.
        """
        folder = os.fspath(path) if path is not None else default_index_path()
        store = Store(folder, hash_params=HASH_PARAMS, readonly=readonly, check_params=check_params)
        return cls(store, DEFAULT_RADIUS if radius is None else radius, transforms)

    @property
    def path(self) -> str:
        return self.store.folder

    def close(self) -> None:
        if self.crop_table is not None:
            self.crop_table.close()
        self.store.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        with self.store.read() as txn:
            return txn.stat(self.store.dbs[b"files"])["entries"]

    def pair_count(self) -> int:
        """How many duplicate pairs are stored (a count kept by LMDB: no pair is read)."""
        with self.store.read() as txn:
            return txn.stat(self.store.dbs[b"pairs"])["entries"] // 2  # both directions

    # Reading

    def files(self) -> Iterator[FileRecord]:
        with self.store.read() as txn:
            yield from self.store.records(txn)

    def get(self, path: str | bytes | os.PathLike) -> FileRecord | None:
        with self.store.read() as txn:
            return self.store.find_path(txn, absolute(path))

    def is_current(self, path: str | bytes | os.PathLike, st: os.stat_result) -> bool:
        """True when the indexed record has this stat: the file needs no new hash."""
        record = self.get(path)
        return record is not None and record.has_stat(st)

    def query(
        self,
        target: str | bytes | os.PathLike | Fingerprint | int,
        radius: int | None = None,
        *,
        fingerprinted: Fingerprint | None = None,
    ) -> list[Match]:
        """Indexed files that duplicate `target` (a path, a Fingerprint or a hash), best first.

        When `target` is an indexed path, its own record is included with is_self. Pairs
        marked "not a duplicate" are left out (a hash alone has no digest to tell them by).
        `fingerprinted`: the path's fingerprint, made elsewhere (the service makes it in a
        hashing process, with its time and memory limits).
        """
        radius = check_radius(self.radius if radius is None else radius)
        path = None
        if isinstance(target, int):
            fp = None
            bits = target
        elif isinstance(target, Fingerprint):
            fp, bits = target, target.bits
        else:
            path = absolute(target)
            fp = fingerprinted or fingerprint(path)
            bits = fp.bits
        centre = None if fp is None else fp.centre
        with self.store.read() as txn:
            matches = self.matcher.find(txn, bits, centre, fp, path, radius)
            if fp is None:
                return matches
            # A pair the user marked "not a duplicate" is never reported (index/ignore.py).
            return [
                m
                for m in matches
                if m.is_self or not is_ignored(self.store, txn, fp.digest, m.record.digest)
            ]

    # Writing: every call below runs in one write transaction.

    def add(self, path: str | bytes | os.PathLike) -> AddResult:
        """Index one file, hashing it only when its stat changed since it was indexed."""
        raw = absolute(path)
        try:
            st = os.stat(raw)
        except OSError as error:
            raise _stat_error(raw, error) from error
        record = self.get(raw)
        if record is not None and record.has_stat(st):
            return AddResult(record, self._pairs_as_matches(record), hashed=False)
        return self.put(raw, fingerprint(raw), st)

    def put(
        self, path: str | bytes | os.PathLike, fp: Fingerprint, st: os.stat_result
    ) -> AddResult:
        return self.put_many([(path, fp, st)])[0]

    def put_many(
        self, items: Iterable[tuple[str | bytes | os.PathLike, Fingerprint, os.stat_result]]
    ) -> list[AddResult]:
        """Store fingerprints already computed, in one transaction; a known path is replaced.

        Each file is matched against the files stored before it, in order, as put() would;
        when every path is new, the hash search runs once for the whole batch."""
        items = [(absolute(path), fp, st) for path, fp, st in items]

        def change(txn: lmdb.Transaction) -> list[AddResult]:
            paths = {path for path, _, _ in items}
            if (
                len(items) < 2
                or len(paths) < len(items)
                or any(self.store.find_path(txn, path) is not None for path in paths)
            ):
                results = [self.writer.put(txn, *item) for item in items]
            else:
                results = self.writer.put_new(txn, items)
            if items:
                self.writer.note_transforms(txn)
            return results

        return self.store.write(change)

    def put_bulk(
        self,
        items: Iterable[tuple[str | bytes | os.PathLike, Fingerprint, os.stat_result]],
        *,
        batch: int = BULK_BATCH,
        every_s: float | None = None,
    ) -> int:
        """Store many fingerprints at once (a first scan, a reindex): `batch` files to a
        transaction (or what came in `every_s` seconds), each committed whole with its pairs,
        exactly those put() would store one file at a time in the same order (bulk.py).
        Returns how many were stored; the matches are not returned."""
        return put_bulk(self.writer, items, batch=batch, every_s=every_s)

    def _pairs_as_matches(self, record: FileRecord) -> list[Match]:
        with self.store.read() as txn:
            matches = [
                Match(other, pair.distance, pair.kind, transform=pair.transform)
                for pair in self.pairs.of(txn, record.id)
                if (other := self.store.record(txn, pair.other)) is not None
            ]
        return sorted(matches, key=best_first)

    def _delete(self, txn: lmdb.Transaction, record: FileRecord) -> None:
        self.writer.delete(txn, record)

    def remove(self, path: str | bytes | os.PathLike) -> bool:
        """Forget one file; False when it was not indexed."""
        raw = absolute(path)

        def change(txn: lmdb.Transaction) -> bool:
            txn.delete(path_key(raw), db=self.store.dbs[b"failed"])
            record = self.store.find_path(txn, raw)
            if record is None:
                return False
            self._delete(txn, record)
            return True

        return self.store.write(change)

    def remove_under(self, folder: str | bytes | os.PathLike) -> int:
        """Forget every file under `folder`; returns how many."""
        return self.remove_many(r.path for r in self.files() if is_under(r.path, absolute(folder)))

    def remove_many(self, paths: Iterable[bytes]) -> int:
        paths = list(paths)

        def change(txn: lmdb.Transaction) -> int:
            removed = 0
            for path in paths:
                txn.delete(path_key(path), db=self.store.dbs[b"failed"])
                record = self.store.find_path(txn, path)
                if record is not None:
                    self._delete(txn, record)
                    removed += 1
            return removed

        return self.store.write(change) if paths else 0

    def move(self, old: str | bytes | os.PathLike, new: str | bytes | os.PathLike) -> int:
        """Follow a rename without hashing again; a folder moves every file under it.

        Returns how many records moved.
        """
        old_raw, new_raw = absolute(old), absolute(new)
        dbs = self.store.dbs

        def relocate(txn: lmdb.Transaction, record: FileRecord, path: bytes) -> None:
            key = u64(record.id)
            target = self.store.find_path(txn, path)
            if target is not None and target.id != record.id:
                self._delete(txn, target)  # the move replaced that file
            txn.delete(path_key(record.path), key, db=dbs[b"by_path"])
            txn.put(path_key(path), key, db=dbs[b"by_path"])
            moved = FileRecord(**{**_fields(record), "path": path})
            txn.put(key, encode_record(moved), db=dbs[b"files"])

        def change(txn: lmdb.Transaction) -> int:
            record = self.store.find_path(txn, old_raw)
            if record is not None:
                relocate(txn, record, new_raw)
                return 1
            under = [r for r in self.store.records(txn) if is_under(r.path, old_raw)]
            for record in under:
                relocate(txn, record, new_raw + record.path[len(old_raw) :])
            return len(under)

        return self.store.write(change)

    # Groups

    def groups(
        self,
        radius: int | None = None,
        *,
        keep: str = DEFAULT_KEEP,
        prefer: Sequence[str | bytes | os.PathLike] = (),
        pair_filter: Callable[[FileRecord, FileRecord], bool] | None = None,
        labelled: Labelled | None = None,
    ) -> list[Group]:
        """Duplicate groups, each built around its keeper (the copy to keep).

        Every member is within `radius` of its keeper (or exact/pixel with it), except a
        copy that matches only another member, which is shown `via` it: groups do not
        chain, so A~B and B~C never put a distant A and C together as copies of one keeper.
        The keeper is chosen by groups.Keeper: `prefer` folders first, then (policy
        "labelled") copies `labelled` says have labels, then the picture itself over the
        copies made from it, then the `keep` policy. Pairs marked "not a duplicate"
        (index/ignore.py) and pairs `pair_filter` rejects (it must be symmetric) are left
        out. Largest groups first. The members' records carry no thumbnail or turned
        hashes (Store.record(detail=False)).
        """
        preferred = [absolute(folder) for folder in prefer]
        radius = check_radius(self.radius if radius is None else radius)
        with self.store.read() as txn:
            pair_radius = self.pairs.radius(txn)
        if radius > pair_radius:
            if self.store.readonly:
                raise StoreError(
                    f"{self.path}: pairs are stored up to radius {pair_radius}; "
                    f"radius {radius} needs a writable index to recompute them"
                )
            self.recompute_pairs(radius)
        self.look_through_transforms()
        with self.store.read() as txn:
            pairs = self.pairs.within(txn, radius)
            # Groups show their files, never match them: no thumbnails or turned hashes.
            records = {i: self.store.record(txn, i, detail=False) for i in pairs.ids.tolist()}
            ignored = ignored_keys(self.store, txn)
        kept = wanted_pairs(records, pairs, ignored, pair_filter)
        keeper = Keeper(keep, preferred, labelled, frozenset(derived_copies(records, kept)))
        return build_groups(records, kept, keeper)

    def look_through_transforms(self) -> None:
        """Pair the indexed files through this index's `--transforms` when they were indexed
        without them, as a larger `--radius` recomputes the pairs (pair_table.py)."""
        self.pairs.look_through(self.transforms)

    def recompute_pairs(self, radius: int) -> None:
        """Store the pairs of every file again, at a new radius."""
        radius = check_radius(radius)
        try:
            self.store.write(lambda txn: self.pairs.store_all(txn, radius))
        finally:
            self.pairs.forget_judged()

    # Folders

    def plan(
        self, folders: Iterable[str | bytes | os.PathLike], ignore: Iterable[str] = DEFAULT_IGNORE
    ) -> Plan:
        """What update() would do, by stat alone: files to hash, files gone."""
        return plan(self, folders, ignore)

    def update(
        self,
        folders: Iterable[str | bytes | os.PathLike],
        *,
        workers: int | None = None,
        progress: Progress | None = None,
        engine: Engine | None = None,
    ) -> UpdateReport:
        """Index new and changed files under `folders` (hashing in worker processes, or on
        `engine`: dupwatch.index.hashing.engine) and forget the files gone from them; the
        folders are remembered (scanned())."""
        raws = [absolute(folder) for folder in folders]
        found = plan(self, raws)
        if engine is not None and found.to_hash:
            engine.check_visible(raws, found.to_hash)  # before anything is changed
        self.store.write(lambda txn: bookkeeping.add_scanned(self.store, txn, raws))
        return update(self, raws, workers=workers, progress=progress, engine=engine, found=found)

    def scanned(self) -> list[bytes]:
        """The folders update() was given: where a quarantine files what it moves."""
        with self.store.read() as txn:
            return bookkeeping.scanned(self.store, txn)

    # Files that could not be fingerprinted, and the watched folders (store/bookkeeping.py)

    def record_failures(self, failures: Iterable[tuple[bytes, os.stat_result, str]]) -> None:
        """Remember (path, stat, reason) of files that failed, so that an unchanged one is
        not read again by every scan or restart."""
        rows = [(absolute(path), st, reason) for path, st, reason in failures]
        if rows:
            self.store.write(lambda txn: bookkeeping.record_failures(self.store, txn, rows))

    def failures(self) -> list[Failure]:
        with self.store.read() as txn:
            return bookkeeping.failures(self.store, txn)

    def roots(self) -> list[bytes]:
        with self.store.read() as txn:
            return bookkeeping.roots(self.store, txn)

    def add_root(self, folder: str | bytes | os.PathLike) -> bytes:
        raw = absolute(folder)
        self.store.write(lambda txn: bookkeeping.add_root(self.store, txn, raw))
        return raw

    def remove_root(self, folder: str | bytes | os.PathLike) -> bool:
        raw = absolute(folder)
        return self.store.write(lambda txn: bookkeeping.remove_root(self.store, txn, raw))

    # Consistency

    def check(self) -> list[str]:
        """Problems found in the derived tables; empty when the index is consistent."""
        return check_index(self.store, self.hashes)

    def quick_check(self) -> list[str]:
        """The cheap half of check(), for the service's start (store/check.py)."""
        return quick_check(self.store, self.hashes)

    def repair(self) -> None:
        """Rebuild every derived table (by_path, by_hash, by_digest, the substring tables,
        the pairs) from the file records, in one transaction, without hashing any file."""

        def change(txn: lmdb.Transaction) -> None:
            rebuild_derived(self.store, self.hashes, txn)
            self.pairs.store_all(txn, self.pairs.radius(txn))

        try:
            self.store.write(change)
        finally:
            self.pairs.forget_judged()

    def reindex(
        self,
        *,
        workers: int | None = None,
        progress: Progress | None = None,
        engine: Engine | None = None,
    ) -> UpdateReport:
        """Hash every indexed file again (after a change of hash version or parameters).

        The files and the watched folders are kept; everything derived from the old hashes
        is dropped first.
        """
        paths = sorted({r.path for r in self.files()} | {f.path for f in self.failures()})
        if engine is not None and paths:
            folders = sorted({os.path.dirname(path) for path in paths})
            engine.check_visible(folders, paths)  # before anything is dropped
        dbs = self.store.dbs

        def clear(txn: lmdb.Transaction) -> None:
            for name in (b"files", b"by_path", b"by_hash", b"by_digest", b"pairs", b"failed"):
                txn.drop(dbs[name], delete=False)
            self.hashes.clear(txn=txn)
            self.store.set_hash_params(txn, HASH_PARAMS)
            self.pairs.set_transforms(txn, self.transforms)

        self.store.write(clear)
        report = UpdateReport(seen=len(paths))
        return rehash(self, paths, report, workers=workers, progress=progress, engine=engine)


def _fields(record: FileRecord) -> dict:
    return {name: getattr(record, name) for name in record.__slots__}


def _stat_error(path: bytes, error: OSError) -> FingerprintError:
    if isinstance(error, FileNotFoundError):
        return MissingFile(path, "no such file")
    return UnreadableFile(path, error.strerror or str(error))
