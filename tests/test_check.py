"""`dupwatch check` and `--repair`, `dupwatch reindex`, and schema migration, on real indexes
damaged or aged by hand through LMDB."""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

import lmdb
import pytest
from PIL import Image

from dupwatch.index import DEFAULT_RADIUS, BKTree, FileRecord, Index, IndexMismatch, StoreError
from dupwatch.index.fingerprint import HASH_PARAMS
from dupwatch.index.store import SCHEMA_VERSION, TABLES, from_u64, u64

from support import SKIMAGE_DATA, dupwatch


@pytest.fixture
def indexed(tmp_path: Path) -> tuple[Path, Path]:
    pics = tmp_path / "pics"
    pics.mkdir()
    for name in ("astronaut.png", "coffee.png", "chelsea.png"):
        img = Image.open(SKIMAGE_DATA / name).convert("RGB")
        img.save(pics / f"{Path(name).stem}.jpg")
        img.resize((200, 150)).save(pics / f"{Path(name).stem}_small.jpg")
    index = tmp_path / "index"
    with Index.open(index) as ix:
        ix.update([pics], workers=1)
    return pics, index


def raw_env(index: Path) -> tuple[lmdb.Environment, dict]:
    """The index's environment and its tables, those it has (an aged index lacks some)."""
    env = lmdb.open(str(index), max_dbs=len(TABLES) + 1)  # + the BK-tree of schema 4
    dbs = {}
    for name, dup in TABLES.items():
        try:
            dbs[name] = env.open_db(name, dupsort=dup, create=False)
        except lmdb.NotFoundError:
            pass
    return env, dbs


def age_to_schema_4(index: Path) -> list[tuple[bytes, bytes]]:
    """The tables as schema 4 kept them, with the records as they are: the distinct hashes in
    a BK-tree (the `tree` table), no substring tables, the pairs' values not packed (not
    LMDB dupfixed). Returns the pair entries."""
    env, dbs = raw_env(index)
    tree = BKTree(env, name=b"tree")  # makes its table in a transaction of its own
    with env.begin(write=True) as txn:
        by_hash = txn.cursor(db=dbs[b"by_hash"]).iternext(keys=True, values=False)
        tree.update(sorted({from_u64(bytes(key)) for key in by_hash}), txn=txn)
        txn.drop(dbs[b"substrings"], delete=True)
        pairs = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=dbs[b"pairs"])]
        txn.drop(dbs[b"pairs"], delete=True)
        table = env.open_db(b"pairs", txn=txn, dupsort=True)
        txn.cursor(db=table).putmulti(pairs)
        txn.put(b"schema", b"4", db=dbs[b"meta"])
    env.close()
    return pairs


