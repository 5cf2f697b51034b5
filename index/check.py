"""Consistency check of an index, like `git fsck`: do the derived tables agree with the files?"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from dupwatch.index.store import from_u64, path_key, u64

if TYPE_CHECKING:
    from dupwatch.index.index import Index


def check_index(index: Index) -> list[str]:
    """Every problem found, as a sentence; an empty list means consistent."""
    store = index.store
    dbs = store.dbs
    problems: list[str] = []
    with store.read() as txn:
        records = {r.id: r for r in store.records(txn)}
        hashes = Counter(r.bits for r in records.values())

        def entries(table: bytes) -> list[tuple[bytes, int]]:
            return [(bytes(k), from_u64(bytes(v))) for k, v in txn.cursor(db=dbs[table])]

        expected = {
            b"by_path": {(path_key(r.path), r.id) for r in records.values()},
            b"by_hash": {(u64(r.bits), r.id) for r in records.values()},
            b"by_digest": {(r.digest, r.id) for r in records.values()},
        }
        for table, wanted in expected.items():
            stored = set(entries(table))
            for key, file_id in sorted(wanted - stored):
                problems.append(f"{table.decode()}: file {file_id} is missing ({key.hex()})")
            for key, file_id in sorted(stored - wanted):
                problems.append(f"{table.decode()}: entry {key.hex()} -> {file_id} has no file")

        tree_hashes = set(index.tree)
        for bits in sorted(set(hashes) - tree_hashes):
            problems.append(f"tree: hash {bits:016x} of an indexed file is missing")
        for bits in sorted(tree_hashes - set(hashes)):
            problems.append(f"tree: hash {bits:016x} has no file")
        if len(index.tree) != len(tree_hashes):
            problems.append(f"tree: header counts {len(index.tree)}, holds {len(tree_hashes)}")

        pairs = {
            (from_u64(bytes(k)), from_u64(bytes(v)[:8]), bytes(v)[8:])
            for k, v in txn.cursor(db=dbs[b"pairs"])
        }
        for a, b, code in sorted(pairs):
            if a not in records or b not in records:
                problems.append(f"pairs: {a} -> {b} names a file that is not indexed")
            if (b, a, code) not in pairs:
                problems.append(f"pairs: {a} -> {b} has no reverse entry")
        next_id = from_u64(store.get_meta(txn, b"next_id") or u64(1))
        if records and max(records) >= next_id:
            problems.append(f"meta: next file id {next_id} is not above every file id")
    return problems
