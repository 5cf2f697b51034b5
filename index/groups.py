"""Duplicate groups: the stored pairs gathered around the copy to keep.

The keeper is chosen by a policy, but some rules come before any policy: a copy in a folder
the user prefers, then (policy "labelled") a copy that has a label file or lies in a split,
then the picture itself over a copy derived from it (a cut-down, turned or mirrored copy, or
a re-encode of the same pixels). Every file with a pair is in a group: a copy that matches
only another member (a chain, or a turned copy's own copies) is shown `via` that member.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dupwatch.index.folders import is_under
from dupwatch.index.matches import KIND_CODES
from dupwatch.index.store.pairs import Kind, Pair
from dupwatch.index.store.records import FileRecord, pair_key

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


def derived_copies(records: dict[int, FileRecord], pairs: dict[int, list[Pair]]) -> set[int]:
    """Files that are copies made from another file they pair with: the cut-down side of a
    crop, a lossless re-encode of a lossy file's pixels (or, in one format, the newer of
    two files with the same pixels), the turned or mirrored side of a turned pair (the one
    with fewer untransformed partners, or else the newer), and a picture inside borders or a
    screenshot's frame paired with the picture alone."""
    derived = set()
    for file_id, partners in pairs.items():
        me = records[file_id]
        plain = sum(1 for p in partners if p.transform is None)
        for pair in partners:
            other = records.get(pair.other)
            if other is None:
                continue
            if pair.transform == "crop":  # this file is a cut-down copy of the other
                derived.add(file_id)
            elif pair.transform in ORIENTATION_TRANSFORMS:
                their_plain = sum(1 for p in pairs.get(pair.other, ()) if p.transform is None)
                if (plain, _age(me)) < (their_plain, _age(other)):
                    derived.add(file_id)
            elif pair.kind == Kind.PIXEL and _re_encoded(me, other):
                derived.add(file_id)
            elif me.framed and not other.framed:  # a screenshot or framed copy of it
                derived.add(file_id)
    return derived


def _age(record: FileRecord) -> tuple[int, int]:
    """Older first: mtime, then the order files were indexed in."""
    return (-record.mtime_ns, -record.id)


def _re_encoded(me: FileRecord, other: FileRecord) -> bool:
    """With the same pixels as `other`, is `me` the copy made from it?"""
    mine_lossless = me.format in LOSSLESS_FORMATS
    if mine_lossless != (other.format in LOSSLESS_FORMATS):
        return mine_lossless  # lossless bytes of lossy pixels: re-encoded from the lossy file
    return _age(me) < _age(other)  # same family: the newer one


def build_groups(
    records: dict[int, FileRecord],
    pairs: dict[int, list[Pair]],
    keeper: Keeper | None = None,
) -> list[Group]:
    """Greedy groups around keepers: the best unassigned file takes its unassigned partners.
    A turned or mirrored copy of a file already in a group joins that group, `via` that file,
    instead of leading the other turned copies in a group of its own (a match through a turn
    is confirmed on pixels: this cannot chain unrelated pictures). Then each file left out
    (all its partners taken already) joins the group of its closest partner, `via` it.
    Largest groups first."""
    keeper = keeper or Keeper()
    assigned: dict[int, int] = {}  # file id -> index of its group
    groups: list[Group] = []
    for file_id in sorted(pairs, key=lambda i: keeper.rank(records[i])):
        if file_id in assigned:
            continue
        turned = [
            p
            for p in pairs[file_id]
            if p.other in assigned and p.transform in ORIENTATION_TRANSFORMS
        ]
        if turned:
            _join_via(records, file_id, min(turned, key=_closest), assigned, groups)
            continue
        partners = [p for p in pairs[file_id] if p.other not in assigned and p.other in records]
        if not partners:
            continue
        for member_id in (file_id, *(p.other for p in partners)):
            assigned[member_id] = len(groups)
        members = [_member(records, p, file_id) for p in partners]
        why = keeper.why(records[file_id], [m.record for m in members])
        groups.append(Group(records[file_id], members, why))
    _attach_left_out(records, pairs, assigned, groups)
    done = [_with_same_as(group, pairs) for group in groups]
    done.sort(key=lambda g: (-len(g.members), keeper.rank(g.keep)))
    return done


def _member(records: dict[int, FileRecord], pair: Pair, seen_from: int) -> Member:
    transform = pair.seen_from(seen_from).transform
    distance = 0 if pair.kind != Kind.NEAR else pair.distance  # same pixels: no distance
    return Member(records[pair.other], distance, pair.kind, transform)


def _attach_left_out(
    records: dict[int, FileRecord],
    pairs: dict[int, list[Pair]],
    assigned: dict[int, int],
    groups: list[Group],
) -> None:
    left_out = [i for i in pairs if i not in assigned and pairs[i]]
    for file_id in sorted(left_out, key=lambda i: records[i].path):
        known = [p for p in pairs[file_id] if p.other in assigned]
        if not known:
            continue
        best = min(known, key=lambda p: (p.distance, KIND_CODES[p.kind], records[p.other].path))
        _join_via(records, file_id, best, assigned, groups)


def _closest(pair: Pair) -> tuple:
    return (pair.distance, KIND_CODES[pair.kind], pair.other)


def _join_via(
    records: dict[int, FileRecord],
    file_id: int,
    pair: Pair,
    assigned: dict[int, int],
    groups: list[Group],
) -> None:
    """File `file_id` joins the group of `pair.other`, via it (`pair` as seen from the file)."""
    distance = 0 if pair.kind != Kind.NEAR else pair.distance
    member = Member(records[file_id], distance, pair.kind, pair.transform, records[pair.other])
    groups[assigned[pair.other]].members.append(member)
    assigned[file_id] = assigned[pair.other]


def _with_same_as(group: Group, pairs: dict[int, list[Pair]]) -> Group:
    """The group, its members in order (the keeper's own copies first, best first), each
    noting the earlier member it has the same bytes or pixels as."""
    members = sorted(
        group.members,
        key=lambda m: (m.via is not None, m.distance, KIND_CODES[m.kind], m.record.path),
    )
    listed: dict[int, FileRecord] = {}
    out = []
    for member in members:
        same = [
            p
            for p in pairs.get(member.record.id, ())
            if p.other in listed and p.kind in (Kind.EXACT, Kind.PIXEL)
        ]
        if same and (member.kind == Kind.NEAR or member.via is not None):
            best = min(same, key=lambda p: KIND_CODES[p.kind])
            member = dataclasses.replace(member, same_as=listed[best.other], same_kind=best.kind)
        listed[member.record.id] = member.record
        out.append(member)
    return Group(group.keep, out, group.why)
