"""What a pHash cannot see: how much a picture holds, and a finer second look at it.

Low information. A picture with almost nothing in it (one colour, a near-blank scan, a black
frame, a tiny mark on a large empty canvas) has a pHash made of noise: the median threshold
splits DCT coefficients that are all about zero, so two unrelated blank pictures land within
any radius. The measure is the standard deviation, in grey levels, of what the hash is made
of: the low-frequency 8x8 block of the 32x32 hash input's DCT, DC left out (by Parseval, the
grey-level amplitude of the coarse drawing). Below LOW_STD a picture matches only as exact or
pixel, never near. 3 grey levels: on the package corpus (tests/bench/corpus.py) the near pairs
an audit calls wrong fall steeply up to 3 and barely after, while the right ones lost stay at
8 of 1,866 up to 4 (README, Accuracy); re-encoding and resizing move grey levels by about that much.
Two more signs of a hash made of nothing: fewer than MIN_BITS of its 64 bits set (the median
threshold sets about 32; fewer means many coefficients tie at the median, exact zeros of a
centred, symmetric or tiny drawing, so the hash says "symmetric", not what is drawn: on the
corpus such near pairs were 36 wrong to 6 right), and a picture under MIN_SIDE pixels on its
shorter side (an 8x8 block of frequencies needs 8 pixels: 22 wrong, 0 right).

Second look. Pictures that share a coarse layout but differ in their drawing (diagrams
differing in their text, icons of one set, animation frames) fall within a 64-bit pHash's
radius. Every fingerprint keeps a 16x16 grey thumbnail of the picture inside its borders (256
bytes), and a near candidate is confirmed only when the two thumbnails correlate (indifferent
to brightness, contrast and a global tint) at CLEAR_CORRELATION, or at VERIFY_CORRELATION and,
compared as crops of each other, at CROP_CORRELATION (see confirms). Chosen on the benchmark's
generator (tests/bench/dupbench.py, seed 6): CROP_CORRELATION is below the lowest of its 5%
crops (0.866), so no mild copy is lost; reported on the corpus (README).
"""

from __future__ import annotations

import itertools
from functools import cache
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

LOW_STD = 3.0
MIN_BITS = 12
MIN_SIDE = 8
DETAIL_SIDE = 16
VERIFY_CORRELATION = 0.70  # below: not the same picture
CLEAR_CORRELATION = 0.90  # at or above: the same picture
CROP_CORRELATION = 0.85  # between the two: as crops of each other, at least this
CROP_CUTS = (0.0, 0.03, 0.06)
_CROP_CHUNK = 16  # pairs compared as crops at once (fastest in small blocks)


def low_frequency_std(coefficients: NDArray[Any]) -> float:
    """The grey-level amplitude of the 8x8 low-frequency block of an unnormalised 2D DCT-II
    (scipy.fftpack's, as the hash uses) of a 32x32 picture, DC left out."""
    low = np.array(coefficients[:8, :8], dtype=float)
    low[0, 0] = 0.0
    # scipy's unnormalised DCT-II is 2N times the orthonormal one along each axis (N = 32)
    # for AC terms; orthonormal coefficients carry the pixels' energy (1024 of them).
    return float(np.sqrt((low**2).sum()) / 64.0 / 32.0)


def is_low_information(low_std: float, bits: int, width: int, height: int) -> bool:
    """Too little in the picture for its pHash to mean anything (see the module's doc)."""
    return low_std < LOW_STD or bits.bit_count() < MIN_BITS or min(width, height) < MIN_SIDE


def thumbnail(gray: Image.Image, box: tuple[float, float, float, float]) -> bytes:
    """The DETAIL_SIDE square grey thumbnail of the picture inside `box` (box filter)."""
    side = (DETAIL_SIDE, DETAIL_SIDE)
    return gray.resize(side, Image.Resampling.BOX, box=box).tobytes()


def correlation(a: bytes, b: bytes) -> float:
    """The Pearson correlation of two thumbnails; 1.0 when both are flat (nothing to tell
    apart: such pictures are low information and never reach here as near candidates)."""
    return float(_correlations(_rows(a), _rows(b))[0])


def confirms(a: bytes, b: bytes) -> bool:
    """True when two thumbnails agree closely enough for a near match; True when either is
    unknown (a query by hash alone). confirms_many for one pair."""
    if len(a) != DETAIL_SIDE**2 or len(b) != DETAIL_SIDE**2:
        return True
    return bool(confirms_many(_rows(a), _rows(b))[0])


