"""The table of pairs a person said are not duplicates, keyed by the two content digests
(index/ignore.py adds and removes them)."""

from __future__ import annotations

import lmdb

from dupwatch.index.store.environment import Store
from dupwatch.index.store.records import pair_key

TABLE = b"ignored"


def is_ignored(store: Store, txn: lmdb.Transaction, digest_a: bytes, digest_b: bytes) -> bool:
    """True when the pictures with these digests were marked as not duplicates."""
    return txn.get(pair_key(digest_a, digest_b), db=store.dbs[TABLE]) is not None


def ignored_keys(store: Store, txn: lmdb.Transaction) -> set[bytes]:
    """Every ignored pair's key; groups() loads them once instead of a lookup per pair."""
    return {bytes(key) for key, _ in txn.cursor(db=store.dbs[TABLE])}
