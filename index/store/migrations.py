"""Schema migrations: each step turns an index of schema N into schema N + 1, in place.

A step runs inside one write transaction with the schema number it produces, so an
interrupted migration leaves the index at the version it had. A step that deletes or makes
a table opens it by name in its transaction (a handle opened in a transaction that fails is
closed with it) and puts the handle it leaves in the tables it was given.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

import lmdb
import numpy as np

from dupwatch.index.store.substrings import SubstringIndex

Tables = dict[bytes, "lmdb._Database"]  # name -> table, as Store.dbs

# The pair radius schema 1 stored its pairs at without recording it (the default then).
SCHEMA_1_PAIR_RADIUS = 8


# File records, field by field (records.py has the current layout). Each step inserts the
# fields it adds into the bytes, so it does not depend on the layout of later schemas:
#   schema 1: dev, ino, size, mtime_ns, bits, digest, width, height, format length, format, path
#   schema 2: ... digest, pixel digest (16 bytes, zero until needed), width, ...
#   schema 3: ... bits, centre hash (8 bytes), centre known (1 byte), digest, ...
#   schema 4: ... format length, detail flags (1 byte), thumbnail (256), 7 turned hashes (56),
#             format, path
# Pairs (pairs.py) are the other file's id, the distance and the kind; schema 3 adds the
# transform; schema 5 packs them (LMDB dupfixed: every value 11 bytes).
_BITS_END = struct.calcsize("<QQQqQ")
_DIGEST_END = _BITS_END + 16
_FORMAT_LENGTH_END = struct.calcsize("<QQQqQQ?16s16sIIB")  # the schema 3 record's fixed part
_DETAIL_SIZE = struct.calcsize("<B256s7Q")


def _insert_into_records(txn: lmdb.Transaction, dbs: Tables, at: int, added: bytes) -> None:
    files = dbs[b"files"]
    old = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=files)]
    for key, raw in old:
        txn.put(key, raw[:at] + added + raw[at:], db=files)


def _1_to_2(txn: lmdb.Transaction, dbs: Tables) -> None:
    """Schema 2 keeps a digest of the decoded pixels in each file record (empty until a
    `pixel` comparison needs it), remembers files that failed (the `failed` table, made
    when the environment opens) and records the radius its pairs were stored at."""
    _insert_into_records(txn, dbs, _DIGEST_END, bytes(16))
    if txn.get(b"pair_radius", db=dbs[b"meta"]) is None:
        txn.put(b"pair_radius", str(SCHEMA_1_PAIR_RADIUS).encode(), db=dbs[b"meta"])


def _2_to_3(txn: lmdb.Transaction, dbs: Tables) -> None:
    """Schema 3 keeps the centre region's hash in each file record, and in each pair how it
    was transformed (one byte after the kind; 0 for none, all schema 2 knew how to store).
    Records of schema 2 have no centre (it needs the file read again): their index has hash
    version 2, which this dupwatch refuses until `dupwatch reindex` hashes every file again."""
    _insert_into_records(txn, dbs, _BITS_END, struct.pack("<Q?", 0, False))
    pairs = dbs[b"pairs"]
    old = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=pairs)]
    txn.drop(pairs, delete=False)
    for key, value in old:
        txn.put(key, value + b"\0", db=pairs)


def _3_to_4(txn: lmdb.Transaction, dbs: Tables) -> None:
    """Schema 4 keeps in each record what the pHash cannot see (low information, framed, a
    16x16 thumbnail) and the hashes of the picture turned. Records of schema 3 have none (the
    flags say so): their index has hash version 3, refused until `dupwatch reindex`."""
    _insert_into_records(txn, dbs, _FORMAT_LENGTH_END, bytes(_DETAIL_SIZE))


_PAIR_VALUE = 19  # schema 3 to 5: key (8 bytes) + other id, distance, kind, transform (11)
_COPY_CHUNK = 1 << 20  # pair entries copied at once


def _4_to_5(env: lmdb.Environment, txn: lmdb.Transaction, dbs: Tables) -> None:
    """Schema 5 searches hashes in substring tables (substrings.py) instead of a BK-tree:
    they are built from the records' hashes (at schema 1's offset, which no step moved) and
    the `tree` table is deleted. Its `pairs` table packs its values (LMDB dupfixed): the
    entries are copied into a table made so, in the same order."""
    files = env.open_db(b"files", txn=txn)
    bits = np.fromiter(
        (
            struct.unpack_from("<Q", raw, _BITS_END - 8)[0]
            for raw in txn.cursor(db=files).iternext(keys=False, values=True)
        ),
        dtype=np.uint64,
    )
    SubstringIndex(env, db=env.open_db(b"substrings", txn=txn)).rebuild(bits, txn=txn)
    try:
        txn.drop(env.open_db(b"tree", txn=txn, create=False), delete=True)
    except lmdb.NotFoundError:
        pass  # never made (an index made by this dupwatch, aged by a test)
    pairs = env.open_db(b"pairs", txn=txn, dupsort=True)
    if not pairs.flags(txn)["dupfixed"]:
        entries = _all_entries(txn, pairs)
        txn.drop(pairs, delete=True)
        pairs = env.open_db(b"pairs", txn=txn, dupsort=True, dupfixed=True)
        # Not append=True: py-lmdb before 3.0 appends with MDB_APPEND, which drops every
        # entry after a key's first in a dupsort table.
        txn.cursor(db=pairs).putmulti((row[:8], row[8:]) for row in map(bytes, entries))
    dbs[b"pairs"] = pairs


_SCHEMA_5_HEAD = struct.calcsize("<B8sQQQ")  # the substring tables' head before its token


def _5_to_6(txn: lmdb.Transaction, dbs: Tables) -> None:
    """Schema 6 gives the substring tables' base a token, new with each base written, so
    reads can hold a base between writes (substrings.py): the head gains 8 random bytes."""
    head = txn.get(b"head", db=dbs[b"substrings"])
    if head is not None and len(head) == _SCHEMA_5_HEAD:
        txn.put(b"head", bytes(head) + os.urandom(8), db=dbs[b"substrings"])


def _all_entries(txn: lmdb.Transaction, db: object) -> np.ndarray:
    """Every (key + value) of a table of 11-byte values, in its order, as one array."""
    out = np.empty(txn.stat(db)["entries"], dtype=f"V{_PAIR_VALUE}")
    cursor = txn.cursor(db=db)
    done = 0
    more = cursor.first()
    while more:
        chunk = []
        while more and len(chunk) < _COPY_CHUNK:
            chunk.append(cursor.key() + cursor.value())
            more = cursor.next()
        out[done : done + len(chunk)] = np.frombuffer(b"".join(chunk), dtype=out.dtype)
        done += len(chunk)
    return out


def _without_env(step: Callable[[lmdb.Transaction, Tables], None]) -> Step:
    return lambda env, txn, dbs: step(txn, dbs)


Step = Callable[[lmdb.Environment, lmdb.Transaction, Tables], None]
# schema N -> the step that makes schema N + 1, run in one write transaction with the
# environment and its tables.
MIGRATIONS: dict[int, Step] = {
    1: _without_env(_1_to_2),
    2: _without_env(_2_to_3),
    3: _without_env(_3_to_4),
    4: _4_to_5,
    5: _without_env(_5_to_6),
}