def test_a_consistent_index_checks_clean(indexed: tuple[Path, Path]) -> None:
    _, index = indexed
    result = dupwatch("check", "--index", index, "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"ok": True, "files": 6, "problems": []}


def test_damage_is_found_and_repaired_without_hashing(indexed: tuple[Path, Path]) -> None:
    pics, index = indexed
    with Index.open(index) as ix:
        before = {g.keep.path: sorted(m.record.path for m in g.members) for g in ix.groups()}
        record = ix.get(pics / "coffee.jpg")
        ix.hashes.remove(record.bits)  # a hash of an indexed file missing from the search
    env, dbs = raw_env(index)
    with env.begin(write=True) as txn:
        txn.delete(u64(record.bits), u64(record.id), db=dbs[b"by_hash"])
        txn.put(b"\x01" * 16, u64(999), db=dbs[b"by_digest"])  # an entry with no file
        txn.drop(dbs[b"pairs"], delete=False)  # the pairs lost
    env.close()

    result = dupwatch("check", "--index", index)
    assert result.returncode == 1
    assert "substrings: hash" in result.stdout and "by_hash" in result.stdout
    assert "by_digest" in result.stdout

    repaired = dupwatch("check", "--repair", "--index", index)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "repaired:" in repaired.stderr
    with Index.open(index) as ix:
        assert ix.check() == []
        after = {g.keep.path: sorted(m.record.path for m in g.members) for g in ix.groups()}
        assert after == before
        assert ix.update([pics]).hashed == 0  # nothing was hashed again


def test_other_hash_parameters_need_a_reindex(indexed: tuple[Path, Path]) -> None:
    pics, index = indexed
    env, dbs = raw_env(index)
    with env.begin(write=True) as txn:  # as if an older dupwatch had hashed it differently
        txn.put(b"hash", b'{"algo": "phash", "version": 0}', db=dbs[b"meta"])
    env.close()
    with pytest.raises(IndexMismatch, match="dupwatch reindex"):
        Index.open(index)
    refused = dupwatch("groups", "--index", index)
    assert refused.returncode == 2 and "dupwatch reindex" in refused.stderr

    result = dupwatch("reindex", "--index", index)
    assert result.returncode == 0, result.stderr
    assert "6 images hashed again" in result.stderr
    with Index.open(index) as ix:
        assert len(ix) == 6 and ix.check() == []
        assert len(ix.groups()) == 3


def schema_1_record(record: FileRecord) -> bytes:
    """A file record as schema 1 wrote it: no pixel digest."""
    head = struct.pack(
        "<QQQqQ16sIIB",
        *(record.dev, record.ino, record.size, record.mtime_ns, record.bits, record.digest),
        *(record.width, record.height, len(record.format)),
    )
    return head + record.format.encode() + record.path


def build_schema_1(index: Path, pics: Path) -> list[FileRecord]:
    """The layout of schema 1: records without a pixel digest, pairs without a transform, no
    `failed` table and no recorded pair radius."""
    with Index.open(index) as ix:
        ix.update([pics], workers=1)
        records = list(ix.files())
    pairs = age_to_schema_4(index)
    env, dbs = raw_env(index)
    with env.begin(write=True) as txn:
        for record in records:
            txn.put(u64(record.id), schema_1_record(record), db=dbs[b"files"])
        txn.drop(dbs[b"pairs"], delete=False)
        for key, value in pairs:  # other file, distance, kind
            txn.put(key, value[:10], db=dbs[b"pairs"])
        txn.put(b"schema", b"1", db=dbs[b"meta"])
        txn.delete(b"pair_radius", db=dbs[b"meta"])
        txn.drop(dbs[b"failed"], delete=True)
    env.close()
    return records


def photo_and_small_copy(tmp_path: Path) -> tuple[Path, Path]:
    """A folder holding a photo and a small copy of it, and the place for an index."""
    pics = tmp_path / "pics"
    pics.mkdir()
    img = Image.open(SKIMAGE_DATA / "astronaut.png").convert("RGB")
    img.save(pics / "a.jpg")
    img.resize((100, 100)).save(pics / "b.jpg")
    return pics, tmp_path / "index"


def test_a_schema_1_index_is_migrated_when_opened(tmp_path: Path) -> None:
    pics, index = photo_and_small_copy(tmp_path)
    before = build_schema_1(index, pics)

    with pytest.raises(StoreError, match="needs upgrading"):
        Index.open(index, readonly=True)
    with Index.open(index) as ix:  # writable: migrates
        assert ix.check() == []
        # Every field read back through the new layout; a centre hash and the detail need the
        # file read again.
        assert list(ix.files()) == [without_detail(r, centre=None) for r in before]
        assert len(ix.groups()) == 1
    env, dbs = raw_env(index)
    with env.begin() as txn:
        assert int(txn.get(b"schema", db=dbs[b"meta"])) == SCHEMA_VERSION == 6
        # Migrated at schema 1's radius 8, then groups() at the default radius stored them again.
        assert txn.get(b"pair_radius", db=dbs[b"meta"]) == str(DEFAULT_RADIUS).encode()
    env.close()
    (pics / "broken.jpg").write_bytes(b"\xff\xd8\xff nothing more")
    with Index.open(index) as ix:
        ix.update([pics])
        assert [Path(f.path.decode()).name for f in ix.failures()] == ["broken.jpg"]


def without_detail(record: FileRecord, **changes: object) -> FileRecord:
    """The record as an index of schema 3 or before knows it: no detail (schema 4)."""
    return dataclasses.replace(
        record, low_information=False, thumbnail=b"", framed=False, orientations=(), **changes
    )


def schema_3_record(record: FileRecord) -> bytes:
    """A file record as schema 3 wrote it: no detail flags, thumbnail or turned hashes."""
    head = struct.pack(
        "<QQQqQQ?16s16sIIB",
        *(record.dev, record.ino, record.size, record.mtime_ns, record.bits),
        *(record.centre or 0, record.centre is not None, record.digest, record.pixel_digest),
        *(record.width, record.height, len(record.format)),
    )
    return head + record.format.encode() + record.path


def test_a_schema_3_index_is_migrated_and_then_needs_a_reindex(tmp_path: Path) -> None:
    """Schema 3 records have no detail (thumbnail, low information, turned hashes) and their
    index hash version 3: migrated in place, then refused until `dupwatch reindex`."""
    pics, index = photo_and_small_copy(tmp_path)
    with Index.open(index) as ix:
        ix.update([pics], workers=1)
        before = list(ix.files())
    assert all(r.thumbnail and len(r.orientations) == 7 for r in before)
    age_to_schema_4(index)
    env, dbs = raw_env(index)
    with env.begin(write=True) as txn:
        for record in before:
            txn.put(u64(record.id), schema_3_record(record), db=dbs[b"files"])
        txn.put(b"schema", b"3", db=dbs[b"meta"])
        params = {**HASH_PARAMS, "version": 3}
        txn.put(b"hash", json.dumps(params, sort_keys=True).encode(), db=dbs[b"meta"])
    env.close()
    with pytest.raises(IndexMismatch, match="dupwatch reindex"):
        Index.open(index)  # migrated to schema 4 and 5, then refused for its hashes
    with Index.open(index, check_params=False) as ix:
        assert list(ix.files()) == [without_detail(r) for r in before]
    assert dupwatch("reindex", "--index", index).returncode == 0
    with Index.open(index) as ix:
        assert ix.check() == [] and len(ix.groups()) == 1
        again = {r.path: (r.thumbnail, r.orientations) for r in ix.files()}
    assert again == {r.path: (r.thumbnail, r.orientations) for r in before}


def schema_2_record(record: FileRecord) -> bytes:
    """A file record as schema 2 wrote it: no centre hash."""
    head = struct.pack(
        "<QQQqQ16s16sIIB",
        *(record.dev, record.ino, record.size, record.mtime_ns, record.bits, record.digest),
        *(record.pixel_digest, record.width, record.height, len(record.format)),
    )
    return head + record.format.encode() + record.path


def test_a_schema_2_index_is_migrated_and_then_needs_a_reindex(tmp_path: Path) -> None:
    """Schema 2 records have no centre hash, and their index hash version 2: the layout is
    migrated when opened for writing, then the service and every command refuse the old
    hashes until `dupwatch reindex` has read every file again."""
    pics, index = photo_and_small_copy(tmp_path)
    with Index.open(index) as ix:
        ix.update([pics], workers=1)
        before = list(ix.files())
    age_to_schema_4(index)
    env, dbs = raw_env(index)
    with env.begin(write=True) as txn:
        for record in before:
            txn.put(u64(record.id), schema_2_record(record), db=dbs[b"files"])
        pairs = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=dbs[b"pairs"])]
        assert len(pairs) == 2  # a -> b and b -> a
        txn.drop(dbs[b"pairs"], delete=False)
        for key, value in pairs:  # schema 2: other file, distance, kind; no transform
            txn.put(key, value[:10], db=dbs[b"pairs"])
        txn.put(b"schema", b"2", db=dbs[b"meta"])
        params = {**HASH_PARAMS, "version": 2}
        del params["confirm"]
        txn.put(b"hash", json.dumps(params, sort_keys=True).encode(), db=dbs[b"meta"])
    env.close()

    with pytest.raises(StoreError, match="schema 2 and needs upgrading.*run `dupwatch reindex`"):
        Index.open(index, readonly=True)  # not "open it for writing": that alone is not enough
    with pytest.raises(IndexMismatch, match="dupwatch reindex"):
        Index.open(index)  # migrated to the current schema first, then refused for its hashes
    env, dbs = raw_env(index)
    with env.begin() as txn:
        assert txn.get(b"schema", db=dbs[b"meta"]) == str(SCHEMA_VERSION).encode()
        assert sorted(bytes(v) for _, v in txn.cursor(db=dbs[b"pairs"])) == sorted(
            v[:10] + b"\0" for _, v in pairs
        )
    env.close()
    result = dupwatch("scan", "--index", index, pics)
    assert result.returncode == 2 and "dupwatch reindex" in result.stderr
    result = dupwatch("reindex", "--index", index)
    assert result.returncode == 0, result.stderr
    with Index.open(index) as ix:
        assert ix.check() == []
        records = {Path(r.fspath).name: r for r in ix.files()}
        assert sorted(records) == ["a.jpg", "b.jpg"]
        assert all(r.centre is not None for r in records.values())
        assert len(ix.groups()) == 1


