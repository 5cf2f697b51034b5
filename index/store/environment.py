"""The LMDB environment of an index: its tables, transactions, schema and map growth.

Paths are stored as bytes (os.fsencode), so any file name round-trips, and are
never used as keys: LMDB keys are at most 511 bytes and Linux paths reach 4096.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import lmdb

from dupwatch.index.errors import IndexMismatch, StoreError
from dupwatch.index.store.migrations import MIGRATIONS
from dupwatch.index.store.records import (
    FileRecord,
    decode_record,
    encoded_thumbnail,
    from_u64,
    path_key,
    u64,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 6
INITIAL_MAP_SIZE = 1 << 30  # bytes; the map doubles whenever it fills
MAX_MAP_SIZE = 1 << 40

# name -> dupsort. Dup-sorted tables map one key to many 8-byte file ids.
TABLES = {
    b"meta": False,  # schema version, hash parameters, next file id, pair radius
    b"files": False,  # file id -> record
    b"by_path": True,  # blake2b(path)[:16] -> file id
    b"by_hash": True,  # perceptual hash -> file id
    b"by_digest": True,  # content digest -> file id
    b"pairs": True,  # file id -> other id, distance, kind, transform; both directions
    b"roots": False,  # blake2b(path)[:16] -> watched folder
    b"failed": False,  # blake2b(path)[:16] -> stat, reason and path of a file that failed
    b"substrings": False,  # distinct perceptual hashes, searchable by radius (substrings.py)
    b"ignored": False,  # sorted digest pair (32 bytes) -> JSON note: "not a duplicate"
}

# Dup-sorted tables whose values all have one size: LMDB packs them (no header per value) and
# reads them back many at a time (packed_pairs.py). Schema 5 made `pairs` one.
DUPFIXED = {b"pairs"}
# A migration may open a table that is no more (schema 4's `tree`).
MAX_DBS = len(TABLES) + 1

T = TypeVar("T")


class _Gate:
    """Transactions of this process, or one change of the map size, never both: resizing
    the map under an open transaction invalidates it (and a memory view into it).

    Read transactions also take turns (`reader_turn`): under the GIL readers side by side
    gain nothing, and two busy ones starve the writer, since py-lmdb gives the GIL up on
    every call and each call of the writer then waits a switch interval for it back (two
    threads querying back to back held a single put for seconds on 2 cores)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._open = 0
        self._resizing = False
        self.reader_turn = threading.RLock()  # re-entrant: a read may nest in a read

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._changed:
            while self._resizing:
                self._changed.wait()
            self._open += 1
        try:
            yield
        finally:
            with self._changed:
                self._open -= 1
                self._changed.notify_all()

    @contextmanager
    def alone(self) -> Iterator[None]:
        with self._changed:
            while self._resizing:
                self._changed.wait()
            self._resizing = True
            while self._open:
                self._changed.wait()
        try:
            yield
        finally:
            with self._changed:
                self._resizing = False
                self._changed.notify_all()


def _upgrade_advice(
    version: int, stored_params: bytes | None, hash_params: dict, check_params: bool
) -> str:
    """What to do with an index of an older schema that is open read-only."""
    advice = f"the index has schema {version} and needs upgrading to {SCHEMA_VERSION}; "
    wanted = json.dumps(hash_params, sort_keys=True).encode()
    if check_params and stored_params is not None and stored_params != wanted:
        # Migrating the layout alone would leave hashes this dupwatch refuses.
        return advice + "its hashes are of another version too: run `dupwatch reindex`"
    return advice + "open it once for writing (e.g. `dupwatch check`)"


