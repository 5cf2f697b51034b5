"""Groups built from packed pair arrays are the groups the Pair lists gave: the keeper, why,
every member with its kind, distance, transform, `via` and `same_as`, and the derived copies,
on random pair graphs (turned, cropped, pixel and exact pairs, ties of age and size, files
ignored or filtered out). The reference is the algorithm over Pair lists as it was before
the pairs were read as arrays (index/groups.py at 75c8d04), kept here as the oracle."""

from __future__ import annotations

import dataclasses
import random

import lmdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dupwatch.index.grouping import build_groups, derived_copies, wanted_pairs
from dupwatch.index.groups import (
    KEEP_POLICIES,
    LOSSLESS_FORMATS,
    ORIENTATION_TRANSFORMS,
    Group,
    Keeper,
    Member,
)
from dupwatch.index.store import packed_pairs
from dupwatch.index.store.packed_pairs import PackedPairs, read_within
from dupwatch.index.store.pairs import KIND_CODES, Kind, Pair
from dupwatch.index.store.records import FileRecord, pair_key, u64

# --- the reference: Pair lists by file id --------------------------------------------------


def reference_wanted(records, pairs, ignored, pair_filter=None):
    def wanted(a, b):
        if pair_key(a.digest, b.digest) in ignored:
            return False
        return pair_filter is None or pair_filter(a, b)

    return {
        file_id: [p for p in partners if wanted(records[file_id], records[p.other])]
        for file_id, partners in pairs.items()
    }


def _age(record):
    return (-record.mtime_ns, -record.id)


def _re_encoded(me, other):
    mine_lossless = me.format in LOSSLESS_FORMATS
    if mine_lossless != (other.format in LOSSLESS_FORMATS):
        return mine_lossless
    return _age(me) < _age(other)


def reference_derived(records, pairs):
    derived = set()
    for file_id, partners in pairs.items():
        me = records[file_id]
        plain = sum(1 for p in partners if p.transform is None)
        for pair in partners:
            other = records.get(pair.other)
            if other is None:
                continue
            if pair.transform == "crop":
                derived.add(file_id)
            elif pair.transform in ORIENTATION_TRANSFORMS:
                their_plain = sum(1 for p in pairs.get(pair.other, ()) if p.transform is None)
                if (plain, _age(me)) < (their_plain, _age(other)):
                    derived.add(file_id)
            elif pair.kind == Kind.PIXEL and _re_encoded(me, other):
                derived.add(file_id)
            elif me.framed and not other.framed:
                derived.add(file_id)
    return derived


def reference_groups(records, pairs, keeper):
    assigned: dict[int, int] = {}
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
    left_out = [i for i in pairs if i not in assigned and pairs[i]]
    for file_id in sorted(left_out, key=lambda i: records[i].path):
        known = [p for p in pairs[file_id] if p.other in assigned]
        if not known:
            continue
        best = min(known, key=lambda p: (p.distance, KIND_CODES[p.kind], records[p.other].path))
        _join_via(records, file_id, best, assigned, groups)
    done = [_with_same_as(group, pairs) for group in groups]
    done.sort(key=lambda g: (-len(g.members), keeper.rank(g.keep)))
    return done


def _member(records, pair, seen_from):
    transform = pair.seen_from(seen_from).transform
    distance = 0 if pair.kind != Kind.NEAR else pair.distance
    return Member(records[pair.other], distance, pair.kind, transform)


def _closest(pair):
    return (pair.distance, KIND_CODES[pair.kind], pair.other)


def _join_via(records, file_id, pair, assigned, groups):
    distance = 0 if pair.kind != Kind.NEAR else pair.distance
    member = Member(records[file_id], distance, pair.kind, pair.transform, records[pair.other])
    groups[assigned[pair.other]].members.append(member)
    assigned[file_id] = assigned[pair.other]


def _with_same_as(group, pairs):
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


# --- random pair graphs ---------------------------------------------------------------------

TURNS = sorted(ORIENTATION_TRANSFORMS)