def confirms_many(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """confirms() for many pairs of known thumbnails at once, row i of `a` with row i of `b`
    (uint8 arrays of DETAIL_SIDE**2 columns).

    Every mild copy of the benchmark (resized, recompressed, recoloured, blurred, watermarked)
    correlates at 0.97 or more, but a copy cut by a few per cent a side falls to 0.70: between
    VERIFY_CORRELATION and CLEAR_CORRELATION the thumbnails are compared again as crops of
    each other (crop_correlations), and must then agree at CROP_CORRELATION.
    """
    plain = _correlations(a, b)
    allowed = plain >= CLEAR_CORRELATION
    unsure = np.flatnonzero((plain >= VERIFY_CORRELATION) & ~allowed)
    for start in range(0, len(unsure), _CROP_CHUNK):
        rows = unsure[start : start + _CROP_CHUNK]
        allowed[rows] = crop_correlations(a[rows], b[rows]) >= CROP_CORRELATION
    return allowed


def _rows(thumbnail: bytes) -> NDArray[np.uint8]:
    return np.frombuffer(thumbnail, dtype=np.uint8).reshape(1, -1)


def _correlations(a: NDArray[Any], b: NDArray[Any]) -> NDArray[np.float64]:
    """Row-wise Pearson correlations of 8-bit rows; 1.0 where either row is flat.

    From the rows' sums, sums of squares and dot products, which are whole numbers: in
    float32 they are exact while a row's n * 255**2 stays below 2**24 (a 16x16 thumbnail: n =
    256), and 3-6 times faster than centring the rows in float64 first (the recompute judges
    ~17M pairs at 1M files and radius 14). Only the last division rounds."""
    n = a.shape[1]
    exact = np.float32 if n * 255**2 < 2**24 else np.float64
    x = a.astype(exact)
    y = b.astype(exact)
    sx = x.sum(axis=1, dtype=np.float64)
    sy = y.sum(axis=1, dtype=np.float64)
    vx = n * np.einsum("ij,ij->i", x, x).astype(np.float64) - sx * sx  # n^2 times the variance
    vy = n * np.einsum("ij,ij->i", y, y).astype(np.float64) - sy * sy
    covariance = n * np.einsum("ij,ij->i", x, y).astype(np.float64) - sx * sy
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((vx > 0) & (vy > 0), covariance / np.sqrt(vx * vy), 1.0)


def crop_correlation(a: bytes, b: bytes) -> float:
    """crop_correlations for one pair of thumbnails."""
    return float(crop_correlations(_rows(a), _rows(b))[0])


def crop_correlations(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> NDArray[np.float64]:
    """For each pair of rows, the best correlation of one thumbnail with the other cut by 0, 3
    or 6% on each side (and the other way round), stretched back to DETAIL_SIDE: how alike
    they are when one is a crop of the other.

    A cut is M_i W M_j^T (W the whole thumbnail, M_i the resampling of a cut's rows, M_j of
    its columns), and its dot product with the centred target T, mean and sum of squares come
    from per-cut products without making the 81 cuts: <R_i, T M_j>, u_i^T W u_j / n^2 (u_i
    the column sums of M_i) and <R_i^T R_i, M_j^T M_j>, where R_i = M_i W. Five times faster
    than cutting, and equal to it to ~1e-14."""
    n = DETAIL_SIDE
    k = len(a)
    x = a.reshape(k, n, n).astype(np.float64)
    y = b.reshape(k, n, n).astype(np.float64)
    maps = _cut_maps()
    c = len(maps)
    stacked = maps.reshape(c * n, n)  # M_i one above the other
    side_by_side = maps.transpose(1, 0, 2).reshape(n, c * n)  # M_j side by side
    grams = np.matmul(maps.transpose(0, 2, 1), maps).reshape(c, n * n)  # M_j^T M_j
    sums = maps.sum(axis=1)  # u_i
    best = np.full(k, -1.0)
    for whole, part in ((x, y), (y, x)):
        target = part - part.mean(axis=(1, 2), keepdims=True)
        r = stacked @ whole.transpose(1, 0, 2).reshape(n, k * n)
        r = r.reshape(c, n, k, n).transpose(2, 0, 1, 3)  # (k, c, n, n): R_i
        t = (target.reshape(k * n, n) @ side_by_side).reshape(k, n, c, n).transpose(0, 2, 1, 3)
        dots = np.matmul(r.reshape(k, c, n * n), t.reshape(k, c, n * n).transpose(0, 2, 1))
        means = np.matmul(np.matmul(sums[None], whole), sums.T[None]) / n**2
        squares = np.matmul(r.transpose(0, 1, 3, 2), r).reshape(k, c, n * n) @ grams.T
        spread = squares - n * n * means**2  # the cut's sum of squared deviations
        norms = np.sqrt(
            np.clip(spread, 0, None) * (target * target).sum(axis=(1, 2))[:, None, None]
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            # a flat cut (its spread only rounding) has nothing to correlate
            values = np.where((spread > 1e-9 * squares) & (norms > 0), dots / norms, -1.0)
        best = np.maximum(best, values.reshape(k, -1).max(axis=1))
    return best


@cache
def _cut_maps() -> NDArray[Any]:
    """For each (start, end) cut of CROP_CUTS, the DETAIL_SIDE x DETAIL_SIDE matrix that
    resamples a line's kept part back to the whole line (linear interpolation)."""
    n = DETAIL_SIDE
    maps = []
    for start, end in itertools.product(CROP_CUTS, repeat=2):
        scale = 1.0 - start - end
        centres = n * start + (np.arange(n) + 0.5) * scale - 0.5
        centres = np.clip(centres, 0, n - 1)
        low = np.floor(centres).astype(int)
        high = np.minimum(low + 1, n - 1)
        weight = centres - low
        matrix = np.zeros((n, n))
        matrix[np.arange(n), low] += 1 - weight
        matrix[np.arange(n), high] += weight
        maps.append(matrix)
    return np.stack(maps)


def near_allowed(low_a: bool, thumb_a: bytes, low_b: bool, thumb_b: bytes) -> bool:
    """Whether two pictures within the radius may be reported as a near match: neither is
    low information, and their thumbnails confirm it."""
    return not (low_a or low_b) and confirms(thumb_a, thumb_b)


def confirms_turned(query: bytes, other: bytes, undo) -> bool:
    """confirms() for a query matched through a turn: `undo` (a geometry.ORIENTATIONS
    function) turns the query's thumbnail back to the other picture's orientation."""
    if len(query) != DETAIL_SIDE**2 or len(other) != DETAIL_SIDE**2:
        return True
    square = np.frombuffer(query, dtype=np.uint8).reshape(DETAIL_SIDE, DETAIL_SIDE)
    return confirms(np.ascontiguousarray(undo(square)).tobytes(), other)