def test_a_newer_schema_is_refused(indexed: tuple[Path, Path]) -> None:
    _, index = indexed
    env, dbs = raw_env(index)
    with env.begin(write=True) as txn:
        txn.put(b"schema", b"99", db=dbs[b"meta"])
    env.close()
    with pytest.raises(IndexMismatch, match="newer than this dupwatch"):
        Index.open(index)


def test_a_schema_4_index_gets_substring_tables_when_opened(indexed: tuple[Path, Path]) -> None:
    """Schema 4 searched a BK-tree (the `tree` table) and kept the pairs' values unpacked:
    opened for writing, the substring tables are built from the records' hashes, the tree is
    deleted and the pairs are packed, each entry as it was."""
    pics, index = indexed
    with Index.open(index) as ix:
        groups = [(g.keep.path, [m.record.path for m in g.members]) for g in ix.groups()]
        hashes = sorted({r.bits for r in ix.files()})
    pairs = age_to_schema_4(index)
    assert len(pairs) == 6  # each photo and its small copy, both ways

    with pytest.raises(StoreError, match="schema 4 and needs upgrading"):
        Index.open(index, readonly=True)
    with Index.open(index) as ix:
        assert list(ix.hashes) == hashes
        record = ix.get(pics / "coffee.jpg")
        assert record.id in {m.record.id for m in ix.query(record.bits, radius=0)}
        assert ix.check() == [] and ix.quick_check() == []
        assert [(g.keep.path, [m.record.path for m in g.members]) for g in ix.groups()] == groups
    env = lmdb.open(str(index), max_dbs=len(TABLES) + 1)
    with env.begin() as txn:
        assert txn.get(b"schema", db=env.open_db(b"meta", txn=txn)) == b"6"
        table = env.open_db(b"pairs", txn=txn, create=False)
        assert table.flags(txn)["dupfixed"]
        assert sorted((bytes(k), bytes(v)) for k, v in txn.cursor(db=table)) == sorted(pairs)
    with pytest.raises(lmdb.NotFoundError):
        env.open_db(b"tree", create=False)
    env.close()
    assert dupwatch("check", "--index", index).returncode == 0


