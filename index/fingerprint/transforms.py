"""The transforms dupwatch sees through: their names, the eight orientations, the crop
regions, and parsing `--transforms`.

Names and numbers only (standard library), so that the command line and the config file can
check `--transforms` without loading numpy; fingerprint/geometry.py does the turning.
"""

from __future__ import annotations

from collections.abc import Iterable

from dupwatch.index.errors import DupwatchError

Box = tuple[float, float, float, float]  # left, top, right, bottom, in pixels

# The transforms a user can ask dupwatch to see through (`--transforms rotate,flip,crop`).
TRANSFORM_OPTIONS = ("rotate", "flip", "crop")

# The eight orientations of a picture, named by what turns the indexed picture into the
# query: "rot90" means the query is the matched file turned 90 degrees counter-clockwise.
ORIENTATION_NAMES = (
    "identity",
    "rot90",
    "rot180",
    "rot270",
    "flip_lr",
    "flip_tb",
    "transpose",
    "transverse",
)
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
