"""Duplicate groups: what a group is, and the copy to keep.

The keeper is chosen by a policy, but some rules come before any policy: a copy in a folder
the user prefers, then (policy "labelled") a copy that has a label file or lies in a split,
then the picture itself over a copy derived from it (a cut-down, turned or mirrored copy, or
a re-encode of the same pixels). Every file with a pair is in a group: a copy that matches
only another member (a chain, or a turned copy's own copies) is shown `via` that member.
Gathering the stored pairs into groups is grouping.py's; this module loads no numpy or LMDB,
for the command line's start.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dupwatch.index.folders import is_under
from dupwatch.index.store.pairs import Kind
from dupwatch.index.store.records import FileRecord

KEEP_POLICIES = ("labelled", "largest", "newest", "oldest", "shortest")
DEFAULT_KEEP = "labelled"

# Formats that keep every pixel: a copy in one of them with the same pixels as a copy in a
# lossy format is a re-encode of it (lossless bytes cannot come first and lose nothing).
LOSSLESS_FORMATS = frozenset({"PNG", "BMP", "DIB", "TIFF", "GIF", "PPM", "TGA", "QOI", "ICO"})
ORIENTATION_TRANSFORMS = frozenset(
    {"rot90", "rot180", "rot270", "flip_lr", "flip_tb", "transpose", "transverse"}
)

Labelled = Callable[[FileRecord], bool]


@dataclass(frozen=True, slots=True)
class Member:
    """A copy in a group: its kind and distance to the keeper (or, when `via` is set, to
    that other member, the only one it matches), how it is that file transformed, and the
    member it is an exact or pixel copy of, if any (`same_as`)."""

    record: FileRecord
    distance: int
    kind: Kind
    transform: str | None = None
    via: FileRecord | None = None
    same_as: FileRecord | None = None
    same_kind: Kind | None = None  # exact (same bytes) or pixel (same pixels) as `same_as`

    is_self = False  # as in a Match: a group never lists a file as its own copy


@dataclass(frozen=True, slots=True)
class Group:
    keep: FileRecord
    members: list[Member]
    why: str = ""  # why this copy is the one to keep, in a few words


class Keeper:
    """Ranks the copies of a picture, best first, and says why the best one won."""

    def __init__(
        self,
        keep: str = DEFAULT_KEEP,
        prefer: Sequence[bytes] = (),
        labelled: Labelled | None = None,
        derived: frozenset[int] = frozenset(),
    ) -> None:
        if keep not in KEEP_POLICIES:
            raise ValueError(f"keeper policy {keep!r} is not one of {', '.join(KEEP_POLICIES)}")
        self.keep = keep
        self.prefer = prefer
        self.labelled = labelled
        self.derived = derived

    def criteria(self, record: FileRecord) -> list[tuple[str, object]]:
        """(what it says of the keeper, value: lower is better), most important first."""
        found = []
        if self.prefer:
            preferred = any(is_under(record.path, folder) for folder in self.prefer)
            found.append(("in a preferred folder", not preferred))
        if self.keep == "labelled" and self.labelled is not None:
            found.append(("labelled (a label file, or in a split)", not self.labelled(record)))
        found.append(("the picture itself, not a copy made from it", record.id in self.derived))
        found += {
            "labelled": [],
            "largest": [],
            "newest": [("the newest", -record.mtime_ns)],
            "oldest": [("the oldest", record.mtime_ns)],
            "shortest": [("the shortest path", len(record.path))],
        }[self.keep]
        found += [
            ("the largest resolution", -record.pixels),
            ("the largest file", -record.size),
            ("the oldest", record.mtime_ns),
            ("first by name", record.path),
        ]
        return found

    def rank(self, record: FileRecord) -> tuple:
        return tuple(value for _name, value in self.criteria(record))

    def why(self, keeper: FileRecord, others: Sequence[FileRecord]) -> str:
        """The first criterion on which the keeper beats the best of the others."""
        if not others:
            return ""
        runner_up = min(others, key=self.rank)
        for (name, mine), (_, theirs) in zip(
            self.criteria(keeper), self.criteria(runner_up), strict=True
        ):
            if mine != theirs:
                return name
        return "identical copies: any would do"


def keeper_rank(
    record: FileRecord, keep: str = DEFAULT_KEEP, prefer: Sequence[bytes] = ()
) -> tuple:
    """Sort key, best copy first, by the policy and preferred folders alone."""
    return Keeper(keep, prefer).rank(record)
