"""Dedupe into a quarantine folder, and undo it: moves that never lose a file.

Nothing is deleted. Every copy that is not its group's keeper is moved (with its
label sidecars); a move across devices copies, checks the copy's digest, then
removes the source. A manifest of JSON lines, written ahead of each move, lets
`undo` put everything back. Moved images leave the index (the quarantine is not
a watched folder); restored ones are indexed again. No threads or sockets here.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from dupwatch.index.cleanup.moves import QuarantineError, file_digest, move_file
from dupwatch.index.cleanup.sidecars import DEFAULT_SIDECARS, find_sidecars, stem_siblings
from dupwatch.index.errors import FingerprintError, StoreError
from dupwatch.index.folders import absolute, is_under

if TYPE_CHECKING:
    from dupwatch.index.groups import Group
    from dupwatch.index.index import Index
    from dupwatch.index.store import FileRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Move:
    """One file to move: an image that is not its group's keeper, or a sidecar of one."""

    source: bytes
    dest: bytes
    digest: bytes
    size: int
    group: int
    keep: bytes
    role: str = "image"  # or "sidecar"
    image: bytes = b""  # for a sidecar: the image it belongs to

    def to_json(self, time: str) -> dict:
        out = {
            "original": os.fsdecode(self.source),
            "new": os.fsdecode(self.dest),
            "digest": self.digest.hex(),
            "bytes": self.size,
            "group": self.group,
            "keep": os.fsdecode(self.keep),
            "role": self.role,
            "time": time,
        }
        if self.role == "sidecar":
            out["sidecar_of"] = os.fsdecode(self.image)
        return out

    @classmethod
    def from_json(cls, entry: dict) -> Move:
        return cls(
            source=os.fsencode(entry["original"]),
            dest=os.fsencode(entry["new"]),
            digest=bytes.fromhex(entry["digest"]),
            size=int(entry.get("bytes", 0)),
            group=int(entry["group"]),
            keep=os.fsencode(entry["keep"]),
            role=entry.get("role", "image"),
            image=os.fsencode(entry.get("sidecar_of", "")),
        )


@dataclass
class DedupePlan:
    quarantine: bytes
    moves: list[Move] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was left alone, and why
    keepers: dict[int, tuple[bytes, str]] = field(default_factory=dict)  # group -> keeper, why

    @property
    def images(self) -> list[Move]:
        return [m for m in self.moves if m.role == "image"]


@dataclass
class DedupeResult:
    manifest: bytes
    moved: list[Move]
    failed: list[str]


@dataclass
class UndoResult:
    restored: list[Move] = field(default_factory=list)
    already_back: int = 0
    refused: list[str] = field(default_factory=list)


# Planning


def plan_dedupe(
    groups: Sequence[Group],
    quarantine: str | bytes | os.PathLike,
    *,
    roots: Iterable[bytes] = (),
    sidecars: Sequence[str] = DEFAULT_SIDECARS,
) -> DedupePlan:
    """Every non-keeper copy of every group (and its sidecars), with where it would go.

    A file keeps its path relative to the root (watched or named folder) it lies under,
    below the quarantine folder named after that root; a file under no root keeps its
    whole absolute path there. A group whose keeper changed or vanished since it was
    indexed is left alone, so the last copy of a picture is never moved.
    Raises QuarantineError when the quarantine lies inside one of the roots.
    """
    target = absolute(quarantine)
    _check_can_make(target)
    roots = sorted({absolute(r) for r in roots}, key=len, reverse=True)
    for root in roots:
        if target == root or is_under(target, root):
            raise QuarantineError(
                f"{os.fsdecode(target)}: the quarantine lies inside {os.fsdecode(root)}, "
                "so the moved copies would be indexed again; choose a folder outside it"
            )
        if is_under(root, target):
            raise QuarantineError(
                f"{os.fsdecode(target)}: the quarantine holds {os.fsdecode(root)}, "
                "the folder the copies come from; choose a folder outside it"
            )
    plan = DedupePlan(target)
    taken: set[bytes] = set()
    for number, group in enumerate(groups, 1):
        if is_under(group.keep.path, target):
            plan.notes.append(
                f"{group.keep.fspath}: the copy to keep is in the quarantine; "
                f"group {number} left alone"
            )
            continue
        if not _is_current(group.keep):
            plan.notes.append(
                f"{group.keep.fspath}: the copy to keep changed or is gone since it was "
                f"indexed; group {number} left alone (run `dupwatch scan` again)"
            )
            continue
        plan.keepers[number] = (group.keep.path, group.why)
        for member in group.members:
            if member.via is not None:
                plan.notes.append(
                    f"{member.record.fspath}: a copy of {member.via.fspath}, not of the copy "
                    f"to keep; left in place"
                )
                continue
            _plan_member(plan, member.record, number, group.keep.path, roots, sidecars, taken)
    return plan


