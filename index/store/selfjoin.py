"""All pairs of 64-bit hashes within a Hamming radius, by multi-index hashing, in numpy.

The hashes are cut into substrings as the stored tables cut them (multi_index.Layout: four of
16 bits, three of 21-22 bits from 4M hashes), with thresholds t_i whose t_i + 1 add up to
radius + 1 (multi_index.thresholds): two hashes within the radius differ by at most t_i bits
in some substring i. For each substring, the hashes are sorted by it, so each substring value
is one contiguous run; for each mask μ of at most t_i bits, every run v meets run v ^ μ, and
the hashes of the two runs are compared by popcount. A pair is kept only from the first
substring through which it qualifies, and from one side of each pair of runs, so it comes
out once.

The work is the candidates: at 1M hashes, radius 8 compares ~1.4e9 of them, radius 12
~8e9 (~1.7% of all pairs), at ~5-10 ns each. Memory is the hashes (8 bytes each), one
substring's sort (~24 bytes a hash) and a batch of CHUNK candidates (~40 bytes each): the
pairs themselves are yielded batch by batch, never held.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from dupwatch.index.store.multi_index import Layout, ball, meet_runs, thresholds

CHUNK = 1 << 17  # candidates compared at once: small enough to stay in the CPU's caches
GATHERED = 1 << 16  # pairs handed on at once by gathered(): what follows pays per batch


def self_join(
    bits: np.ndarray, radius: int, *, chunk: int = CHUNK, layout: Layout | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every pair of rows (a, b), a < b, whose hashes are within `radius` bits: yields
    (a, b, distance) arrays, batch by batch. Equal hashes in two rows are a pair at 0."""
    bits = np.ascontiguousarray(bits, dtype=np.uint64)
    if len(bits) < 2:
        return
    widths = (layout or Layout.for_size(len(bits))).widths
    for substring, masks in join_parts(widths, radius):
        runs = SortedRuns.of(bits, widths, substring)
        yield from join_part(runs, radius, widths, substring, masks, chunk=chunk)
        del runs


def join_parts(
    widths: tuple[int, ...], radius: int, pieces: int = 1
) -> list[tuple[int, tuple[int, ...]]]:
    """The self-join as independent parts, (substring, masks): each pair within the radius
    comes out of exactly one part (its first qualifying substring, and there the one mask
    its two values differ by). Each substring's masks are cut into up to `pieces` parts,
    for a cluster to share out; in substring order, so the sort of one serves its parts."""
    parts = []
    for substring, threshold in enumerate(thresholds(radius, widths)):
        if threshold < 0:
            continue
        masks = ball(widths[substring], threshold)
        for piece in np.array_split(masks, min(pieces, len(masks))):
            parts.append((substring, tuple(piece.tolist())))
    return parts


@dataclass(frozen=True)
class SortedRuns:
    """The hashes sorted by one substring: each substring value is one run, from
    starts[v] to starts[v + 1]; `order` maps a sorted position back to its row."""

    order: np.ndarray
    keys: np.ndarray
    sorted_bits: np.ndarray
    starts: np.ndarray

    @staticmethod
    def of(bits: np.ndarray, widths: tuple[int, ...], substring: int) -> SortedRuns:
        width, shift = widths[substring], sum(widths[:substring])
        index_type = np.int32 if len(bits) < 2**31 else np.int64
        key = ((bits >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)
        order = np.argsort(key, kind="stable").astype(index_type)
        keys = key[order]
        del key
        starts = np.zeros((1 << width) + 1, dtype=np.int64)
        np.cumsum(np.bincount(keys, minlength=1 << width), out=starts[1:])
        return SortedRuns(order, keys, bits[order], starts)


def join_part(
    runs: SortedRuns,
    radius: int,
    widths: tuple[int, ...],
    substring: int,
    masks: tuple[int, ...],
    *,
    chunk: int = CHUNK,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The pairs (a, b, distance), a < b, of one part of join_parts(), `runs` sorted by
    its substring: those found through it and through none before it."""
    earlier: list[tuple[np.uint64, int]] = []  # (substring mask, threshold) joined before
    shift = 0
    for width, threshold in list(zip(widths, thresholds(radius, widths), strict=True))[:substring]:
        earlier.append((np.uint64(((1 << width) - 1) << shift), threshold))
        shift += width
    order = runs.order
    for mu in masks:
        for a, b, d in _runs_meet(
            runs.keys, runs.sorted_bits, runs.starts, mu, radius, earlier, chunk
        ):
            a, b = order[a], order[b]
            yield np.minimum(a, b), np.maximum(a, b), d


def _runs_meet(
    keys: np.ndarray,
    sorted_bits: np.ndarray,
    starts: np.ndarray,
    mu: int,
    radius: int,
    earlier: list[tuple[np.uint64, int]],
    chunk: int,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Pairs (positions in the sorted order) between every run v and run v ^ mu."""
    if mu == 0:
        # Within a run: each position meets the positions after it in its run.
        positions = np.arange(len(keys), dtype=np.int64)
        first = positions + 1
        last = starts[keys + 1]
    else:
        # One side of each pair of runs: the one whose value has mu's highest bit clear.
        high = 1 << (mu.bit_length() - 1)
        positions = np.flatnonzero((keys & high) == 0)
        other = keys[positions] ^ mu
        first, last = starts[other], starts[other + 1]
    meetings = meet_runs(
        sorted_bits, first, last - first, sorted_bits, radius, earlier, chunk, positions=positions
    )
    for at, partner, distance in meetings:
        yield positions[at], partner, distance


def gathered(
    batches: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]], at_least: int = GATHERED
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """self_join's batches (a CHUNK of candidates gives a few dozen pairs) joined into
    batches of at least `at_least` pairs (the last may hold fewer), for a caller whose work
    on a batch costs more per batch than per pair."""
    held: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    count = 0
    for batch in batches:
        held.append(batch)
        count += len(batch[0])
        if count >= at_least:
            yield tuple(np.concatenate(column) for column in zip(*held, strict=True))
            held, count = [], 0
    if count:
        yield tuple(np.concatenate(column) for column in zip(*held, strict=True))


def self_join_beside(
    bits: np.ndarray, radius: int, *, at_least: int = GATHERED
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """gathered(self_join(bits, radius)), the same batches in the same order, found by a
    thread of its own: numpy lets go of the GIL in most of the join's array work, so while
    the caller works on one batch (at 1M files, judging the pairs costs about what finding
    them does), the next is found on the other core. Memory: at most two batches waiting."""
    waiting: queue.Queue[object] = queue.Queue(maxsize=2)
    stop = threading.Event()  # the caller stopped early: the thread must not wait forever

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                waiting.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def find() -> None:
        try:
            for batch in gathered(self_join(bits, radius), at_least):
                if not offer(batch):
                    return
            offer(None)
        except BaseException as error:  # handed to the caller, which raises it
            offer(error)

    thread = threading.Thread(target=find, name="dupwatch-self-join", daemon=True)
    thread.start()
    try:
        while (item := waiting.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
