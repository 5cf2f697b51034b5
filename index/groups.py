"""Duplicate groups: pairs gathered around the copy to keep, chosen by a keeper policy."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dupwatch.index.folders import is_under
from dupwatch.index.matches import Match, best_first
from dupwatch.index.store.ignored import pair_key
from dupwatch.index.store.pairs import Pair
from dupwatch.index.store.records import FileRecord


@dataclass(frozen=True, slots=True)
class Group:
    keep: FileRecord
    # Every other copy, with its kind and distance to the keeper, and how it is the keeper
    # transformed when it was matched through --transforms.
    members: list[Match]


KEEP_POLICIES = ("largest", "newest", "oldest", "shortest")


def keeper_rank(record: FileRecord, keep: str = "largest", prefer: Sequence[bytes] = ()) -> tuple:
    """Sort key, best copy first.

    A file under one of the `prefer` folders (absolute bytes) comes first; then the
    `keep` policy: "largest" resolution, "newest" or "oldest" mtime, or "shortest"
    path; ties always fall back to largest resolution, largest file, oldest.
    """
    if keep not in KEEP_POLICIES:
        raise ValueError(f"keeper policy {keep!r} is not one of {', '.join(KEEP_POLICIES)}")
    preferred = 0 if any(is_under(record.path, folder) for folder in prefer) else 1
    policy = {
        "largest": (),
        "newest": (-record.mtime_ns,),
        "oldest": (record.mtime_ns,),
        "shortest": (len(record.path),),
    }[keep]
    return (preferred, *policy, -record.pixels, -record.size, record.mtime_ns, record.path)


def wanted_pairs(
    records: dict[int, FileRecord],
    pairs: dict[int, list[Pair]],
    ignored: set[bytes],
    pair_filter: Callable[[FileRecord, FileRecord], bool] | None = None,
) -> dict[int, list[Pair]]:
    """The pairs left once those marked "not a duplicate" (`ignored` keys, store/ignored.py)
    and those `pair_filter` rejects are taken out."""

    def wanted(a: FileRecord, b: FileRecord) -> bool:
        if pair_key(a.digest, b.digest) in ignored:
            return False
        return pair_filter is None or pair_filter(a, b)

    return {
        file_id: [p for p in partners if wanted(records[file_id], records[p.other])]
        for file_id, partners in pairs.items()
    }


def build_groups(
    records: dict[int, FileRecord],
    pairs: dict[int, list[Pair]],
    rank: Callable[[FileRecord], tuple] = keeper_rank,
) -> list[Group]:
    """Greedy groups around keepers: the best unassigned file takes its unassigned partners."""
    assigned: set[int] = set()
    groups = []
    for file_id in sorted(pairs, key=lambda i: rank(records[i])):
        if file_id in assigned:
            continue
        members = [
            Match(records[p.other], p.distance, p.kind, transform=p.seen_from(file_id).transform)
            for p in pairs[file_id]
            if p.other not in assigned and p.other in records
        ]
        if not members:
            continue
        assigned.add(file_id)
        assigned.update(m.record.id for m in members)
        groups.append(Group(records[file_id], sorted(members, key=best_first)))
    groups.sort(key=lambda g: (-len(g.members), rank(g.keep)))
    return groups
