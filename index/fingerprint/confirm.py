"""Pixel confirmation of transformed candidates: is this really the same picture?

A turned, mirrored or cropped copy is proposed by a hash within a radius; unrelated pictures
get proposed too (a rotated brick wall hashes like another brick wall), so each candidate is
compared on a small grayscale of both pictures (inside their borders, drafted as for hashing):
the Pearson correlation of the pixels once the query is turned back, or, for crops, the best
correlation of the smaller picture slid over the larger at a few scales.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from dupwatch.index.fingerprint.geometry import ORIENTATIONS

CONFIRM_SIDE = 96  # px, the shorter side of the pictures compared
# Measured on tests/bench/dupbench.py: 98% of true 20% crops correlate at >= 0.94; the
# candidates the crop hashes propose among different pictures (smooth pictures with one
# strong edge) reach 0.91. Turned copies correlate at >= 0.97.
CROP_MIN_CORRELATION = 0.93
# ... and share their fine detail: true crops at >= 0.65 (one flat picture at 0.38, with a
# pixel correlation of 0.999), those smooth look-alikes at <= 0.36.
CROP_MIN_DETAIL = 0.5
CROP_SURE_CORRELATION = 0.985
_DETAIL_SIGMA = 1.0  # px at CONFIRM_SIDE: the detail is what a 1 px blur removes
TURN_MIN_CORRELATION = 0.95
# The share of the larger picture's side the smaller may cover: 20% crops and milder.
CROP_SCALES = (0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
_TURN_SIDE = 64  # px, both pictures are resampled to this square to compare a turn


def turn_correlation(query: Image.Image, other: Image.Image, orientation: str) -> float:
    """Correlation of `other` with `query` turned back by `orientation` ("rot90", ...)."""
    size = (_TURN_SIDE, _TURN_SIDE)
    turned = ORIENTATIONS[orientation](np.asarray(query.resize(size, Image.Resampling.BOX), float))
    return _correlation(turned, np.asarray(other.resize(size, Image.Resampling.BOX), float))


@dataclass(frozen=True, slots=True)
class CropEvidence:
    """How well the smaller picture fits inside the larger at its best placement."""

    correlation: float  # of the pixels
    detail: float  # of the fine detail (the pixels less a blur of them)

    @property
    def confirmed(self) -> bool:
        # Smooth pictures with one strong edge (a sky over a roof corner, a fundus edge) fit
        # each other's crops at 0.93-0.95; only a true crop shares the fine detail too.
        return self.correlation >= CROP_MIN_CORRELATION and (
            self.detail >= CROP_MIN_DETAIL or self.correlation >= CROP_SURE_CORRELATION
        )


def crop_evidence(query: Image.Image, other: Image.Image, query_is_crop: bool) -> CropEvidence:
    """The smaller picture slid over the larger one, scaled to each of CROP_SCALES of the
    larger's size: the correlation at the best placement, and of the fine detail there."""
    big, small = (other, query) if query_is_crop else (query, other)
    big_pixels = _normalised_source(big)
    best, window, template = -1.0, big_pixels, big_pixels
    for scale in CROP_SCALES:
        width = max(8, round(big_pixels.shape[1] * scale))
        height = max(8, round(big_pixels.shape[0] * scale))
        scaled = np.asarray(small.resize((width, height), Image.Resampling.BOX), float)
        correlation, (row, col) = _best_placement(big_pixels, scaled)
        if correlation > best:
            best, template = correlation, scaled
            window = big_pixels[row : row + height, col : col + width]
    if best <= -1.0:
        return CropEvidence(-1.0, -1.0)
    return CropEvidence(best, _correlation(_detail(window), _detail(template)))


def _detail(pixels: NDArray[Any]) -> NDArray[Any]:
    from scipy.ndimage import gaussian_filter  # scipy is already loaded for the DCT

    return pixels - gaussian_filter(pixels, _DETAIL_SIGMA)


def _correlation(a: NDArray[Any], b: NDArray[Any]) -> float:
    a, b = a - a.mean(), b - b.mean()
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum()) / norm if norm > 0 else -1.0


def _normalised_source(img: Image.Image) -> np.ndarray:
    scale = CONFIRM_SIDE / min(img.size)
    size = (max(8, round(img.width * scale)), max(8, round(img.height * scale)))
    return np.asarray(img.resize(size, Image.Resampling.BOX), float)


def _best_placement(big: np.ndarray, template: np.ndarray) -> tuple[float, tuple[int, int]]:
    """The best Pearson correlation of `template` with the window of `big` under it, and
    where (window sums from integral images, the dot products by FFT)."""
    height, width = template.shape
    if height > big.shape[0] or width > big.shape[1]:
        return -1.0, (0, 0)
    centred = template - template.mean()
    t_norm = float(np.sqrt((centred * centred).sum()))
    if t_norm == 0:
        return -1.0, (0, 0)
    dots = _fft_correlate(big, centred)
    n = template.size
    sums = _window_sums(big, height, width)
    squares = _window_sums(big * big, height, width)
    w_norm = np.sqrt(np.maximum(squares - sums * sums / n, 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        correlation = np.where(w_norm > 1e-6, dots / (w_norm * t_norm), -1.0)
    row, col = np.unravel_index(int(np.argmax(correlation)), correlation.shape)
    return float(correlation[row, col]), (int(row), int(col))


def _window_sums(values: np.ndarray, height: int, width: int) -> np.ndarray:
    integral = np.pad(values.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    return (
        integral[height:, width:]
        - integral[:-height, width:]
        - integral[height:, :-width]
        + integral[:-height, :-width]
    )


def _fft_correlate(big: np.ndarray, template: np.ndarray) -> np.ndarray:
    from scipy.signal import correlate  # scipy is already loaded for the DCT

    return correlate(big, template, mode="valid", method="fft")