def test_repair_rebuilds_the_substring_tables(indexed: tuple[Path, Path]) -> None:
    """`check --repair` makes the substring tables again from the file records alone: lost
    whole, or holding a hash no file has, they are found out and rebuilt without hashing."""
    pics, index = indexed
    with Index.open(index) as ix:
        hashes = sorted({r.bits for r in ix.files()})
        ix.hashes.add(0x0123456789ABCDEF)  # no file has it
    result = dupwatch("check", "--index", index)
    assert (
        result.returncode == 1 and "substrings: hash 0123456789abcdef has no file" in result.stdout
    )
    env, dbs = raw_env(index)
    with env.begin(write=True) as txn:
        txn.drop(dbs[b"substrings"], delete=False)  # every hash lost
    env.close()
    result = dupwatch("check", "--index", index)
    assert result.returncode == 1
    assert result.stdout.count("substrings: hash") == len(hashes)

    repaired = dupwatch("check", "--repair", "--index", index)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    with Index.open(index) as ix:
        assert list(ix.hashes) == hashes
        assert ix.check() == [] and ix.quick_check() == []
        assert len(ix.groups()) == 3
        assert ix.update([pics]).hashed == 0


def test_a_schema_5_index_gets_a_token_for_its_base(indexed: tuple[Path, Path]) -> None:
    """Schema 5's substring head had no token: opened for writing, it gains one (with which
    reads hold the base between writes), the rest as it was."""
    pics, index = indexed
    env, dbs = raw_env(index)
    with env.begin(write=True) as txn:
        head = bytes(txn.get(b"head", db=dbs[b"substrings"]))
        txn.put(b"head", head[:33], db=dbs[b"substrings"])
        txn.put(b"schema", b"5", db=dbs[b"meta"])
    env.close()

    with Index.open(index) as ix:
        record = ix.get(pics / "coffee.jpg")
        assert record.id in {m.record.id for m in ix.query(record.bits, radius=0)}
        assert ix.check() == []
    env, dbs = raw_env(index)
    with env.begin() as txn:
        assert txn.get(b"schema", db=dbs[b"meta"]) == b"6"
        migrated = bytes(txn.get(b"head", db=dbs[b"substrings"]))
        assert migrated[:33] == head[:33] and len(migrated) == 41 and any(migrated[33:])
    env.close()
