"""Folders as splits (train/val/test): which split a file lies in, and leaks at arrival.

Pure functions of paths: the service calls `split_leaks` on each new file's matches and adds
what it returns to the alert; review/across.py picks the groups across splits.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dupwatch.index.errors import DupwatchError
from dupwatch.index.folders import absolute, is_under

if TYPE_CHECKING:
    from dupwatch.index.matches import Match
    from dupwatch.index.store.records import FileRecord

log = logging.getLogger(__name__)

Splits = Mapping[str, bytes]  # split name -> absolute folder (bytes)


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


def _in_split(path: bytes, name: str, splits: Splits) -> str:
    relative = path[len(splits[name].rstrip(b"/")) + 1 :]
    return f"{name}/{relative.decode('utf-8', 'backslashreplace')}"
