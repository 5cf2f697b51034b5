"""Consistency of an index, like `git fsck`: do the derived tables agree with the files? And
their rebuild from the file records (`dupwatch check --repair`)."""

from __future__ import annotations

import struct
from collections import Counter
from typing import TYPE_CHECKING

import numpy as np

from dupwatch.index.store.environment import Store
from dupwatch.index.store.pairs import Pair
from dupwatch.index.store.records import FileRecord, decode_record, from_u64, path_key, u64
from dupwatch.index.store.substrings import SubstringIndex

if TYPE_CHECKING:
    import lmdb


def check_index(store: Store, hashes: SubstringIndex) -> list[str]:
    """Every problem found, as a sentence; an empty list means consistent."""
    dbs = store.dbs
    problems: list[str] = []
    with store.read() as txn:
        records = {r.id: r for r in store.records(txn)}
        indexed = Counter(r.bits for r in records.values())

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

        searched = set(hashes.hashes(txn=txn).tolist())
        for bits in sorted(set(indexed) - searched):
            problems.append(f"substrings: hash {bits:016x} of an indexed file is missing")
        for bits in sorted(searched - set(indexed)):
            problems.append(f"substrings: hash {bits:016x} has no file")
        problems += hashes.problems(txn=txn)

        pairs = {
            (from_u64(bytes(k)), Pair.decode(bytes(v))) for k, v in txn.cursor(db=dbs[b"pairs"])
        }
        for a, pair in sorted(pairs, key=lambda entry: (entry[0], entry[1].other)):
            b = pair.other
            if a not in records or b not in records:
                problems.append(f"pairs: {a} -> {b} names a file that is not indexed")
            if (b, pair.seen_from(a)) not in pairs:
                problems.append(f"pairs: {a} -> {b} has no reverse entry")
        next_id = from_u64(store.get_meta(txn, b"next_id") or u64(1))
        if records and max(records) >= next_id:
            problems.append(f"meta: next file id {next_id} is not above every file id")
    return problems


def rebuild_derived(store: Store, hashes: SubstringIndex, txn: lmdb.Transaction) -> None:
    """Rebuild by_path, by_hash, by_digest and the substring tables from the file records,
    and move the next file id past every id (the pairs are the Index's to find again)."""
    dbs = store.dbs
    for name in (b"by_path", b"by_hash", b"by_digest"):
        txn.drop(dbs[name], delete=False)
    records = list(store.records(txn))
    for record in records:
        key = u64(record.id)
        txn.put(path_key(record.path), key, db=dbs[b"by_path"])
        txn.put(u64(record.bits), key, db=dbs[b"by_hash"])
        txn.put(record.digest, key, db=dbs[b"by_digest"])
    bits = np.fromiter((r.bits for r in records), dtype=np.uint64, count=len(records))
    hashes.rebuild(bits, txn=txn)
    highest = max((r.id for r in records), default=0)
    if from_u64(store.get_meta(txn, b"next_id") or u64(1)) <= highest:
        store.put_meta(txn, b"next_id", u64(highest + 1))


def quick_check(store: Store, hashes: SubstringIndex) -> list[str]:
    """The cheap half of check_index, for the service's start; [] when nothing is seen wrong.

    Compares the entry counts LMDB keeps for each table (files, by_path, by_hash, by_digest
    must agree), the substring tables' count with the distinct hashes of by_hash (a walk of
    that table's keys only, ~80 ms per million), the next file id with the last one, and the
    derived entries of the last file record. An entry that points at the wrong file is left to
    check_index, which reads every table.
    """
    dbs = store.dbs
    problems: list[str] = []
    with store.read() as txn:
        files = txn.stat(dbs[b"files"])["entries"]
        for table in (b"by_path", b"by_hash", b"by_digest"):
            entries = txn.stat(dbs[table])["entries"]
            if entries != files:
                problems.append(f"{table.decode()}: {entries} entries for {files} files")
        keys = txn.cursor(db=dbs[b"by_hash"]).iternext_nodup(keys=True, values=False)
        distinct = sum(1 for _ in keys)
        try:
            record = _last_record(txn, dbs[b"files"])
        except (struct.error, ValueError) as exc:
            problems.append(f"files: the last record cannot be read ({exc})")
            record = None
        next_id = from_u64(store.get_meta(txn, b"next_id") or u64(1))
        if record is not None:
            problems += _missing_entries(txn, dbs, record)
            if record.id >= next_id:
                problems.append(f"meta: next file id {next_id} is not above file id {record.id}")
    searched = len(hashes)
    if searched != distinct:
        problems.append(f"substrings: hold {searched} hashes, by_hash {distinct}")
    if record is not None and record.bits not in hashes:
        problems.append(f"substrings: hash {record.bits:016x} of file {record.id} is missing")
    return problems


def _last_record(txn: lmdb.Transaction, files: object) -> FileRecord | None:
    cursor = txn.cursor(db=files)
    if not cursor.last():
        return None
    return decode_record(from_u64(bytes(cursor.key())), bytes(cursor.value()))


def _missing_entries(txn: lmdb.Transaction, dbs: dict, record: FileRecord) -> list[str]:
    """The derived entries of `record` that are not there."""
    wanted = {
        b"by_path": path_key(record.path),
        b"by_hash": u64(record.bits),
        b"by_digest": record.digest,
    }
    value = u64(record.id)
    return [
        f"{table.decode()}: file {record.id} is missing ({key.hex()})"
        for table, key in wanted.items()
        if not txn.cursor(db=dbs[table]).set_key_dup(key, value)
    ]