def _check_can_make(target: bytes) -> None:
    """Raise QuarantineError unless `target` is a folder, or one can be made there: checked
    before anything is planned or moved (a dry run too)."""
    existing = target
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    name, wanted = os.fsdecode(existing), os.fsdecode(target)
    if not os.path.isdir(existing):
        if existing == target:
            raise QuarantineError(f"{wanted}: not a folder; the quarantine must be one")
        raise QuarantineError(f"{wanted}: cannot be made: {name} is not a folder")
    if existing != target and not os.access(existing, os.W_OK | os.X_OK):
        raise QuarantineError(f"{wanted}: cannot be made: {name} is not writable")


def _plan_member(
    plan: DedupePlan,
    record: FileRecord,
    number: int,
    keep: bytes,
    roots: list[bytes],
    patterns: Sequence[str],
    taken: set[bytes],
) -> None:
    if is_under(record.path, plan.quarantine):
        plan.notes.append(f"{record.fspath}: already in the quarantine")
        return
    if not _is_current(record):
        plan.notes.append(f"{record.fspath}: changed or gone since it was indexed; left alone")
        return
    dest = _free_name(_dest(record.path, plan.quarantine, roots), taken)
    plan.moves.append(Move(record.path, dest, record.digest, record.size, number, keep))
    cars = find_sidecars(record.path, patterns)
    shared = stem_siblings(record.path)
    for car in cars:
        if shared:
            plan.notes.append(
                f"{os.fsdecode(car)}: also the label of {os.fsdecode(shared[0])}; left in place"
            )
            continue
        car_dest = _free_name(_dest(car, plan.quarantine, roots), taken)
        size = os.stat(car).st_size
        plan.moves.append(
            Move(car, car_dest, file_digest(car), size, number, keep, "sidecar", record.path)
        )


def _dest(path: bytes, quarantine: bytes, roots: list[bytes]) -> bytes:
    for root in roots:  # longest first: the innermost root wins
        if is_under(path, root):
            name = os.path.basename(root.rstrip(b"/")) or b"root"
            return os.path.join(quarantine, name, path[len(root.rstrip(b"/")) + 1 :])
    return os.path.join(quarantine, path.lstrip(b"/"))


def _free_name(dest: bytes, taken: set[bytes]) -> bytes:
    """`dest`, or name~N.ext when that is already used in the quarantine."""
    stem, ext = os.path.splitext(dest)
    candidate, n = dest, 1
    while candidate in taken or os.path.lexists(candidate):
        candidate = b"%s~%d%s" % (stem, n, ext)
        n += 1
    taken.add(candidate)
    return candidate


def _is_current(record: FileRecord) -> bool:
    try:
        st = os.stat(record.path, follow_symlinks=False)
    except OSError:
        return False
    return record.has_stat(st)


# Carrying it out


def dedupe(index: Index, plan: DedupePlan) -> DedupeResult:
    """Move what the plan says, writing the manifest ahead of each move; the moved
    images leave the index. A failed move is reported and the others go on.

    Raises StoreError, before moving anything, when the index is open read-only."""
    if index.store.readonly:
        raise StoreError(f"{index.path}: the index is read-only, and dedupe must update it")
    try:
        os.makedirs(plan.quarantine, exist_ok=True)
    except OSError as error:
        name = os.fsdecode(plan.quarantine)
        raise QuarantineError(f"{name}: cannot make the quarantine: {error.strerror}") from None
    manifest = _new_manifest(plan.quarantine)
    moved: list[Move] = []
    failed: list[str] = []
    not_moved: set[bytes] = set()
    with open(manifest, "x", encoding="ascii") as out:
        for move in plan.moves:
            if move.role == "sidecar" and move.image in not_moved:
                continue  # a label goes only where its image went
            out.write(json.dumps(move.to_json(_now())) + "\n")
            out.flush()
            os.fsync(out.fileno())
            try:
                move_file(move.source, move.dest, expected=move.digest)
            except (OSError, QuarantineError) as error:
                not_moved.add(move.source)
                failed.append(_reason(move.source, error))
                continue
            moved.append(move)
    index.remove_many(m.source for m in moved if m.role == "image")
    return DedupeResult(manifest, moved, failed)


