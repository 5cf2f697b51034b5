"""The "not a duplicate" list: pairs of pictures a person said are distinct.

Keyed by the two content digests, not by path, so a pair stays ignored after a
rename or a move. Ignored pairs are never grouped (Index.groups) and never
returned as matches of a newly stored file (Index.put), so no alert names them.
No threads or sockets here.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING

import lmdb

from dupwatch.index.errors import DupwatchError, MissingFile, NotIndexed
from dupwatch.index.folders import absolute
from dupwatch.index.store.environment import Store
from dupwatch.index.store.ignored import TABLE
from dupwatch.index.store.records import FileRecord, pair_key

if TYPE_CHECKING:
    from dupwatch.index.index import Index

log = logging.getLogger(__name__)


class SamePicture(DupwatchError):
    """Two paths asked to be told apart have the same bytes: they are one picture."""


@dataclass(frozen=True, slots=True)
class IgnoredPair:
    """One remembered pair: its digests, the paths it was recorded with, and where the
    pictures are now (empty when no indexed file has that digest any more)."""

    digests: tuple[bytes, bytes]
    noted_paths: tuple[str, str]
    time: str
    current: tuple[list[str], list[str]]

    def to_json(self) -> dict:
        return {
            "digests": [d.hex() for d in self.digests],
            "paths": list(self.noted_paths),
            "now": [list(paths) for paths in self.current],
            "time": self.time,
        }


def ignore(index: Index, paths: Sequence[str | bytes | os.PathLike]) -> list[tuple[str, str]]:
    """Remember every pair among `paths` (indexed files) as distinct pictures.

    Returns the pairs newly recorded, as printable paths. Raises NotIndexed for a path
    the index does not hold and SamePicture for two paths with the same bytes.
    """
    records = _indexed(index, paths)
    pairs = list(combinations(records, 2))
    for a, b in pairs:
        if a.digest == b.digest:
            raise SamePicture(
                f"{a.fspath} and {b.fspath} have the same bytes: they are one picture"
            )
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")

    def change(txn: lmdb.Transaction) -> list[tuple[str, str]]:
        added = []
        for a, b in pairs:
            note = json.dumps({"paths": [a.fspath, b.fspath], "time": now}).encode()
            key = pair_key(a.digest, b.digest)
            if txn.put(key, note, db=index.store.dbs[TABLE], overwrite=False):
                added.append((a.fspath, b.fspath))
        return added

    return index.store.write(change)


def group_paths(
    index: Index, path: str | bytes | os.PathLike, radius: int | None = None
) -> list[bytes]:
    """Every file of the duplicate group that holds `path` (keeper first), for the
    group-level form of ignore. Raises DupwatchError when it is in no group."""
    raw = absolute(path)
    if index.get(raw) is None:
        _check_exists(raw)
    for group in index.groups(radius):
        paths = [group.keep.path, *(m.record.path for m in group.members)]
        if raw in paths:
            return paths
    raise DupwatchError(f"{os.fsdecode(raw)}: in no duplicate group")


def unignore(index: Index, paths: Sequence[str | bytes | os.PathLike]) -> int:
    """Forget the ignored pairs among `paths`; returns how many were forgotten."""
    records = _indexed(index, paths)
    keys = {pair_key(a.digest, b.digest) for a, b in combinations(records, 2)}
    db = index.store.dbs[TABLE]
    return index.store.write(lambda txn: sum(txn.delete(key, db=db) for key in keys))


def listed(index: Index) -> list[IgnoredPair]:
    """Every ignored pair, with the paths that carry its digests today."""
    store = index.store
    with store.read() as txn:
        rows = [
            (bytes(key), json.loads(bytes(raw))) for key, raw in txn.cursor(db=store.dbs[TABLE])
        ]
        out = []
        for key, note in rows:
            a, b = key[: len(key) // 2], key[len(key) // 2 :]
            current = (_paths_with(store, txn, a), _paths_with(store, txn, b))
            out.append(IgnoredPair((a, b), tuple(note["paths"]), note["time"], current))
    return out


def _paths_with(store: Store, txn: lmdb.Transaction, digest: bytes) -> list[str]:
    records = (store.record(txn, i) for i in store.ids(txn, b"by_digest", digest))
    return sorted(r.fspath for r in records if r is not None)


def _check_exists(path: str | bytes | os.PathLike) -> None:
    """A name that is not on the disk is a typo or a moved file, not a file to index."""
    if not os.path.lexists(path):
        raise MissingFile(path, "no such file")


def _indexed(index: Index, paths: Iterable[str | bytes | os.PathLike]) -> list[FileRecord]:
    records = []
    for path in paths:
        record = index.get(path)
        if record is None:
            _check_exists(absolute(path))
            raise NotIndexed(
                f"{os.fsdecode(absolute(path))}: not indexed (run `dupwatch scan` first)"
            )
        records.append(record)
    if len(records) < 2:
        raise DupwatchError("name at least two indexed images")
    return records
