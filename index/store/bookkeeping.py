"""What an index remembers besides fingerprints: the watched folders (`roots`), the files
that could not be fingerprinted (`failed`, with their stat, so that an unchanged one is not
read again), both keyed by the hash of the path, and the folders `dupwatch scan` was given
(a list in `meta`)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

import lmdb

from dupwatch.index.store.environment import Store
from dupwatch.index.store.records import Failure, decode_failure, encode_failure, path_key


def record_failures(
    store: Store, txn: lmdb.Transaction, rows: Iterable[tuple[bytes, os.stat_result, str]]
) -> None:
    """Remember each (absolute path, stat, reason)."""
    for path, st, reason in rows:
        failure = Failure(path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, reason)
        txn.put(path_key(path), encode_failure(failure), db=store.dbs[b"failed"])


def failures(store: Store, txn: lmdb.Transaction) -> list[Failure]:
    return [decode_failure(raw) for _, raw in txn.cursor(db=store.dbs[b"failed"])]


def roots(store: Store, txn: lmdb.Transaction) -> list[bytes]:
    return sorted(bytes(v) for _, v in txn.cursor(db=store.dbs[b"roots"]))


def add_root(store: Store, txn: lmdb.Transaction, folder: bytes) -> None:
    txn.put(path_key(folder), folder, db=store.dbs[b"roots"])


def remove_root(store: Store, txn: lmdb.Transaction, folder: bytes) -> bool:
    return txn.delete(path_key(folder), db=store.dbs[b"roots"])


SCANNED = b"scanned_folders"  # meta key: a JSON list of folder names (os.fsdecode)


def scanned(store: Store, txn: lmdb.Transaction) -> list[bytes]:
    raw = store.get_meta(txn, SCANNED)
    return [] if raw is None else sorted(os.fsencode(name) for name in json.loads(raw))


def add_scanned(store: Store, txn: lmdb.Transaction, folders: Iterable[bytes]) -> None:
    names = {os.fsdecode(folder) for folder in [*scanned(store, txn), *folders]}
    # ensure_ascii: a name that is not UTF-8 keeps its bytes as surrogate escapes.
    store.put_meta(txn, SCANNED, json.dumps(sorted(names), ensure_ascii=True).encode())