def random_graph(seed: int) -> tuple[dict[int, FileRecord], dict[int, list[Pair]]]:
    """Files with few distinct mtimes, sizes and formats (ties everywhere), and symmetric
    pairs of every kind and transform, at most one per two files; the ids are not 1..n."""
    rng = random.Random(seed)
    count = rng.randint(2, 30)
    ids = sorted(rng.sample(range(1, 200), count))
    digests = [bytes([rng.randint(0, 3)]) * 16 for _ in range(count)]
    records = {
        file_id: FileRecord(
            file_id,
            b"/p/%s/%d" % (rng.choice([b"a", b"bb", b"c"]), file_id),
            1,
            file_id,
            rng.choice([100, 200]),
            rng.choice([1, 2, 3]) * 10**18,
            0,
            digests[i],
            rng.choice([50, 100]),
            rng.choice([50, 100]),
            rng.choice(["JPEG", "PNG", "GIF"]),
            framed=rng.random() < 0.2,
        )  # fmt: skip
        for i, file_id in enumerate(ids)
    }
    pairs: dict[int, list[Pair]] = {}
    for _ in range(rng.randint(1, 3 * count)):
        a, b = rng.sample(ids, 2)
        if any(p.other == b for p in pairs.get(a, ())):
            continue
        kind = rng.choice([Kind.EXACT, Kind.PIXEL, Kind.NEAR, Kind.NEAR, Kind.NEAR])
        transform = None
        if kind == Kind.NEAR and rng.random() < 0.35:
            transform = rng.choice([*TURNS, "crop", "uncrop"])
        pair = Pair(b, rng.randint(0, 14), kind, transform)
        pairs.setdefault(a, []).append(pair)
        pairs.setdefault(b, []).append(pair.seen_from(a))
    for partners in pairs.values():
        partners.sort(key=lambda p: p.other)  # the table's order
    return {i: records[i] for i in pairs}, pairs


def described(groups: list[Group]) -> list[tuple]:
    def ident(record):
        return None if record is None else record.id

    return [
        (
            g.keep.id,
            g.why,
            [
                (
                    m.record.id,
                    m.distance,
                    m.kind,
                    m.transform,
                    ident(m.via),
                    ident(m.same_as),
                    m.same_kind,
                )
                for m in g.members
            ],
        )  # fmt: skip
        for g in groups
    ]


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32), keep=st.sampled_from(KEEP_POLICIES), filtered=st.booleans())
def test_packed_groups_are_the_pair_lists_groups(seed: int, keep: str, filtered: bool) -> None:
    records, pairs = random_graph(seed)
    rng = random.Random(seed + 1)
    ignored = {
        pair_key(records[a].digest, records[p.other].digest)
        for a in rng.sample(sorted(pairs), min(2, len(pairs)))
        for p in pairs[a][:1]
    }
    if not filtered:
        ignored = set()

    def pair_filter(a: FileRecord, b: FileRecord) -> bool:
        return (a.id + b.id) % 7 != 0

    kept = reference_wanted(records, pairs, ignored, pair_filter if filtered else None)
    packed = wanted_pairs(
        records, PackedPairs.of(pairs), ignored, pair_filter if filtered else None
    )
    assert derived_copies(records, packed) == reference_derived(records, kept)
    derived = frozenset(reference_derived(records, kept))
    labelled = (lambda r: r.id % 3 == 0) if rng.random() < 0.5 else None
    prefer = [b"/p/bb"] if rng.random() < 0.3 else []
    keeper = Keeper(keep, prefer, labelled, derived)
    expected = described(reference_groups(records, kept, keeper))
    assert described(build_groups(records, packed, keeper)) == expected
    assert described(build_groups(records, kept, keeper)) == expected  # Pair lists still work


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), radius=st.integers(0, 16), chunk=st.integers(1, 5))
def test_pairs_read_a_few_files_at_a_time_are_the_pairs_within_the_radius(
    seed: int, radius: int, chunk: int, tmp_path_factory
) -> None:
    """read_within from a real LMDB pairs table, its files read `chunk` at a time (an entry
    may name a file with no entry within the radius: it is -1), equals the Pair lists."""
    _, pairs = random_graph(seed)
    env = lmdb.open(str(tmp_path_factory.mktemp("pairs")), max_dbs=1, map_size=1 << 24)
    db = env.open_db(b"pairs", dupsort=True, dupfixed=True)
    with env.begin(write=True) as txn:
        for file_id, partners in pairs.items():
            for pair in partners:
                txn.put(u64(file_id), pair.code(), db=db)
    within = {
        file_id: [p for p in partners if p.distance <= radius]
        for file_id, partners in pairs.items()
    }
    within = {file_id: sorted(ps, key=lambda p: p.other) for file_id, ps in within.items() if ps}
    with pytest.MonkeyPatch.context() as patch, env.begin() as txn:
        patch.setattr(packed_pairs, "READ_KEYS", chunk)
        read = read_within(txn, db, radius)
    env.close()
    expected = PackedPairs.of(within)
    assert read.ids.tolist() == expected.ids.tolist()
    assert read.start.tolist() == expected.start.tolist()
    for mine, theirs in zip(read._columns(), expected._columns(), strict=True):
        assert mine.dtype == theirs.dtype
        assert mine.tolist() == theirs.tolist()
    assert {file_id: read.pairs_of(i) for i, file_id in enumerate(read.ids.tolist())} == within
