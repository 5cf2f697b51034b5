"""How results look: the JSON shapes of DESIGN.md, the plain-text lines, a progress bar."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: the command line starts without LMDB
    from dupwatch.index import FileRecord, Group

FORMATS = ("text", "json", "csv", "imagededup")  # of groups: --format


def group_to_json(group: Group) -> dict:
    """{"keep": PATH, "files": [...]}; the keeper comes first in "files", as kind "keep"."""
    keep = _file_json(group.keep, "keep", 0)
    members = [_file_json(m.record, str(m.kind), m.distance, m.transform) for m in group.members]
    return {"keep": group.keep.fspath, "files": [keep, *members]}


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
    lines = [
        f"keep   {printable(keep.path)}  ({keep.width}x{keep.height}, {human_size(keep.size)})"
    ]
    for m in group.members:
        r = m.record
        how = f", {m.transform}" if m.transform else ""
        lines.append(
            f"  {m.kind:<5} {m.distance:>2}  {printable(r.path)}  "
            f"({r.width}x{r.height}, {human_size(r.size)}{how})"
        )
    return lines


def match_line(match: dict[str, Any]) -> str:
    """One match (as JSON) for a terminal."""
    how = match.get("transform")
    suffix = "  (itself)" if match.get("self") else f"  ({how})" if how else ""
    return f"  {match['kind']:<5} {match['distance']:>2}  {printable(match['path'])}{suffix}"


class ProgressBar:
    """A one-line progress bar on a terminal's stderr. When stderr is not a terminal it is
    silent, or with `plain` prints a line now and then ("thumbnails 120/500") for a log."""

    def __init__(self, label: str, stream: IO[str] = sys.stderr, *, plain: bool = False) -> None:
        self.label = label
        self.stream = stream
        self.tty = stream.isatty()
        self.enabled = self.tty or plain
        self.every_s = 0.1 if self.tty else 2.0
        self.started = time.monotonic()
        self.last_draw = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last_draw < self.every_s and done < total):
            return
        self.last_draw = now
        rate = done / max(now - self.started, 1e-9)
        if not self.tty:
            self.stream.write(f"dupwatch: {self.label} {done}/{total} {rate:.0f}/s\n")
            self.stream.flush()
            return
        width = 30
        filled = width * done // max(total, 1)
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {done}/{total} {rate:.0f}/s")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty and self.last_draw:
            self.stream.write("\n")
            self.stream.flush()
