"""What the tests of the stored hash sets (the BK-tree, the substring tables) share: hashes
to draw, a brute-force answer, and a state machine that holds a set against a Python set."""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Iterable

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

HASH_MAX = 2**64 - 1

hashes64 = st.integers(min_value=0, max_value=HASH_MAX)
radii = st.integers(min_value=0, max_value=16)

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def brute_force(items: Iterable[int], bits: int, radius: int) -> list[tuple[int, int]]:
    found = (((bits ^ item).bit_count(), item) for item in set(items))
    return sorted(pair for pair in found if pair[0] <= radius)


def flip(bits: int, positions: Iterable[int]) -> int:
    for position in positions:
        bits ^= 1 << position
    return bits


@st.composite
def clustered_hashes(draw: st.DrawFn, max_centres: int = 6, max_members: int = 40) -> list[int]:
    """A few centres, each with near copies a few bits away: the shape real photo hashes have."""
    centres = draw(st.lists(hashes64, min_size=1, max_size=max_centres))
    rng = random.Random(draw(st.integers(min_value=0, max_value=2**32)))
    out = list(centres)
    for centre in centres:
        for _ in range(rng.randint(0, max_members)):
            out.append(flip(centre, rng.sample(range(64), rng.randint(1, 8))))
    return out


hash_lists = st.one_of(
    st.lists(hashes64, max_size=200),
    clustered_hashes(),
    # The corners: zero, all ones, the sign bit, as int64 round trips would break them.
    st.lists(st.sampled_from([0, 1, 2**63, 2**63 - 1, HASH_MAX, HASH_MAX - 1]), max_size=6),
)


@st.composite
def queries_near(draw: st.DrawFn, items: list[int], max_flips: int = 8) -> int:
    """Mostly a stored hash with a few bits flipped, so the answers are not empty."""
    if not items or draw(st.integers(0, 4)) == 0:
        return draw(hashes64)
    base = draw(st.sampled_from(items))
    return flip(base, draw(st.lists(st.integers(0, 63), max_size=max_flips)))


class HashSetAgainstASet(RuleBasedStateMachine):
    """Random adds, removes, batch updates, finds and reopens; the stored set must act as a
    Python set does. A subclass opens it (an @initialize rule setting self.hashes) and
    reopens it (reopened())."""

    max_flips = 8

    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.mkdtemp(prefix="hash-set-sm-", dir="/tmp")
        self.model: set[int] = set()
        self.hashes = None

    def reopened(self):
        raise NotImplementedError

    def teardown(self) -> None:
        if self.hashes is not None:
            self.hashes.close()
        shutil.rmtree(self.folder)

    def nearby(self, data: st.DataObject) -> int:
        return data.draw(queries_near(sorted(self.model), self.max_flips))

    @rule(data=st.data())
    def add(self, data: st.DataObject) -> None:
        bits = self.nearby(data)
        assert self.hashes.add(bits) is (bits not in self.model)
        self.model.add(bits)

    @rule(data=st.data(), size=st.integers(0, 50))
    def update(self, data: st.DataObject, size: int) -> None:
        batch = [self.nearby(data) for _ in range(size)]
        assert self.hashes.update(batch) == len(set(batch) - self.model)
        self.model.update(batch)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def remove_present(self, data: st.DataObject) -> None:
        bits = data.draw(st.sampled_from(sorted(self.model)))
        assert self.hashes.remove(bits) is True
        self.model.discard(bits)

    @rule(data=st.data())
    def remove_any(self, data: st.DataObject) -> None:
        bits = self.nearby(data)
        assert self.hashes.remove(bits) is (bits in self.model)
        self.model.discard(bits)

    @rule(data=st.data(), radius=radii)
    def find(self, data: st.DataObject, radius: int) -> None:
        bits = self.nearby(data)
        assert self.hashes.find(bits, radius) == brute_force(self.model, bits, radius)

    @rule()
    def reopen(self) -> None:
        self.hashes.close()
        self.hashes = self.reopened()

    @invariant()
    def same_members(self) -> None:
        if self.hashes is None:
            return
        assert len(self.hashes) == len(self.model)
        assert sorted(self.hashes) == sorted(self.model)
        for bits in list(self.model)[:5]:
            assert bits in self.hashes


MACHINE_SETTINGS = settings(max_examples=30, stateful_step_count=30, deadline=None)
