"""Folders as splits (train/val/test): groups across them, pair counts, and leaks at arrival.

`split_leaks` is pure: the service calls it on each new file's matches and adds what
it returns to the alert. `select_groups` is what scan/groups/report/dedupe show.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from dupwatch.index import DupwatchError, FileRecord, Group, Index, Match
from dupwatch.index.folders import absolute, is_under

log = logging.getLogger(__name__)

Splits = Mapping[str, bytes]  # split name -> absolute folder (bytes)


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


def as_splits(folders: Mapping[str, str | bytes | os.PathLike]) -> dict[str, bytes]:
    """Split names to absolute bytes folders (for a config table of name = folder)."""
    return {name: absolute(folder) for name, folder in folders.items()}


def named_folders(folders: Sequence[str | bytes | os.PathLike]) -> dict[str, bytes]:
    """Folders given on the command line as splits, each named by its last component
    (the whole path when two share a name)."""
    raws = [absolute(folder) for folder in folders]
    names = [os.fsdecode(os.path.basename(raw.rstrip(b"/"))) or "/" for raw in raws]
    clash = {n for n in names if names.count(n) > 1}
    pairs = zip(names, raws, strict=True)
    return {(os.fsdecode(raw) if n in clash else n): raw for n, raw in pairs}


def across_splits(
    across: bool,
    folders: Sequence[str | bytes | os.PathLike],
    config_splits: Mapping[str, str | bytes | os.PathLike] | None = None,
) -> dict[str, bytes] | None:
    """The splits an --across command compares: the folders it names, else the config's
    splits; None without --across."""
    if not across:
        return None
    return named_folders(folders) if folders else as_splits(config_splits or {})


def split_of(path: bytes, splits: Splits) -> str | None:
    """The split `path` lies in (the innermost one when splits nest), or None."""
    best: tuple[int, str] | None = None
    for name, folder in splits.items():
        if is_under(path, folder) and (best is None or len(folder) > best[0]):
            best = (len(folder), name)
    return None if best is None else best[1]


def across_filter(splits: Splits) -> Callable[[FileRecord, FileRecord], bool]:
    """A pair filter for Index.groups: both files in splits, and not in the same one."""

    def crosses(a: FileRecord, b: FileRecord) -> bool:
        split_a, split_b = split_of(a.path, splits), split_of(b.path, splits)
        return split_a is not None and split_b is not None and split_a != split_b

    return crosses


def select_groups(
    index: Index,
    folders: Sequence[bytes] = (),
    *,
    across: Splits | None = None,
    radius: int | None = None,
    keep: str = "largest",
    prefer: Sequence[str | bytes | os.PathLike] = (),
) -> list[Group]:
    """The groups a command shows: with `across`, only pairs between different splits
    (so every group spans two or more of them); else the groups touching `folders`
    (all groups when none are given)."""
    if across is not None:
        if len(across) < 2:
            raise DupwatchError("--across needs two or more folders (or splits in the config)")
        return index.groups(radius, keep=keep, prefer=prefer, pair_filter=across_filter(across))
    groups = index.groups(radius, keep=keep, prefer=prefer)
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


def split_leaks(
    config_splits: Mapping[str, str | bytes | os.PathLike],
    path: str | bytes | os.PathLike,
    matches: Iterable[Match | Mapping[str, Any]],
) -> list[str]:
    """Messages for the matches of a new file that lie in another split than the file.

    "leak: val/x.jpg duplicates train/y.jpg". Empty when no splits are configured, the
    file is in no split, or every match is in its own split or in none. `matches` are
    Match objects or their JSON form (dicts with "path").
    """
    if not config_splits:
        return []
    splits = as_splits(config_splits)
    raw = absolute(path)
    here = split_of(raw, splits)
    if here is None:
        return []
    leaks = []
    for match in matches:
        other = absolute(match["path"] if isinstance(match, Mapping) else match.record.path)
        there = split_of(other, splits)
        if there is not None and there != here and other != raw:
            leaks.append(
                f"leak: {_in_split(raw, here, splits)} duplicates {_in_split(other, there, splits)}"
            )
    return leaks


def check_splits(file: Path | str, value: object) -> dict[str, Path]:
    """A config `[splits]` table (name = "folder") as absolute Paths, relative to the
    config file's folder. Raises DupwatchError naming the file and the key."""
    if not isinstance(value, dict):
        raise DupwatchError(f'{file}: splits must be a table of name = "folder"')
    out = {}
    for name, folder in value.items():
        if not isinstance(folder, str) or not folder:
            raise DupwatchError(f"{file}: splits.{name} must be a folder name (a string)")
        out[name] = (Path(file).parent / os.path.expanduser(folder)).absolute()
    return out


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


def _in_split(path: bytes, name: str, splits: Splits) -> str:
    relative = path[len(splits[name].rstrip(b"/")) + 1 :]
    return f"{name}/{relative.decode('utf-8', 'backslashreplace')}"