class Store:
    """One LMDB environment with dupwatch's named tables."""

    def __init__(
        self,
        folder: str | os.PathLike,
        *,
        hash_params: dict,
        readonly: bool = False,
        map_size: int = INITIAL_MAP_SIZE,
        check_params: bool = True,
    ) -> None:
        """Open the index in `folder`; `check_params=False` lets `reindex` open an index
        made with other hash parameters."""
        self.folder = os.fspath(folder)
        self.readonly = readonly
        self._gate = _Gate()
        self._snapshot_holders: list[Callable[[], None]] = []
        try:
            if readonly:
                if not os.path.exists(os.path.join(self.folder, "data.mdb")):
                    raise StoreError(f"{self.folder}: no index here yet (run `dupwatch scan DIR`)")
                self.env = lmdb.open(self.folder, readonly=True, max_dbs=MAX_DBS)
            else:
                os.makedirs(self.folder, mode=0o700, exist_ok=True)
                self.env = lmdb.open(self.folder, map_size=map_size, max_dbs=MAX_DBS)
        except lmdb.Error as error:
            raise StoreError(f"{self.folder}: cannot open the index: {error}") from error
        except OSError as error:  # the folder cannot be made: a file in the way, no such parent
            reason = error.strerror or str(error)
            raise StoreError(f"{self.folder}: cannot make the index folder: {reason}") from None
        try:
            self.dbs = {
                name: self.env.open_db(
                    name, create=not readonly, dupsort=dupsort, dupfixed=name in DUPFIXED
                )
                for name, dupsort in TABLES.items()
            }
        except lmdb.Error as error:
            problem = self._missing_tables_reason(hash_params, check_params)
            self.env.close()
            raise StoreError(f"{self.folder}: {problem}: {error}") from error
        self._check_meta(hash_params, check_params)

    def close(self) -> None:
        self._release_snapshots()
        self.env.close()

    def hold_snapshots(self, release: Callable[[], None]) -> None:
        """Register a reader that keeps a read transaction open across calls (the substring
        tables' pin): `release` lets it go, and is called before every write (a held
        snapshot keeps the pages the write frees from reuse) and every map resize (which
        would leave its memory views pointing at the old map)."""
        self._snapshot_holders.append(release)

    def _release_snapshots(self) -> None:
        for release in self._snapshot_holders:
            release()

    def _missing_tables_reason(self, hash_params: dict, check_params: bool) -> str:
        """Why a read-only open found tables missing: an older schema, or no index."""
        try:
            meta = self.env.open_db(b"meta", create=False)
            with self.env.begin(db=meta) as txn:
                version = txn.get(b"schema")
                params = txn.get(b"hash")
        except lmdb.Error:
            version = params = None
        if version is not None and int(version) < SCHEMA_VERSION:
            return _upgrade_advice(int(version), params, hash_params, check_params)
        return "not a dupwatch index, or one still being created"

    def _check_meta(self, hash_params: dict, check_params: bool) -> None:
        wanted = json.dumps(hash_params, sort_keys=True).encode()
        with self.env.begin(db=self.dbs[b"meta"]) as txn:
            version = txn.get(b"schema")
            params = txn.get(b"hash")
        if version is None and not self.readonly:
            self.write(lambda txn: self._init_meta(txn, wanted))
            return
        if version is not None and int(version) > SCHEMA_VERSION:
            raise IndexMismatch(
                f"{self.folder}: the index has schema {int(version)}, newer than this dupwatch "
                f"understands ({SCHEMA_VERSION}); upgrade dupwatch"
            )
        if version is not None and int(version) < SCHEMA_VERSION:
            if self.readonly:
                advice = _upgrade_advice(int(version), params, hash_params, check_params)
                raise IndexMismatch(f"{self.folder}: {advice}")
            self._migrate(int(version))
        if params is not None and params != wanted and check_params:
            raise IndexMismatch(
                f"{self.folder}: the index was built with other hash parameters "
                f"({params.decode()}, this dupwatch uses {wanted.decode()}); "
                "choose another --index or rebuild it with `dupwatch reindex`"
            )

    def _migrate(self, version: int) -> None:
        for step in range(version, SCHEMA_VERSION):
            log.info("%s: migrating the index from schema %d to %d", self.folder, step, step + 1)

            def change(txn: lmdb.Transaction, step: int = step) -> None:
                MIGRATIONS[step](self.env, txn, self.dbs)
                self.put_meta(txn, b"schema", str(step + 1).encode())

            self.write(change)

    def set_hash_params(self, txn: lmdb.Transaction, hash_params: dict) -> None:
        self.put_meta(txn, b"hash", json.dumps(hash_params, sort_keys=True).encode())

    def _init_meta(self, txn: lmdb.Transaction, params: bytes) -> None:
        meta = self.dbs[b"meta"]
        txn.put(b"schema", str(SCHEMA_VERSION).encode(), db=meta)
        txn.put(b"hash", params, db=meta)
        txn.put(b"next_id", u64(1), db=meta)

    @contextmanager
    def read(self) -> Iterator[lmdb.Transaction]:
        """A short read transaction; memory views into the map are valid only inside it."""
        while True:
            with self._gate.reading(), self._gate.reader_turn:
                try:
                    txn = self.env.begin(buffers=True)
                except lmdb.MapResizedError:
                    txn = None  # another process grew the map: adopt it outside the gate
                if txn is not None:
                    with txn:
                        yield txn
                    return
            self._adopt_new_size()

    def write(self, change: Callable[[lmdb.Transaction], T]) -> T:
        """Run `change` in one write transaction, growing the map and retrying when full."""
        if self.readonly:
            raise StoreError(f"{self.folder}: the index is open read-only")
        self._release_snapshots()
        while True:
            try:
                with self._gate.reading(), self.env.begin(write=True) as txn:
                    return change(txn)
            except lmdb.MapFullError:
                self._grow()
            except lmdb.MapResizedError:
                self._adopt_new_size()  # another process grew it: map the new size, retry

    def used_bytes(self) -> int:
        """The bytes of the map up to its last page in use (free pages inside included)."""
        return (self.env.info()["last_pgno"] + 1) * self.env.stat()["psize"]

    def reserve(self, nbytes: int) -> None:
        """Grow the map now until `nbytes` fit past the pages in use: a long change that
        would fill it is then not run twice (write() grows the map and runs it again)."""
        while self.env.info()["map_size"] - self.used_bytes() < nbytes:
            self._grow("the index map is too small for a large write")

    def _grow(self, why: str = "the index map is full") -> None:
        size = self.env.info()["map_size"] * 2
        if size > MAX_MAP_SIZE:
            raise StoreError(f"{self.folder}: the index would outgrow {MAX_MAP_SIZE} bytes")
        log.info("%s: %s; growing it to %d MiB", self.folder, why, size >> 20)
        with self._gate.alone():
            self._release_snapshots()
            self.env.set_mapsize(size)

    def _adopt_new_size(self) -> None:
        with self._gate.alone():
            self._release_snapshots()
            self.env.set_mapsize(0)

    # Meta values

    def get_meta(self, txn: lmdb.Transaction, key: bytes) -> bytes | None:
        raw = txn.get(key, db=self.dbs[b"meta"])
        return None if raw is None else bytes(raw)

    def put_meta(self, txn: lmdb.Transaction, key: bytes, value: bytes) -> None:
        txn.put(key, value, db=self.dbs[b"meta"])

    def next_file_id(self, txn: lmdb.Transaction) -> int:
        file_id = from_u64(self.get_meta(txn, b"next_id") or u64(1))
        self.put_meta(txn, b"next_id", u64(file_id + 1))
        return file_id

    # Lookups used by every reader

    def record(
        self, txn: lmdb.Transaction, file_id: int, *, detail: bool = True
    ) -> FileRecord | None:
        """The file's record (decode_record: `detail=False` leaves out what only matching
        reads), None when there is none."""
        raw = txn.get(u64(file_id), db=self.dbs[b"files"])
        return None if raw is None else decode_record(file_id, raw, detail=detail)

    def thumbnail(self, txn: lmdb.Transaction, file_id: int) -> bytes:
        """The file's thumbnail (b"" when it has none or there is no such file), read without
        decoding the rest of its record."""
        raw = txn.get(u64(file_id), db=self.dbs[b"files"])
        return b"" if raw is None else encoded_thumbnail(raw)

    def ids(self, txn: lmdb.Transaction, table: bytes, key: bytes) -> list[int]:
        """Every file id stored under `key` in a dup-sorted table."""
        cursor = txn.cursor(db=self.dbs[table])
        if not cursor.set_key(key):
            return []
        return [from_u64(raw) for raw in cursor.iternext_dup()]

    def find_path(self, txn: lmdb.Transaction, path: bytes) -> FileRecord | None:
        for file_id in self.ids(txn, b"by_path", path_key(path)):
            record = self.record(txn, file_id)
            if record is not None and record.path == path:
                return record
        return None

    def records(self, txn: lmdb.Transaction) -> Iterator[FileRecord]:
        for key, raw in txn.cursor(db=self.dbs[b"files"]):
            yield decode_record(from_u64(key), raw)

    def raw_records(self, txn: lmdb.Transaction) -> tuple[int, Iterator[tuple[bytes, bytes]]]:
        """How many records there are, and each one's (key, encoded record) in id order,
        undecoded: for readers of every record into arrays."""
        files = self.dbs[b"files"]
        return txn.stat(files)["entries"], iter(txn.cursor(db=files))
