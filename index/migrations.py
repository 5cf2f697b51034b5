"""Schema migrations: each step turns an index of schema N into schema N + 1, in place.

A step runs inside one write transaction with the schema number it produces, so an
interrupted migration leaves the index at the version it had.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

import lmdb

if TYPE_CHECKING:
    from dupwatch.index.store import FileRecord, Store

# The pair radius schema 1 stored its pairs at without recording it (the default then).
SCHEMA_1_PAIR_RADIUS = 8


# A schema 1 file record: dev, ino, size, mtime_ns, bits, digest, width, height, format length,
# then the format and the path.
_RECORD_1 = struct.Struct("<QQQqQ16sIIB")


def _record_1(file_id: int, raw: bytes) -> FileRecord:
    from dupwatch.index.store import FileRecord  # store imports this module

    dev, ino, size, mtime_ns, bits, digest, width, height, fmt_len = _RECORD_1.unpack_from(raw)
    fmt_end = _RECORD_1.size + fmt_len
    fmt = bytes(raw[_RECORD_1.size : fmt_end]).decode("ascii")
    path = bytes(raw[fmt_end:])
    return FileRecord(file_id, path, dev, ino, size, mtime_ns, bits, digest, width, height, fmt)


def _1_to_2(store: Store, txn: lmdb.Transaction) -> None:
    """Schema 2 keeps a digest of the decoded pixels in each file record (empty until a
    `pixel` comparison needs it), remembers files that failed (the `failed` table, made
    when the environment opens) and records the radius its pairs were stored at."""
    from dupwatch.index.store import encode_record, from_u64, u64

    files = store.dbs[b"files"]
    old = [(from_u64(bytes(k)), bytes(v)) for k, v in txn.cursor(db=files)]
    for file_id, raw in old:
        txn.put(u64(file_id), encode_record(_record_1(file_id, raw)), db=files)
    if store.get_meta(txn, b"pair_radius") is None:
        store.put_meta(txn, b"pair_radius", str(SCHEMA_1_PAIR_RADIUS).encode())


MIGRATIONS: dict[int, Callable[[Store, lmdb.Transaction], None]] = {1: _1_to_2}
