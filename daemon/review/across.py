"""The groups a review command shows (`scan`, `groups`, `report`, `dedupe`): those touching
some folders, or with --across only those between splits, and how many each pair of splits
shares."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

from dupwatch.daemon.splits import Splits, across_filter, split_of
from dupwatch.index.errors import DupwatchError
from dupwatch.index.folders import absolute, is_under
from dupwatch.index.groups import DEFAULT_KEEP, Group, Labelled
from dupwatch.index.index import Index


@dataclass(frozen=True, slots=True)
class PairCount:
    """How two splits share pictures: groups holding files of both, and those files."""

    a: str
    b: str
    groups: int
    files_a: int
    files_b: int

    def to_json(self) -> dict:
        return {
            "pair": [self.a, self.b],
            "groups": self.groups,
            "files": {self.a: self.files_a, self.b: self.files_b},
        }


def select_groups(
    index: Index,
    folders: Sequence[bytes] = (),
    *,
    across: Splits | None = None,
    radius: int | None = None,
    keep: str = DEFAULT_KEEP,
    prefer: Sequence[str | bytes | os.PathLike] = (),
    labelled: Labelled | None = None,
) -> list[Group]:
    """The groups a command shows: with `across`, only pairs between different splits
    (so every group spans two or more of them); else the groups touching `folders`
    (all groups when none are given)."""
    chosen = {"keep": keep, "prefer": prefer, "labelled": labelled}
    if across is not None:
        if len(across) < 2:
            raise DupwatchError("--across needs two or more folders (or splits in the config)")
        return index.groups(radius, pair_filter=across_filter(across), **chosen)
    groups = index.groups(radius, **chosen)
    if folders:
        groups = [g for g in groups if _touches(g, folders)]
    return groups


def pair_counts(groups: Iterable[Group], splits: Splits) -> list[PairCount]:
    """For every pair of splits, in the order given: the groups holding files of both."""
    per_group = [_split_sizes(group, splits) for group in groups]
    counts = []
    for a, b in combinations(list(splits), 2):
        shared = [sizes for sizes in per_group if a in sizes and b in sizes]
        counts.append(
            PairCount(a, b, len(shared), sum(s[a] for s in shared), sum(s[b] for s in shared))
        )
    return counts


def _split_sizes(group: Group, splits: Splits) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for record in (group.keep, *(m.record for m in group.members)):
        name = split_of(record.path, splits)
        if name is not None:
            sizes[name] = sizes.get(name, 0) + 1
    return sizes


def _touches(group: Group, folders: Sequence[bytes]) -> bool:
    records = [group.keep, *(m.record for m in group.members)]
    return any(is_under(r.path, absolute(f)) for r in records for f in folders)
