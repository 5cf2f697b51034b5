"""Multi-index hashing in numpy: how 64-bit hashes are cut into substrings, and the radius
searches over hashes sorted by substring (store/substrings.py keeps such a base in LMDB;
store/selfjoin.py joins a set with itself).

A hash is cut into m substrings (four of 16 bits below WIDE_FROM hashes, three of 21-22 bits
above). Two hashes within r bits agree closely on at least one substring (the generalised
pigeonhole principle: with thresholds t_i whose t_i + 1 add up to r + 1, some substring i
differs by at most t_i bits), so a query probes, in each substring's section of the base,
every value within t_i bits of its own, and verifies the hashes found there by popcount.

The base holds every hash m times, section i sorted by substring i, so a substring value's
hashes are one contiguous run; the offsets array says where each run starts (one int64 per
possible value of every substring).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

HASH_BITS = 64
# Above this many hashes, three wider substrings read fewer candidates than four of 16 bits
# (at 10M, 4 x 16 bits leaves ~150 hashes per substring value).
WIDE_FROM = 1 << 22
# Candidates a batched query expands at once: bounds its memory (~40 bytes each).
BATCH_CANDIDATES = 1 << 21
JOIN_CHUNK = 1 << 17  # candidates join() compares at once: small enough for the CPU caches

_U64 = np.dtype("<u8")
_I64 = np.dtype("<i8")


@lru_cache(maxsize=64)
def ball(width: int, radius: int) -> np.ndarray:
    """Every `width`-bit mask with at most `radius` bits set (the XORs a probe applies)."""
    masks = [0]
    for count in range(1, min(radius, width) + 1):
        for bits in itertools.combinations(range(width), count):
            masks.append(sum(1 << bit for bit in bits))
    out = np.array(masks, dtype=np.int64)
    out.flags.writeable = False
    return out


def thresholds(radius: int, widths: tuple[int, ...]) -> list[int]:
    """Per-substring thresholds whose (t + 1) add up to radius + 1; -1 skips a substring.

    Two hashes within `radius` bits then differ by at most t_i bits in some substring i:
    if every substring differed by t_i + 1 or more, they would differ by radius + 1. The
    thresholds are as even as can be; the wider substrings take the odd ones (their values
    are rarer, so a wider ball finds fewer candidates there).
    """
    m = len(widths)
    out = [(radius + 1) // m - 1] * m
    widest_first = sorted(range(m), key=lambda i: -widths[i])
    for i in widest_first[: (radius + 1) % m]:
        out[i] += 1
    return out


@dataclass(frozen=True)
class Layout:
    """How hashes are cut: substring widths from the lowest bit up."""

    widths: tuple[int, ...]

    @staticmethod
    def for_size(count: int) -> Layout:
        return Layout((21, 21, 22) if count >= WIDE_FROM else (16, 16, 16, 16))

    @cached_property
    def shifts(self) -> list[int]:
        return [sum(self.widths[:i]) for i in range(len(self.widths))]

    @cached_property
    def bucket_starts(self) -> list[int]:
        """Index of each substring's first value in the offsets array."""
        return [sum(1 << w for w in self.widths[:i]) for i in range(len(self.widths))]

    @property
    def buckets(self) -> int:
        return sum(1 << w for w in self.widths)

    @cached_property
    def _cuts(self) -> tuple[np.ndarray, np.ndarray]:
        """(shift, mask) of each substring, as arrays: every substring of a hash at once."""
        shifts = np.array(self.shifts, dtype=np.uint64)
        masks = np.array([(1 << w) - 1 for w in self.widths], dtype=np.uint64)
        return shifts, masks

    def substrings(self, bits: np.ndarray) -> np.ndarray:
        """(len(bits), m): substring i of each hash in column i."""
        shifts, masks = self._cuts
        return ((bits[:, None] >> shifts) & masks).astype(np.int64)

    def substring(self, bits: np.ndarray, i: int) -> np.ndarray:
        width, shift = self.widths[i], self.shifts[i]
        return ((bits >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)

    def probes(self, radius: int) -> list[tuple[int, np.ndarray]]:
        """(substring, masks) to probe at `radius`."""
        return _probes(self, radius)

    def candidates(self, count: int, radius: int) -> float:
        """How many hashes a query at `radius` meets on average among `count`."""
        return count * _probe_costs(self, radius)[1]

    def worth_probing(self, count: int, radius: int) -> bool:
        """Whether probing beats scanning all `count` hashes (costs measured in numpy:
        ~30 ns a probe, ~8 ns a candidate, ~1.5 ns a hash scanned)."""
        masks, share = _probe_costs(self, radius)
        return 30 * masks + 8 * share * count < 1.5 * count

    def encode(self) -> bytes:
        return bytes(self.widths).ljust(8, b"\0")

    @staticmethod
    @lru_cache(maxsize=16)
    def decode(m: int, raw: bytes) -> Layout:
        """One object a layout, so that what it caches (its cuts) is worked out once."""
        return Layout(tuple(raw[:m]))


@lru_cache(maxsize=256)
def _probes(layout: Layout, radius: int) -> list[tuple[int, np.ndarray]]:
    ts = thresholds(radius, layout.widths)
    return [(i, ball(layout.widths[i], t)) for i, t in enumerate(ts) if t >= 0]


@lru_cache(maxsize=256)
def _probe_keys(layout: Layout, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The probes at `radius` as three flat arrays (substring, mask, where the substring's
    values start in the offsets): a query's offsets keys are then
    (its substring[which] ^ mask) + start, for all probes in three numpy calls."""
    plan = _probes(layout, radius)
    which = np.concatenate([np.full(len(m), i, dtype=np.intp) for i, m in plan])
    masks = np.concatenate([m for _, m in plan])
    starts = np.array(layout.bucket_starts, dtype=np.int64)[which]
    return which, masks, starts


@lru_cache(maxsize=256)
def _probe_costs(layout: Layout, radius: int) -> tuple[int, float]:
    """(masks a query probes, share of the hashes it meets as candidates)."""
    plan = _probes(layout, radius)
    return (
        sum(len(m) for _, m in plan),
        sum(len(m) / (1 << layout.widths[i]) for i, m in plan),
    )


def build_base(hashes: np.ndarray, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """The base of sorted unique `hashes`: (m sections, offsets)."""
    n = len(hashes)
    base = np.empty(n * len(layout.widths), dtype=_U64)
    offs = np.empty(layout.buckets + 1, dtype=_I64)
    for i, start in enumerate(layout.bucket_starts):
        key = layout.substring(hashes, i)
        order = np.argsort(key, kind="stable")
        base[i * n : (i + 1) * n] = hashes[order]
        counts = np.bincount(key, minlength=1 << layout.widths[i])
        offs[start] = i * n
        np.cumsum(counts[:-1], out=offs[start + 1 : start + len(counts)])
        offs[start + 1 : start + len(counts)] += i * n
    offs[-1] = n * len(layout.widths)
    return base, offs


def expand(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Positions start .. start + length - 1 of every range, concatenated."""
    ends = np.cumsum(lengths)
    total = int(ends[-1]) if len(ends) else 0
    return np.repeat(starts - ends + lengths, lengths) + np.arange(total)


def probe(
    base: np.ndarray,
    offs: np.ndarray,
    layout: Layout,
    queries: np.ndarray,
    radius: int,
    budget: int = BATCH_CANDIDATES,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(query index, distance, hash) of base hashes within `radius` of each query; a hash
    found through several substrings comes out more than once. Yields in batches of
    about `budget` candidates."""
    which, masks, starts = _probe_keys(layout, radius)
    # Candidates a query expands, on average: sets how many queries go in one batch.
    per_query = max(1, int(layout.candidates(len(base) // len(layout.widths), radius)))
    step = max(1, budget // per_query)
    for lo in range(0, len(queries), step):
        batch = queries[lo : lo + step]
        key = (layout.substrings(batch)[:, which] ^ masks) + starts  # (queries, probes)
        first = offs[key]
        lengths = (offs[key + 1] - first).ravel()
        found = expand(first.ravel(), lengths)
        owner = np.repeat(np.arange(len(batch)).repeat(key.shape[1]), lengths)
        candidates = base[found]
        distances = np.bitwise_count(candidates ^ batch[owner])
        hit = np.flatnonzero(distances <= radius)
        yield owner[hit] + lo, distances[hit], candidates[hit]


def join(
    base: np.ndarray,
    offs: np.ndarray,
    layout: Layout,
    queries: np.ndarray,
    radius: int,
    chunk: int = JOIN_CHUNK,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Like probe(), for many queries: per substring, the queries sorted by it meet the base's
    runs mask by mask, in order (memory is read in sequence, not at random), and a hash is
    kept only from the first substring through which it qualifies, so it comes out once."""
    thresholds_ = thresholds(radius, layout.widths)
    earlier: list[tuple[np.uint64, int]] = []
    small = np.int32 if len(offs) < 2**31 and offs[-1] < 2**31 else np.int64
    offs = offs.astype(small)
    for i, start in enumerate(layout.bucket_starts):
        width, shift, threshold = layout.widths[i], layout.shifts[i], thresholds_[i]
        if threshold >= 0:
            keys = layout.substring(queries, i).astype(small)
            order = np.argsort(keys, kind="stable")
            keys, sorted_queries = keys[order], queries[order]
            for mu in ball(width, threshold).tolist():
                bucket = (keys ^ small(mu)) + small(start)
                first = offs[bucket]
                counts = offs[bucket + 1] - first
                meetings = meet_runs(sorted_queries, first, counts, base, radius, earlier, chunk)
                for at, partner, distance in meetings:
                    yield order[at], distance, base[partner]
        earlier.append((np.uint64(((1 << width) - 1) << shift), threshold))


def meet_runs(
    queries: np.ndarray,
    first: np.ndarray,
    counts: np.ndarray,
    base: np.ndarray,
    radius: int,
    earlier: list[tuple[np.uint64, int]],
    chunk: int,
    *,
    positions: np.ndarray | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(query number, base position, distance) of each query i against its run of the base,
    base[first[i]:first[i] + counts[i]], `chunk` candidates at a time, without the pairs an
    earlier substring found. Query i is queries[i], or queries[positions[i]] (the self-join
    meets a subset of the base without copying it)."""
    ends = np.cumsum(counts)
    lo = 0
    while lo < len(counts):
        done = ends[lo - 1] if lo else 0
        hi = max(lo + 1, int(np.searchsorted(ends, done + chunk, "right")))
        count = counts[lo:hi]
        local_ends = ends[lo:hi] - done
        total = int(local_ends[-1])
        if total:
            partner = np.repeat(first[lo:hi] - local_ends + count, count) + np.arange(total)
            bits = queries[lo:hi] if positions is None else queries[positions[lo:hi]]
            xor = np.repeat(bits, count) ^ base[partner]
            distance = np.bitwise_count(xor)
            hit = np.flatnonzero(distance <= radius)
            if len(hit):
                keep = np.ones(len(hit), dtype=bool)
                for mask, threshold in earlier:
                    if threshold >= 0:  # found through that substring already: not again
                        keep &= np.bitwise_count(xor[hit] & mask) > threshold
                hit = hit[keep]
                at = lo + np.searchsorted(local_ends, hit, "right")
                yield at, partner[hit], distance[hit]
        lo = hi


def scan(
    hashes: np.ndarray, queries: np.ndarray, radius: int, budget: int = BATCH_CANDIDATES
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Like probe(), by comparing every query with every hash."""
    if not len(hashes):
        return
    step = max(1, budget // len(hashes))
    for lo in range(0, len(queries), step):
        batch = queries[lo : lo + step]
        distances = np.bitwise_count(batch[:, None] ^ hashes[None, :])
        owner, at = np.nonzero(distances <= radius)
        yield owner + lo, distances[owner, at], hashes[at]
