"""The second look on arrays (fingerprint/detail.py): correlations from whole-number sums
equal their definition, the crop comparison computed without making its 81 cuts equals
making them, and many pairs at once answer as one pair at a time."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dupwatch.index.fingerprint.detail import (
    CLEAR_CORRELATION,
    DETAIL_SIDE,
    VERIFY_CORRELATION,
    _cut_maps,
    confirms,
    confirms_many,
    correlation,
    crop_correlations,
)

N = DETAIL_SIDE


def pictures(seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of thumbnails from alike to unrelated: smooth drawings, the second shifted,
    cut, noised or another drawing; some flat, some a lone dot (cuts of it are flat)."""
    rng = np.random.default_rng(seed)
    a = np.empty((count, N, N))
    b = np.empty((count, N, N))
    ramp = np.linspace(0, 1, 2 * N)
    for i in range(count):
        waves = rng.normal(size=(3, 4))
        yy, xx = np.meshgrid(ramp, ramp, indexing="ij")
        field = sum(w[0] * np.sin(w[1] * 4 * yy + w[2] * 4 * xx + w[3]) for w in waves)
        big = (field - field.min()) / (np.ptp(field) or 1) * 255
        top, left = rng.integers(0, N // 2, 2)
        a[i] = big[N // 4 : N // 4 + N, N // 4 : N // 4 + N]
        b[i] = big[top : top + N, left : left + N] + rng.normal(0, rng.uniform(0, 60), (N, N))
    kind = rng.integers(0, 8, count)
    b[kind == 0] = rng.uniform(0, 255, (int((kind == 0).sum()), N, N))  # unrelated
    a[kind == 1] = 40.0  # flat
    dots = np.flatnonzero(kind == 2)
    a[dots] = 0.0
    a[dots, 0, 0] = 255.0  # a lone dot in a corner: cut away by most cuts
    return (
        np.clip(a, 0, 255).astype(np.uint8).reshape(count, -1),
        np.clip(b, 0, 255).astype(np.uint8).reshape(count, -1),
    )


def cut_and_correlate(a: np.ndarray, b: np.ndarray) -> float:
    """The crop comparison by its definition: every cut of each thumbnail made, stretched back
    and correlated with the other."""
    maps = _cut_maps()
    best = -1.0
    for whole, part in ((a, b), (b, a)):
        w = whole.reshape(N, N).astype(float)
        target = part.astype(float) - part.mean()
        for rows, cols in itertools.product(maps, repeat=2):
            cut = (rows @ w @ cols.T).ravel()
            cut -= cut.mean()
            norm = np.sqrt((cut * cut).sum() * (target * target).sum())
            if norm > 1e-6:
                best = max(best, float(cut @ target / norm))
    return best


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_crop_correlations_equal_making_the_cuts(seed: int) -> None:
    a, b = pictures(seed, 12)
    fast = crop_correlations(a, b)
    slow = np.array([cut_and_correlate(x, y) for x, y in zip(a, b, strict=True)])
    np.testing.assert_allclose(fast, slow, atol=1e-9)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_correlations_equal_their_definition(seed: int) -> None:
    """From whole-number sums (float32, exact for thumbnails) as centring in float64 gives
    them; 1.0 where either thumbnail is flat."""
    a, b = pictures(seed, 40)
    fast = np.array([correlation(x.tobytes(), y.tobytes()) for x, y in zip(a, b, strict=True)])
    for i, (x, y) in enumerate(zip(a.astype(float), b.astype(float), strict=True)):
        x, y = x - x.mean(), y - y.mean()
        norm = np.sqrt((x * x).sum() * (y * y).sum())
        assert abs(fast[i] - (x @ y / norm if norm > 0 else 1.0)) < 1e-12


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_many_pairs_at_once_answer_as_one_at_a_time(seed: int) -> None:
    a, b = pictures(seed, 40)
    one_by_one = [confirms(x.tobytes(), y.tobytes()) for x, y in zip(a, b, strict=True)]
    assert confirms_many(a, b).tolist() == one_by_one


def test_every_band_is_met() -> None:
    """The pictures above reach each of the second look's three answers: clearly alike,
    clearly not, and compared again as crops."""
    a, b = pictures(7, 400)
    plain = np.array([correlation(x.tobytes(), y.tobytes()) for x, y in zip(a, b, strict=True)])
    assert (plain >= CLEAR_CORRELATION).sum() > 10
    assert (plain < VERIFY_CORRELATION).sum() > 10
    unsure = (plain >= VERIFY_CORRELATION) & (plain < CLEAR_CORRELATION)
    allowed = confirms_many(a, b)
    assert allowed[unsure].sum() > 5 and (~allowed[unsure]).sum() > 5
