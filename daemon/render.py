"""How results look: the JSON shapes of DESIGN.md and the plain-text lines."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: the command line starts without LMDB
    from dupwatch.index.groups import Group, Member
    from dupwatch.index.store.records import FileRecord

FORMATS = ("text", "json", "csv", "imagededup")  # of groups: --format


def group_to_json(group: Group) -> dict:
    """{"keep": PATH, "why": TEXT, "files": [...]}; the keeper comes first in "files", as
    kind "keep"."""
    keep = _file_json(group.keep, "keep", 0)
    members = [_member_json(m) for m in group.members]
    return {"keep": group.keep.fspath, "why": group.why, "files": [keep, *members]}


def _member_json(member: Member) -> dict:
    out = _file_json(member.record, str(member.kind), member.distance, member.transform)
    if member.via is not None:
        out["via"] = member.via.fspath  # a copy of this member, not of the keeper
    if member.same_as is not None:
        out["same_as"] = member.same_as.fspath  # the same bytes or pixels as this member
        out["same_kind"] = str(member.same_kind)
    return out


def _file_json(record: FileRecord, kind: str, distance: int, transform: str | None = None) -> dict:
    out = {
        "path": record.fspath,
        "kind": kind,
        "distance": distance,
        "width": record.width,
        "height": record.height,
        "bytes": record.size,
    }
    if transform:
        out["transform"] = transform  # how this file is the keeper transformed
    return out


def show_query(image: str | bytes, matches: list[dict[str, Any]], *, as_json: bool) -> bool:
    """Print the answer to a query of `image` (matches as JSON: Match.to_json(), or the
    service's answer); True when it names files other than the image itself."""
    if as_json:
        print(dumps({"query": os.fsdecode(image), "matches": matches}))
    elif matches:
        print(f"{printable(image)}:")
        print("\n".join(match_line(m) for m in matches))
    else:
        print(f"{printable(image)}: no duplicates in the index")
    return any(not m.get("self") for m in matches)


def dumps(value: object) -> str:
    # ensure_ascii keeps names that are not UTF-8 (surrogate escapes) printable and round-trippable.
    return json.dumps(value, ensure_ascii=True)


def printable(path: str | bytes) -> str:
    """A path for a terminal: undecodable bytes shown as \\xNN instead of failing to print."""
    raw = os.fsencode(path)
    return raw.decode("utf-8", "backslashreplace")


def human_size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError


def group_lines(group: Group) -> list[str]:
    keep = group.keep
    why = f"; {group.why}" if group.why else ""
    lines = [
        f"keep   {printable(keep.path)}  ({keep.width}x{keep.height}, {human_size(keep.size)}{why})"
    ]
    for m in group.members:
        r = m.record
        notes = [f"{r.width}x{r.height}", human_size(r.size)]
        notes += [m.transform] if m.transform else []
        notes += [f"via {printable(m.via.path)}"] if m.via is not None else []
        if m.same_as is not None:
            notes.append(f"same {'bytes' if m.same_kind == 'exact' else 'pixels'} as "
                         f"{printable(m.same_as.path)}")  # fmt: skip
        lines.append(f"  {m.kind:<5} {m.distance:>2}  {printable(r.path)}  ({', '.join(notes)})")
    return lines


def match_line(match: dict[str, Any]) -> str:
    """One match (as JSON) for a terminal."""
    how = match.get("transform")
    suffix = "  (itself)" if match.get("self") else f"  ({how})" if how else ""
    return f"  {match['kind']:<5} {match['distance']:>2}  {printable(match['path'])}{suffix}"
