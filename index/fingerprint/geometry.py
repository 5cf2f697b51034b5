"""Geometry of the small grayscale pictures the hashes are made from: the eight orientations
of the 32x32 hash input, and the picture inside uniform borders of a ~128 px thumbnail.

Everything here works on small pictures, never on a full-size image: it must cost a fraction
of the decode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

# Each function maps a query array back to the matched picture's orientation (the inverse of
# the turn named in transforms.ORIENTATION_NAMES, in that order).
ORIENTATIONS: dict[str, Callable[[NDArray[Any]], NDArray[Any]]] = {
    "identity": lambda a: a,
    "rot90": lambda a: np.rot90(a, -1),
    "rot180": lambda a: np.rot90(a, 2),
    "rot270": lambda a: np.rot90(a, 1),
    "flip_lr": np.fliplr,
    "flip_tb": np.flipud,
    "transpose": lambda a: a.T,
    "transverse": lambda a: np.rot90(a, 2).T,
}

# Border trimming: a line of the thumbnail is border when nearly all of its pixels are
# within _BORDER_TOLERANCE of the border's colour (JPEG noise stays well inside that).
_BORDER_TOLERANCE = 2  # of 0-255, on the box-averaged thumbnail: bars are flat, skies are not quite
_BORDER_SHARE = 1.0
_MIN_KEPT = 0.5  # trim nothing when less than this share of a side would remain
_CENTRED_SLACK = 0.2  # opposite borders may differ by this share of the thicker one
_TRIM_PASSES = 3  # a border of a second colour inside the first (white mat in black bars)
THUMBNAIL_SIDE = 128  # the shorter side of the analysis thumbnail, at least


def thumbnail_factor(size: tuple[int, int]) -> int:
    """The box-reduction factor that leaves the shorter side at least THUMBNAIL_SIDE (a
    coarser thumbnail places the borders too roughly: a pixel of it is a shift of ~1%)."""
    return max(1, min(size) // THUMBNAIL_SIDE)


def border_box(thumb: NDArray[Any]) -> tuple[int, int, int, int]:
    """The picture inside uniform borders (letterbox bars, padding, a mat) of a grayscale
    thumbnail, as (left, top, right, bottom).

    The whole thumbnail when there are no borders, and also when what the borders hold is not
    clearly a picture of its own: less than half of a side would remain, or the remainder is
    itself mostly the border's colour (a dark photo's black background is not a letterbox).
    """
    height, width = thumb.shape
    pixels = thumb.astype(np.int16)
    left, top, right, bottom = 0, 0, width, height
    colours: list[float] = []
    for _ in range(_TRIM_PASSES):
        before = (left, top, right, bottom)
        top += _border_lines(pixels[top:bottom, left:right], colours)
        bottom -= _border_lines(pixels[top:bottom, left:right][::-1], colours)
        left += _border_lines(pixels[top:bottom, left:right].T, colours)
        right -= _border_lines(pixels[top:bottom, left:right].T[::-1], colours)
        if (left, top, right, bottom) == before:
            break
    whole = (0, 0, width, height)
    if not _centred(top, height - bottom):
        top, bottom = 0, height
    if not _centred(left, width - right):
        left, right = 0, width
    if right - left < _MIN_KEPT * width or bottom - top < _MIN_KEPT * height:
        return whole
    if colours and _border_coloured_share(pixels[top:bottom, left:right], colours) > 0.5:
        return whole
    return left, top, right, bottom


def _centred(before: int, after: int) -> bool:
    """True when borders on two opposite sides are about as thick: letterbox bars and padding
    centre the picture, while a dark or pale edge of a photo is on one side only."""
    return abs(before - after) <= max(1, _CENTRED_SLACK * max(before, after))


def _border_lines(rows: NDArray[Any], colours: list[float]) -> int:
    """How many leading rows are all one colour, the colour of the first row (noted in
    `colours` when there are any)."""
    if rows.shape[0] == 0 or rows.shape[1] == 0:
        return 0
    colour = float(np.median(rows[0]))
    if not _uniform(rows[:1], colour)[0]:
        return 0  # most pictures: no border, and the first line alone says so
    uniform = _uniform(rows, colour)
    colours.append(colour)
    failing = np.flatnonzero(~uniform)
    return int(failing[0]) if failing.size else rows.shape[0]


def _uniform(rows: NDArray[Any], colour: float) -> NDArray[Any]:
    """Per row: whether (nearly) all of its pixels are within tolerance of `colour`."""
    return (np.abs(rows - colour) <= _BORDER_TOLERANCE).mean(axis=1) >= _BORDER_SHARE


def _border_coloured_share(kept: NDArray[Any], colours: list[float]) -> float:
    if kept.size == 0:
        return 1.0
    near = np.zeros(kept.shape, dtype=bool)
    for colour in set(colours):
        near |= np.abs(kept - colour) <= _BORDER_TOLERANCE
    return float(near.mean())
