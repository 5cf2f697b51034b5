"""Geometric helpers of the hash: uniform-border trimming, the eight orientations, crop regions.

Everything here works on small grayscale pictures (the 32x32 hash input, or a ~128 px
thumbnail of the drafted decode), never on a full-size image: it must cost a fraction of
the decode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from dupwatch.index.errors import DupwatchError

Box = tuple[float, float, float, float]  # left, top, right, bottom, in pixels

# The transforms a user can ask dupwatch to see through (`--transforms rotate,flip,crop`).
TRANSFORM_OPTIONS = ("rotate", "flip", "crop")

# The eight orientations of a picture, named by what turns the indexed picture into the
# query: "rot90" means the query is the matched file turned 90 degrees counter-clockwise.
# Each function maps a query array back to the matched picture's orientation (the inverse).
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
ORIENTATION_NAMES = tuple(ORIENTATIONS)
# Every way a match can be transformed: an orientation, or "crop" (the query is a cut-down
# copy of the match) and "uncrop" (the match is a cut-down copy of the query).
MATCH_TRANSFORMS = (*ORIENTATION_NAMES[1:], "crop", "uncrop")
# If A is B under a transform, B is A under its inverse.
INVERSE = {
    "rot90": "rot270",
    "rot180": "rot180",
    "rot270": "rot90",
    "flip_lr": "flip_lr",
    "flip_tb": "flip_tb",
    "transpose": "transpose",
    "transverse": "transverse",
    "crop": "uncrop",
    "uncrop": "crop",
}
_ROTATIONS = ("rot90", "rot180", "rot270")
_MIRRORS = ("flip_lr", "flip_tb")

# Border trimming: a line of the thumbnail is border when nearly all of its pixels are
# within _BORDER_TOLERANCE of the border's colour (JPEG noise stays well inside that).
_BORDER_TOLERANCE = 2  # of 0-255, on the box-averaged thumbnail: bars are flat, skies are not quite
_BORDER_SHARE = 1.0
_MIN_KEPT = 0.5  # trim nothing when less than this share of a side would remain
_CENTRED_SLACK = 0.2  # opposite borders may differ by this share of the thicker one
_TRIM_PASSES = 3  # a border of a second colour inside the first (white mat in black bars)
THUMBNAIL_SIDE = 128  # the shorter side of the analysis thumbnail, at least

# Crop candidates: sub-regions of the (trimmed) picture, as (left, top, width, height) in
# fractions of it. Each comes out of one small resampling of the picture (a grid): 32x32
# windows of a 40x40 grid are 80% regions on a 5x5 lattice, which catch a 20% crop anywhere
# within 2.5% of the picture's side (a 3x3 lattice left half of them too far off to hash
# alike); windows of a 36x36 grid in the corners are 89% regions, for milder crops.
CROP_GRIDS = ((40, (0, 2, 4, 6, 8)), (36, (0, 4)))
CROP_REGIONS: tuple[Box, ...] = tuple(
    (x / grid, y / grid, 32 / grid, 32 / grid)
    for grid, offsets in CROP_GRIDS
    for y in offsets
    for x in offsets
)
# The central 80% region: its hash is every fingerprint's second opinion (see
# fingerprint.match_distance), since a mild crop or a watermark in a corner barely moves it
# while two different pictures that agree overall rarely agree there too.
CENTRE_REGION = CROP_REGIONS.index((4 / 40, 4 / 40, 32 / 40, 32 / 40))


class TransformError(DupwatchError, ValueError):
    """A --transforms value names something dupwatch cannot undo."""


def parse_transforms(value: str | Iterable[str] | None) -> frozenset[str]:
    """A set of TRANSFORM_OPTIONS from "rotate,flip" or a list; TransformError names a bad one."""
    if value is None:
        return frozenset()
    names = value.split(",") if isinstance(value, str) else list(value)
    chosen = frozenset(name.strip() for name in names if name.strip())
    unknown = sorted(chosen - set(TRANSFORM_OPTIONS))
    if unknown:
        raise TransformError(
            f"unknown transform {unknown[0]!r}; choose from {', '.join(TRANSFORM_OPTIONS)}"
        )
    return chosen


def orientations_for(transforms: Iterable[str]) -> tuple[str, ...]:
    """The orientation names (other than identity) that `transforms` asks to query."""
    chosen = set(transforms)
    rotate, flip = "rotate" in chosen, "flip" in chosen
    if rotate and flip:
        return ORIENTATION_NAMES[1:]
    return (_ROTATIONS if rotate else ()) + (_MIRRORS if flip else ())


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
    uniform = (np.abs(rows - colour) <= _BORDER_TOLERANCE).mean(axis=1) >= _BORDER_SHARE
    if not uniform[0]:
        return 0
    colours.append(colour)
    failing = np.flatnonzero(~uniform)
    return int(failing[0]) if failing.size else rows.shape[0]


def _border_coloured_share(kept: NDArray[Any], colours: list[float]) -> float:
    if kept.size == 0:
        return 1.0
    near = np.zeros(kept.shape, dtype=bool)
    for colour in set(colours):
        near |= np.abs(kept - colour) <= _BORDER_TOLERANCE
    return float(near.mean())
