"""Schema migrations: each step turns an index of schema N into schema N + 1, in place.

A step runs inside one write transaction with the schema number it produces, so an
interrupted migration leaves the index at the version it had.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import lmdb

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
# transform.
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


# schema N -> the step that makes schema N + 1, run in one write transaction with the tables.
MIGRATIONS: dict[int, Callable[[lmdb.Transaction, Tables], None]] = {
    1: _1_to_2,
    2: _2_to_3,
    3: _3_to_4,
}
