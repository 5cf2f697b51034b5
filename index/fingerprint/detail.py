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
SHIFT = 0  # shifts of 1 px did not help: crop5 pairs still fell to 0.70 (a scale change)


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
    """The best Pearson correlation of two thumbnails over shifts of up to SHIFT pixels (a
    crop of a few per cent a side moves the picture by about a pixel of the thumbnail); 1.0
    when both are flat (nothing to tell apart: such pictures are low information and never
    reach here as near candidates)."""
    x = np.frombuffer(a, dtype=np.uint8).astype(float).reshape(DETAIL_SIDE, DETAIL_SIDE)
    y = np.frombuffer(b, dtype=np.uint8).astype(float).reshape(DETAIL_SIDE, DETAIL_SIDE)
    n = DETAIL_SIDE
    best = -1.0
    for dy in range(-SHIFT, SHIFT + 1):
        for dx in range(-SHIFT, SHIFT + 1):
            u = x[max(dy, 0) : n + min(dy, 0), max(dx, 0) : n + min(dx, 0)]
            v = y[max(-dy, 0) : n + min(-dy, 0), max(-dx, 0) : n + min(-dx, 0)]
            best = max(best, _pearson(u, v))
    return best


def _pearson(u: NDArray[Any], v: NDArray[Any]) -> float:
    u = u - u.mean()
    v = v - v.mean()
    norm = float(np.sqrt((u * u).sum() * (v * v).sum()))
    return float((u * v).sum() / norm) if norm > 0 else 1.0


def confirms(a: bytes, b: bytes) -> bool:
    """True when two thumbnails agree closely enough for a near match; True when either is
    unknown (a query by hash alone).

    Every mild copy of the benchmark (resized, recompressed, recoloured, blurred, watermarked)
    correlates at 0.97 or more, but a copy cut by a few per cent a side falls to 0.70: between
    VERIFY_CORRELATION and CLEAR_CORRELATION the thumbnails are compared again as crops of
    each other (crop_correlation), and must then agree at CROP_CORRELATION.
    """
    if len(a) != DETAIL_SIDE**2 or len(b) != DETAIL_SIDE**2:
        return True
    plain = correlation(a, b)
    if plain >= CLEAR_CORRELATION:
        return True
    if plain < VERIFY_CORRELATION:
        return False
    return crop_correlation(a, b) >= CROP_CORRELATION


def crop_correlation(a: bytes, b: bytes) -> float:
    """The best correlation of one thumbnail with the other cut by 0, 3 or 6% on each side
    (and the other way round), stretched back to DETAIL_SIDE: how alike they are when one is
    a crop of the other. All 81 cuts at once, as matrix products (bilinear resampling)."""
    n = DETAIL_SIDE
    x = np.frombuffer(a, dtype=np.uint8).reshape(n, n).astype(float)
    y = np.frombuffer(b, dtype=np.uint8).reshape(n, n).astype(float)
    maps = _cut_maps()  # (cuts, n, n): rows of the cut, resampled from the whole
    best = -1.0
    for whole, part in ((x, y), (y, x)):
        # cut[i, j] = maps[i] @ whole @ maps[j].T: rows cut by cuts[i], columns by cuts[j]
        rows = maps @ whole  # (cuts, n, n): rows cut
        cuts = np.matmul(rows[:, None], maps.transpose(0, 2, 1)[None]).reshape(-1, n * n)
        cuts -= cuts.mean(axis=1, keepdims=True)
        target = (part - part.mean()).ravel()
        norms = np.sqrt((cuts * cuts).sum(axis=1) * (target * target).sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            values = np.where(norms > 0, cuts @ target / norms, -1.0)
        best = max(best, float(values.max()))
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
