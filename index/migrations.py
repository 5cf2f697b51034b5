"""Schema migrations: each step turns an index of schema N into schema N + 1, in place.

A step runs inside one write transaction with the schema number it produces, so an
interrupted migration leaves the index at the version it had.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import lmdb

if TYPE_CHECKING:
    from dupwatch.index.store import Store

# The pair radius schema 1 stored its pairs at without recording it (the default then).
SCHEMA_1_PAIR_RADIUS = 8


def _1_to_2(store: Store, txn: lmdb.Transaction) -> None:
    """Schema 2 remembers files that failed (the `failed` table, made empty when the
    environment is opened) and records the radius its pairs were stored at."""
    if store.get_meta(txn, b"pair_radius") is None:
        store.put_meta(txn, b"pair_radius", str(SCHEMA_1_PAIR_RADIUS).encode())


MIGRATIONS: dict[int, Callable[[Store, lmdb.Transaction], None]] = {1: _1_to_2}
