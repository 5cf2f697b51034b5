"""The table of pairs a person said are not duplicates, keyed by the two content digests
(index/ignore.py adds and removes them)."""

from __future__ import annotations

import lmdb

from dupwatch.index.store.environment import Store

TABLE = b"ignored"


def pair_key(digest_a: bytes, digest_b: bytes) -> bytes:
    """The table key of a pair, the same whichever way round it is given.

    >>> pair_key(b"b", b"a") == pair_key(b"a", b"b") == b"ab"
    True
    """
    return min(digest_a, digest_b) + max(digest_a, digest_b)


def is_ignored(store: Store, txn: lmdb.Transaction, digest_a: bytes, digest_b: bytes) -> bool:
    """True when the pictures with these digests were marked as not duplicates."""
    return txn.get(pair_key(digest_a, digest_b), db=store.dbs[TABLE]) is not None


def ignored_keys(store: Store, txn: lmdb.Transaction) -> set[bytes]:
    """Every ignored pair's key; groups() loads them once instead of a lookup per pair."""
    return {bytes(key) for key, _ in txn.cursor(db=store.dbs[TABLE])}
