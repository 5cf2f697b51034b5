"""The Index: files, their fingerprints, the BK-tree and the duplicate pairs, in one LMDB.

Every change to one file is one write transaction (put_many groups several
files in one, each still whole). Reads open their own short transaction, so
readers in other threads or processes run beside the one writer.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import lmdb

from dupwatch.index.bktree import BKTree
from dupwatch.index.check import check_index
from dupwatch.index.crops import CropTable
from dupwatch.index.errors import FingerprintError, MissingFile, StoreError, UnreadableFile
from dupwatch.index.fingerprint import (
    HASH_PARAMS,
    Fingerprint,
    fingerprint,
    match_distance,
)
from dupwatch.index.folders import DEFAULT_IGNORE, absolute, is_under
from dupwatch.index.groups import KEEP_POLICIES, Group, build_groups, keeper_rank
from dupwatch.index.ignore import ignored_keys, is_ignored, pair_key
from dupwatch.index.pairs import Kind, Match, Pair, best_first
from dupwatch.index.pixels import PixelDigests
from dupwatch.index.store import (
    Failure,
    FileRecord,
    Store,
    decode_failure,
    encode_failure,
    encode_record,
    from_u64,
    path_key,
    u64,
)
from dupwatch.index.transformed import transformed_matches
from dupwatch.index.transforms import parse_transforms
from dupwatch.index.update import Plan, Progress, UpdateReport, plan, rehash, update

log = logging.getLogger(__name__)

# The match distance (fingerprint.match_distance: Hamming distances of 64-bit pHashes) at or
# below which two pictures count as the same, chosen on the accuracy benchmark
# (tests/bench/accuracy.py, README "Accuracy"): the best near-copy F1 with no false pair among
# distinct originals, on each of six seeds.
DEFAULT_RADIUS = 12
MAX_RADIUS = 32  # past this a 64-bit pHash matches unrelated pictures


@dataclass(frozen=True, slots=True)
class AddResult:
    record: FileRecord
    matches: list[Match]  # the other files it duplicates, best first
    hashed: bool = True


def default_index_path() -> str:
    """$DUPWATCH_INDEX, else $XDG_DATA_HOME/dupwatch, else ~/.local/share/dupwatch."""
    if os.environ.get("DUPWATCH_INDEX"):
        return os.environ["DUPWATCH_INDEX"]
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(data_home, "dupwatch")


def _check_radius(radius: int) -> int:
    if not 0 <= radius <= MAX_RADIUS:
        raise ValueError(f"radius {radius} is outside 0..{MAX_RADIUS}")
    return radius


class Index:
    """The one object the rest of dupwatch uses to store and find images."""

    def __init__(self, store: Store, radius: int, transforms: Iterable[str] = ()) -> None:
        self.store = store
        self.radius = _check_radius(radius)
        self.tree = BKTree(store.env, db=store.dbs[b"tree"])
        self.pixels = PixelDigests(store)
        # Which transformed copies new files and queries are also matched against.
        self.transforms = parse_transforms(transforms)
        self.crop_table = (
            CropTable(store.folder, readonly=store.readonly) if "crop" in self.transforms else None
        )
        if not store.readonly:
            with store.read() as txn:
                known = store.get_meta(txn, b"pair_radius") is not None
            if not known:
                store.write(lambda txn: store.put_meta(txn, b"pair_radius", b"%d" % self.radius))

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
        return record is not None and _same_stat(record, st)

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
        radius = _check_radius(self.radius if radius is None else radius)
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
            matches = self._matches(txn, bits, centre, fp, path, radius)
            if fp is None:
                return matches
            # A pair the user marked "not a duplicate" is never reported (index/ignore.py).
            return [
                m
                for m in matches
                if m.is_self or not is_ignored(self.store, txn, fp.digest, m.record.digest)
            ]

    def _matches(
        self,
        txn: lmdb.Transaction,
        bits: int,
        centre: int | None,
        fp: Fingerprint | None,
        path: bytes | None,
        radius: int,
        *,
        exclude: int | None = None,
        writable: bool = False,
    ) -> list[Match]:
        """Records within `radius` of the picture whose hashes are `bits` and `centre`
        (match_distance); the tree proposes them by `bits` alone, which is never farther.
        `writable`: `txn` is a write transaction, where pixel digests made on the way are
        kept in their records."""
        found = []
        for full, near_bits in self.tree.find(bits, radius, txn=txn):
            for file_id in self.store.ids(txn, b"by_hash", u64(near_bits)):
                if file_id == exclude:
                    continue
                record = self.store.record(txn, file_id)
                if record is None:
                    continue
                distance = match_distance(full, centre, record.centre)
                if distance > radius:
                    continue
                if path is not None and record.path == path:
                    found.append(Match(record, 0, Kind.EXACT, is_self=True))
                else:
                    kind = self._kind(txn, record, fp, path, full, writable)
                    found.append(Match(record, distance, kind))
        if fp is not None and self.transforms:
            seen = {m.record.id for m in found} | {exclude}
            found += self._transformed_matches(txn, fp, path, radius, seen)
        return sorted(found, key=best_first)

    def _kind(
        self,
        txn: lmdb.Transaction,
        record: FileRecord,
        fp: Fingerprint | None,
        path: bytes | None,
        full: int,
        writable: bool,
    ) -> Kind:
        """How an indexed record duplicates a fingerprint (of the file at `path`), whose
        whole-picture hashes are `full` apart."""
        if fp is None:
            return Kind.NEAR
        if record.digest == fp.digest:
            return Kind.EXACT
        if full == 0 and (record.width, record.height) == (fp.width, fp.height) and path:
            mine = self.pixels.of_file(path, fp.digest)
            if mine is not None and mine == self.pixels.of_record(txn, record, writable=writable):
                return Kind.PIXEL
        return Kind.NEAR

    def _pair_kind(self, txn: lmdb.Transaction, record: FileRecord, match: Match) -> Kind:
        """How two indexed records duplicate each other (for pairs stored again)."""
        other = match.record
        if record.digest == other.digest:
            return Kind.EXACT
        same_size = (record.width, record.height) == (other.width, other.height)
        if record.bits == other.bits and same_size:
            mine = self.pixels.of_record(txn, record, writable=True)
            if mine is not None and mine == self.pixels.of_record(txn, other, writable=True):
                return Kind.PIXEL
        return Kind.NEAR

    def _transformed_matches(
        self,
        txn: lmdb.Transaction,
        fp: Fingerprint,
        path: bytes | None,
        radius: int,
        seen: set[int | None],
    ) -> list[Match]:
        """Files that `fp` duplicates turned, mirrored or cropped (index/transformed.py)."""
        found = transformed_matches(self, txn, fp, path, radius, seen)
        return [Match(f.record, f.distance, Kind.NEAR, transform=f.transform) for f in found]

    # Writing: every call below runs in one write transaction.

    def add(self, path: str | bytes | os.PathLike) -> AddResult:
        """Index one file, hashing it only when its stat changed since it was indexed."""
        raw = absolute(path)
        try:
            st = os.stat(raw)
        except OSError as error:
            raise _stat_error(raw, error) from error
        record = self.get(raw)
        if record is not None and _same_stat(record, st):
            return AddResult(record, self._pairs_as_matches(record), hashed=False)
        return self.put(raw, fingerprint(raw), st)

    def put(
        self, path: str | bytes | os.PathLike, fp: Fingerprint, st: os.stat_result
    ) -> AddResult:
        return self.put_many([(path, fp, st)])[0]

    def put_many(
        self, items: Iterable[tuple[str | bytes | os.PathLike, Fingerprint, os.stat_result]]
    ) -> list[AddResult]:
        """Store fingerprints already computed, in one transaction; a known path is replaced."""
        items = [(absolute(path), fp, st) for path, fp, st in items]
        return self.store.write(lambda txn: [self._put(txn, *item) for item in items])

    def _put(
        self, txn: lmdb.Transaction, path: bytes, fp: Fingerprint, st: os.stat_result
    ) -> AddResult:
        old = self.store.find_path(txn, path)
        if old is not None:
            self._delete(txn, old)
        record = FileRecord(
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
        )
        # Pairs are kept at the index's pair radius; the caller sees matches at its own radius.
        pair_radius = self._pair_radius(txn)
        radius = max(self.radius, pair_radius)
        matches = self._matches(txn, fp.bits, fp.centre, fp, path, radius, writable=True)
        pixels = self.pixels.known(fp.digest)  # made if a same-size candidate needed it
        if pixels is not None:
            record = dataclasses.replace(record, pixel_digest=pixels)
        dbs = self.store.dbs
        key = u64(record.id)
        txn.put(key, encode_record(record), db=dbs[b"files"])
        txn.put(path_key(path), key, db=dbs[b"by_path"])
        txn.delete(path_key(path), db=dbs[b"failed"])
        txn.put(u64(record.bits), key, db=dbs[b"by_hash"])
        txn.put(record.digest, key, db=dbs[b"by_digest"])
        self.tree.add(record.bits, txn=txn)
        if self.crop_table is not None:
            self.crop_table.add(record.id, fp.crops)
        for match in matches:
            if match.distance <= pair_radius:
                pair = Pair(match.record.id, match.distance, match.kind, match.transform)
                self._put_pair(txn, record.id, pair)
        # A pair marked "not a duplicate" stays stored (so unignoring needs no rehash) but is
        # never returned, so the service's alerts skip it.
        shown = [
            m
            for m in matches
            if m.distance <= self.radius
            and not is_ignored(self.store, txn, fp.digest, m.record.digest)
        ]
        return AddResult(record, shown)

    def _put_pair(self, txn: lmdb.Transaction, file_id: int, pair: Pair) -> None:
        db = self.store.dbs[b"pairs"]
        txn.put(u64(file_id), pair.code(), db=db)
        txn.put(u64(pair.other), pair.seen_from(file_id).code(), db=db)

    def _pairs(self, txn: lmdb.Transaction, file_id: int) -> list[Pair]:
        cursor = txn.cursor(db=self.store.dbs[b"pairs"])
        if not cursor.set_key(u64(file_id)):
            return []
        return [Pair.decode(raw) for raw in map(bytes, cursor.iternext_dup())]

    def _pairs_as_matches(self, record: FileRecord) -> list[Match]:
        with self.store.read() as txn:
            matches = [
                Match(other, pair.distance, pair.kind, transform=pair.transform)
                for pair in self._pairs(txn, record.id)
                if (other := self.store.record(txn, pair.other)) is not None
            ]
        return sorted(matches, key=best_first)

    def _delete(self, txn: lmdb.Transaction, record: FileRecord) -> None:
        dbs = self.store.dbs
        key = u64(record.id)
        for pair in self._pairs(txn, record.id):
            txn.delete(u64(pair.other), pair.seen_from(record.id).code(), db=dbs[b"pairs"])
        txn.delete(key, db=dbs[b"pairs"])
        txn.delete(key, db=dbs[b"files"])
        txn.delete(path_key(record.path), key, db=dbs[b"by_path"])
        txn.delete(record.digest, key, db=dbs[b"by_digest"])
        hash_key = u64(record.bits)
        txn.delete(hash_key, key, db=dbs[b"by_hash"])
        if txn.get(hash_key, db=dbs[b"by_hash"]) is None:
            self.tree.remove(record.bits, txn=txn)

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
        keep: str = "largest",
        prefer: Sequence[str | bytes | os.PathLike] = (),
        pair_filter: Callable[[FileRecord, FileRecord], bool] | None = None,
    ) -> list[Group]:
        """Duplicate groups, each built around its keeper (the copy to keep).

        Every member is within `radius` of its keeper (or exact/pixel with it):
        groups do not chain, so A~B and B~C never put a distant A and C together.
        The keeper is chosen by keeper_rank(keep, prefer). Pairs marked "not a
        duplicate" (index/ignore.py) and pairs `pair_filter` rejects (it must be
        symmetric) are left out. Largest groups first.
        """
        preferred = [absolute(folder) for folder in prefer]
        if keep not in KEEP_POLICIES:
            raise ValueError(f"keeper policy {keep!r} is not one of {', '.join(KEEP_POLICIES)}")
        radius = _check_radius(self.radius if radius is None else radius)
        with self.store.read() as txn:
            pair_radius = self._pair_radius(txn)
        if radius > pair_radius:
            if self.store.readonly:
                raise StoreError(
                    f"{self.path}: pairs are stored up to radius {pair_radius}; "
                    f"radius {radius} needs a writable index to recompute them"
                )
            self.recompute_pairs(radius)
        with self.store.read() as txn:
            pairs: dict[int, list[Pair]] = {}
            for key, raw in txn.cursor(db=self.store.dbs[b"pairs"]):
                raw = bytes(raw)
                if raw[8] <= radius:
                    pairs.setdefault(from_u64(bytes(key)), []).append(Pair.decode(raw))
            records = {file_id: self.store.record(txn, file_id) for file_id in pairs}
            ignored = ignored_keys(self.store, txn)

        def wanted(a: FileRecord, b: FileRecord) -> bool:
            if pair_key(a.digest, b.digest) in ignored:
                return False
            return pair_filter is None or pair_filter(a, b)

        kept = {
            file_id: [p for p in partners if wanted(records[file_id], records[p.other])]
            for file_id, partners in pairs.items()
        }
        return build_groups(records, kept, lambda r: keeper_rank(r, keep, preferred))

    def _pair_radius(self, txn: lmdb.Transaction) -> int:
        """The radius up to which pairs are stored: the radius the index was made with,
        until recompute_pairs() changes it."""
        raw = self.store.get_meta(txn, b"pair_radius")
        return int(raw) if raw is not None else self.radius

    def recompute_pairs(self, radius: int) -> None:
        """Store the pairs of every file again, at a new radius."""
        radius = _check_radius(radius)
        self.store.write(lambda txn: self._store_pairs(txn, radius))

    def _store_pairs(self, txn: lmdb.Transaction, radius: int) -> None:
        """Find every plain pair again at `radius`. Pairs found through a transform were
        confirmed on the pixels of both files when one arrived; they are kept (those still
        within the radius) rather than read again."""
        db = self.store.dbs[b"pairs"]
        transformed = [
            (from_u64(bytes(key)), pair)
            for key, raw in txn.cursor(db=db)
            if (pair := Pair.decode(bytes(raw))).transform is not None
            and from_u64(bytes(key)) < pair.other
            and pair.distance <= radius
        ]
        txn.drop(db, delete=False)
        for record in list(self.store.records(txn)):
            matches = self._matches(
                txn, record.bits, record.centre, None, None, radius, exclude=record.id
            )
            for match in matches:
                if match.record.id > record.id:
                    kind = self._pair_kind(txn, record, match)
                    pair = Pair(match.record.id, match.distance, kind)
                    self._put_pair(txn, record.id, pair)
        for file_id, pair in transformed:
            if all(p.other != pair.other for p in self._pairs(txn, file_id)):
                self._put_pair(txn, file_id, pair)
        self.store.put_meta(txn, b"pair_radius", str(radius).encode())

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
    ) -> UpdateReport:
        """Index new and changed files under `folders` (hashing in worker processes) and
        forget the files gone from them."""
        return update(self, folders, workers=workers, progress=progress)

    # Files that could not be fingerprinted

    def record_failures(self, failures: Iterable[tuple[bytes, os.stat_result, str]]) -> None:
        """Remember (path, stat, reason) of files that failed, so that an unchanged one is
        not read again by every scan or restart."""
        rows = [
            Failure(absolute(p), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, reason)
            for p, st, reason in failures
        ]
        if not rows:
            return
        db = self.store.dbs[b"failed"]

        def change(txn: lmdb.Transaction) -> None:
            for row in rows:
                txn.put(path_key(row.path), encode_failure(row), db=db)

        self.store.write(change)

    def failures(self) -> list[Failure]:
        with self.store.read() as txn:
            return [decode_failure(raw) for _, raw in txn.cursor(db=self.store.dbs[b"failed"])]

    # Roots: the watched folders

    def roots(self) -> list[bytes]:
        with self.store.read() as txn:
            return sorted(bytes(v) for _, v in txn.cursor(db=self.store.dbs[b"roots"]))

    def add_root(self, folder: str | bytes | os.PathLike) -> bytes:
        raw = absolute(folder)
        self.store.write(lambda txn: txn.put(path_key(raw), raw, db=self.store.dbs[b"roots"]))
        return raw

    def remove_root(self, folder: str | bytes | os.PathLike) -> bool:
        raw = absolute(folder)
        return self.store.write(lambda txn: txn.delete(path_key(raw), db=self.store.dbs[b"roots"]))

    # Consistency

    def check(self) -> list[str]:
        """Problems found in the derived tables; empty when the index is consistent."""
        return check_index(self)

    def repair(self) -> None:
        """Rebuild every derived table (by_path, by_hash, by_digest, the tree, the pairs)
        from the file records, in one transaction, without hashing any file."""
        dbs = self.store.dbs

        def change(txn: lmdb.Transaction) -> None:
            for name in (b"by_path", b"by_hash", b"by_digest"):
                txn.drop(dbs[name], delete=False)
            self.tree.clear(txn=txn)
            records = list(self.store.records(txn))
            for record in records:
                key = u64(record.id)
                txn.put(path_key(record.path), key, db=dbs[b"by_path"])
                txn.put(u64(record.bits), key, db=dbs[b"by_hash"])
                txn.put(record.digest, key, db=dbs[b"by_digest"])
            self.tree.update((r.bits for r in records), txn=txn)
            highest = max((r.id for r in records), default=0)
            if from_u64(self.store.get_meta(txn, b"next_id") or u64(1)) <= highest:
                self.store.put_meta(txn, b"next_id", u64(highest + 1))
            self._store_pairs(txn, self._pair_radius(txn))

        self.store.write(change)

    def reindex(
        self, *, workers: int | None = None, progress: Progress | None = None
    ) -> UpdateReport:
        """Hash every indexed file again (after a change of hash version or parameters).

        The files and the watched folders are kept; everything derived from the old hashes
        is dropped first.
        """
        paths = sorted({r.path for r in self.files()} | {f.path for f in self.failures()})
        dbs = self.store.dbs

        def clear(txn: lmdb.Transaction) -> None:
            for name in (b"files", b"by_path", b"by_hash", b"by_digest", b"pairs", b"failed"):
                txn.drop(dbs[name], delete=False)
            self.tree.clear(txn=txn)
            self.store.set_hash_params(txn, HASH_PARAMS)

        self.store.write(clear)
        return rehash(self, paths, UpdateReport(seen=len(paths)), workers=workers,
                      progress=progress)  # fmt: skip


def _fields(record: FileRecord) -> dict:
    return {name: getattr(record, name) for name in record.__slots__}


def _same_stat(record: FileRecord, st: os.stat_result) -> bool:
    return (record.dev, record.ino, record.size, record.mtime_ns) == (
        st.st_dev,
        st.st_ino,
        st.st_size,
        st.st_mtime_ns,
    )


def _stat_error(path: bytes, error: OSError) -> FingerprintError:
    if isinstance(error, FileNotFoundError):
        return MissingFile(path, "no such file")
    return UnreadableFile(path, error.strerror or str(error))