def undo(manifest: str | bytes | os.PathLike, index: Index | None = None) -> UndoResult:
    """Put back what a manifest moved, file by file; refuse where the original path is
    taken again (the file stays in the quarantine) and go on with the others.

    A sidecar comes back only with its image. Restored images are indexed again.
    """
    moves = read_manifest(manifest)
    result = UndoResult()
    back: set[bytes] = set()
    for move in [m for m in moves if m.role == "image"] + [m for m in moves if m.role != "image"]:
        if move.role == "sidecar" and move.image not in back:
            result.refused.append(
                f"{os.fsdecode(move.dest)}: left in the quarantine with its image "
                f"({os.fsdecode(move.image)})"
            )
            continue
        outcome = _restore(move)
        if outcome is None:
            result.restored.append(move)
            back.add(move.source)
        elif outcome == "back":
            result.already_back += 1
            back.add(move.source)
        else:
            result.refused.append(outcome)
    if index is not None:
        _index_again(index, [m.source for m in result.restored if m.role == "image"])
    _prune_empty_folders(os.path.dirname(absolute(manifest)), [m.dest for m in result.restored])
    return result


def _restore(move: Move) -> str | None:
    """None when restored, "back" when already there, else why it was refused."""
    original, new = os.fsdecode(move.source), os.fsdecode(move.dest)
    if not os.path.lexists(move.dest):
        if os.path.lexists(move.source):
            return "back"  # undone before, or the move never happened
        return f"{new}: missing from the quarantine; {original} cannot be restored"
    if os.path.lexists(move.source):
        return f"{original}: the path is taken again; its old file stays at {new}"
    try:
        move_file(move.dest, move.source)
    except (OSError, QuarantineError) as error:
        return _reason(move.dest, error)
    return None


def read_manifest(manifest: str | bytes | os.PathLike) -> list[Move]:
    """The moves listed in a manifest. Raises QuarantineError naming the file and line."""
    name = os.fsdecode(manifest)
    try:
        with open(manifest, encoding="ascii") as lines:
            return [_parse_line(name, n, line) for n, line in enumerate(lines, 1) if line.strip()]
    except OSError as error:
        raise QuarantineError(f"{name}: cannot read the manifest: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise QuarantineError(f"{name}: not a dupwatch manifest ({error.reason})") from error


def _parse_line(name: str, number: int, line: str) -> Move:
    try:
        return Move.from_json(json.loads(line))
    except (ValueError, KeyError, TypeError) as error:
        raise QuarantineError(f"{name}: line {number} is not a manifest entry: {error}") from error


def _index_again(index: Index, paths: list[bytes]) -> None:
    for path in paths:
        try:
            index.add(path)
        except FingerprintError as error:
            log.warning("%s", error)


def _prune_empty_folders(quarantine: bytes, emptied: Iterable[bytes]) -> None:
    """Remove the folders of the quarantine that restoring left empty (never the quarantine)."""
    for path in sorted({os.path.dirname(p) for p in emptied}, key=len, reverse=True):
        while is_under(path, quarantine):
            try:
                os.rmdir(path)
            except OSError:
                break
            path = os.path.dirname(path)


def _new_manifest(quarantine: bytes) -> bytes:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S").encode()
    path, n = os.path.join(quarantine, b"manifest-%s.jsonl" % stamp), 2
    while os.path.lexists(path):
        path = os.path.join(quarantine, b"manifest-%s-%d.jsonl" % (stamp, n))
        n += 1
    return path


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _reason(path: bytes, error: Exception) -> str:
    if isinstance(error, QuarantineError):
        return f"{error}; {os.fsdecode(path)} not moved"
    return f"{os.fsdecode(path)}: not moved: {getattr(error, 'strerror', None) or error}"
