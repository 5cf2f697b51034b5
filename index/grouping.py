"""Gathering the stored pairs into duplicate groups around their keepers (groups.py), and
the pairs wanted and the copies derived from another before that.

The pairs are read as packed arrays (store/packed_pairs.py: 11 bytes an entry, no Python
object per pair), so a million files with millions of pairs group in seconds and a few GB
less; only the members of groups become objects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from dupwatch.index.groups import (
    LOSSLESS_FORMATS,
    ORIENTATION_TRANSFORMS,
    Group,
    Keeper,
    Member,
)
from dupwatch.index.store.packed_pairs import PackedPairs
from dupwatch.index.store.pairs import INVERSE_CODES, KIND_CODES, KINDS, TRANSFORM_CODES, Kind, Pair
from dupwatch.index.store.pairs import TRANSFORMS as TRANSFORM_NAMES
from dupwatch.index.store.records import FileRecord, pair_key


def _as_packed(
    records: Mapping[int, FileRecord | None], pairs: PackedPairs | Mapping[int, Sequence[Pair]]
) -> PackedPairs:
    """Pair lists by file id (a small table made by hand) as packed arrays; an entry naming
    a file not in `records` names none (-1), and is passed over as before."""
    if isinstance(pairs, PackedPairs):
        return pairs
    return PackedPairs.of(pairs, universe=records)


def wanted_pairs(
    records: Mapping[int, FileRecord],
    pairs: PackedPairs,
    ignored: set[bytes],
    pair_filter: Callable[[FileRecord, FileRecord], bool] | None = None,
) -> PackedPairs:
    """The pairs left once those marked "not a duplicate" (`ignored` keys, store/ignored.py)
    and those `pair_filter` rejects are taken out (an entry naming no listed file too).

    A pair is looked at in Python only when it could be ignored (its file has a digest an
    ignored key names) or when there is a filter."""
    wanted = pairs.other >= 0
    if not ignored and pair_filter is None:
        return pairs if wanted.all() else pairs.keep(wanted)
    ids = pairs.ids.tolist()
    owner = pairs.owner
    if pair_filter is not None:
        look = np.flatnonzero(wanted)
    else:
        named = {key[:16] for key in ignored} | {key[16:] for key in ignored}
        files = [i for i, file_id in enumerate(ids) if records[file_id].digest in named]
        look = np.flatnonzero(wanted & np.isin(owner, files))
    for entry, mine, theirs in zip(
        look.tolist(), owner[look].tolist(), pairs.other[look].tolist(), strict=True
    ):
        a, b = records[ids[mine]], records[ids[theirs]]
        if pair_key(a.digest, b.digest) in ignored or (
            pair_filter is not None and not pair_filter(a, b)
        ):
            wanted[entry] = False
    return pairs.keep(wanted)


_CROP = TRANSFORM_CODES["crop"]
_ORIENTATION_CODES = [TRANSFORM_CODES[name] for name in sorted(ORIENTATION_TRANSFORMS)]
_EXACT, _PIXEL, _NEAR = (KIND_CODES[kind] for kind in (Kind.EXACT, Kind.PIXEL, Kind.NEAR))


def derived_copies(
    records: Mapping[int, FileRecord], pairs: PackedPairs | Mapping[int, Sequence[Pair]]
) -> set[int]:
    """Files that are copies made from another file they pair with: the cut-down side of a
    crop, a lossless re-encode of a lossy file's pixels (or, in one format, the newer of
    two files with the same pixels), the turned or mirrored side of a turned pair (the one
    with fewer untransformed partners, or else the newer), and a picture inside borders or a
    screenshot's frame paired with the picture alone. One pass over the entries' arrays."""
    table = _as_packed(records, pairs)
    if not len(table.other):
        return set()
    files = [records.get(file_id) for file_id in table.ids.tolist()]
    known = np.array([r is not None for r in files], dtype=bool)
    mtime = np.array([r.mtime_ns if r else 0 for r in files], dtype=np.int64)
    lossless = np.array([bool(r) and r.format in LOSSLESS_FORMATS for r in files], dtype=bool)
    framed = np.array([bool(r) and r.framed for r in files], dtype=bool)
    # Only an entry with a transform, of a pixel copy or under a framed file can make its
    # file derived: the int64 work is on those (few), not on every entry (millions).
    counts = np.diff(table.start)
    transformed = table.transform != 0
    candidate = transformed | (table.kind == _PIXEL) | np.repeat(framed, counts)
    entries = np.flatnonzero(candidate & (table.other >= 0))
    me, other = _owners(table, entries), table.other[entries]
    known_both = known[me] & known[other]
    entries, me, other = entries[known_both], me[known_both], other[known_both]
    plain = counts - np.bincount(_owners(table, np.flatnonzero(transformed)), minlength=len(files))
    transform, kind = table.transform[entries], table.kind[entries]
    ids = table.ids
    # _age(me) < _age(other): the newer one (mtime, then the order they were indexed in)
    newer = (mtime[me] > mtime[other]) | ((mtime[me] == mtime[other]) & (ids[me] > ids[other]))
    turned = (plain[me] < plain[other]) | ((plain[me] == plain[other]) & newer)
    re_encoded = np.where(lossless[me] != lossless[other], lossless[me], newer)
    otherwise = ((kind == _PIXEL) & re_encoded) | (framed[me] & ~framed[other])
    orientation = np.isin(transform, _ORIENTATION_CODES)
    derived = (transform == _CROP) | np.where(orientation, turned, otherwise)
    return set(ids[np.unique(me[derived])].tolist())


def _owners(table: PackedPairs, entries: np.ndarray) -> np.ndarray:
    """The position of the file each of `entries` is stored under (PackedPairs.owner, for
    a few entries)."""
    return np.searchsorted(table.start, entries, side="right") - 1


def build_groups(
    records: Mapping[int, FileRecord],
    pairs: PackedPairs | Mapping[int, Sequence[Pair]],
    keeper: Keeper | None = None,
) -> list[Group]:
    """Greedy groups around keepers: the best unassigned file takes its unassigned partners.
    A turned or mirrored copy of a file already in a group joins that group, `via` that file,
    instead of leading the other turned copies in a group of their own (a match through a turn
    is confirmed on pixels: this cannot chain unrelated pictures). Then each file left out
    (all its partners taken already) joins the group of its closest partner, `via` it.
    Largest groups first. `pairs`: packed (PackedPairs) or Pair lists by file id."""
    keeper = keeper or Keeper()
    return _Grouping(records, _as_packed(records, pairs), keeper).build()


class _Grouping:
    """build_groups over the packed entries: files by their position in `table.ids`."""

    def __init__(
        self, records: Mapping[int, FileRecord], table: PackedPairs, keeper: Keeper
    ) -> None:
        self.table = table
        self.keeper = keeper
        self.files = [records[file_id] for file_id in table.ids.tolist()]
        self.group_of = np.full(len(table.ids), -1, dtype=np.int64)  # -1: in no group yet
        self.made: list[Group] = []
        self.turned = np.isin(table.transform, _ORIENTATION_CODES)

    def build(self) -> list[Group]:
        table, group_of = self.table, self.group_of
        for mine in sorted(range(len(self.files)), key=lambda i: self.keeper.rank(self.files[i])):
            if group_of[mine] >= 0:
                continue
            lo, hi = int(table.start[mine]), int(table.start[mine + 1])
            others = table.other[lo:hi]
            theirs = np.where(others >= 0, group_of[others], -1)
            turned = np.flatnonzero((theirs >= 0) & self.turned[lo:hi]) + lo
            if len(turned):
                self._join_via(mine, min(turned.tolist(), key=self._closest))
                continue
            partners = (np.flatnonzero((others >= 0) & (theirs < 0)) + lo).tolist()
            if not partners:
                continue
            group_of[mine] = len(self.made)
            group_of[table.other[partners]] = len(self.made)
            members = [self._member(entry) for entry in partners]
            why = self.keeper.why(self.files[mine], [m.record for m in members])
            self.made.append(Group(self.files[mine], members, why))
        self._attach_left_out()
        done = [self._with_same_as(group) for group in self.made]
        done.sort(key=lambda g: (-len(g.members), self.keeper.rank(g.keep)))
        return done

    def _member(self, entry: int) -> Member:
        """The other file of `entry`, as a member of its owner's group."""
        t = self.table
        kind = KINDS[int(t.kind[entry])]
        distance = 0 if kind != Kind.NEAR else int(t.distance[entry])  # same pixels: none
        transform = TRANSFORM_NAMES[INVERSE_CODES[int(t.transform[entry])]]  # seen from it
        return Member(self.files[int(t.other[entry])], distance, kind, transform)

    def _closest(self, entry: int) -> tuple:
        t = self.table
        return (int(t.distance[entry]), int(t.kind[entry]), int(t.ids[t.other[entry]]))

    def _attach_left_out(self) -> None:
        t, group_of = self.table, self.group_of
        counts = np.diff(t.start)
        left_out = np.flatnonzero((group_of < 0) & (counts > 0)).tolist()
        for mine in sorted(left_out, key=lambda i: self.files[i].path):
            lo, hi = int(t.start[mine]), int(t.start[mine + 1])
            others = t.other[lo:hi]
            known = (np.flatnonzero((others >= 0) & (group_of[others] >= 0)) + lo).tolist()
            if not known:
                continue
            best = min(known, key=lambda e: (
                int(t.distance[e]), int(t.kind[e]), self.files[int(t.other[e])].path))  # fmt: skip
            self._join_via(mine, best)

    def _join_via(self, mine: int, entry: int) -> None:
        """File `mine` joins the group of the other file of its `entry`, via it."""
        t = self.table
        other = int(t.other[entry])
        kind = KINDS[int(t.kind[entry])]
        distance = 0 if kind != Kind.NEAR else int(t.distance[entry])
        transform = TRANSFORM_NAMES[int(t.transform[entry])]
        member = Member(self.files[mine], distance, kind, transform, self.files[other])
        self.made[self.group_of[other]].members.append(member)
        self.group_of[mine] = self.group_of[other]

    def _with_same_as(self, group: Group) -> Group:
        """The group, its members in order (the keeper's own copies first, best first), each
        noting the earlier member it has the same bytes or pixels as."""
        t = self.table
        members = sorted(
            group.members,
            key=lambda m: (m.via is not None, m.distance, KIND_CODES[m.kind], m.record.path),
        )
        listed: dict[int, FileRecord] = {}  # position -> record
        out = []
        for member in members:
            mine = int(np.searchsorted(t.ids, member.record.id))
            if member.kind == Kind.NEAR or member.via is not None:
                same = [
                    e
                    for e in range(int(t.start[mine]), int(t.start[mine + 1]))
                    if int(t.other[e]) in listed and int(t.kind[e]) in (_EXACT, _PIXEL)
                ]
                if same:
                    best = min(same, key=lambda e: int(t.kind[e]))
                    member = dataclasses.replace(
                        member,
                        same_as=listed[int(t.other[best])],
                        same_kind=KINDS[int(t.kind[best])],
                    )
            listed[mine] = member.record
            out.append(member)
        return Group(group.keep, out, group.why)
