"""The perceptual hashes of one upright 8-bit grayscale picture: imagehash's 64-bit pHash of
the picture inside its uniform borders, of its eight orientations and of the crop regions.

Imports numpy and Pillow, and scipy.fftpack at the first hash (~0.2 s).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from dupwatch.index.fingerprint import detail, frames, geometry
from dupwatch.index.fingerprint.transforms import CROP_GRIDS

HASH_SIZE = 8
HIGHFREQ_FACTOR = 4
HASH_INPUT_SIZE = HASH_SIZE * HIGHFREQ_FACTOR  # the 32x32 grayscale pHash is computed from


@dataclass(frozen=True, slots=True)
class PictureHashes:
    orientations: tuple[int, ...]  # in transforms.ORIENTATION_NAMES order; [0] is the pHash
    crops: tuple[int, ...]  # in transforms.CROP_REGIONS order
    box: tuple[float, float, float, float]  # the picture inside its borders, in gray's pixels
    low_std: float = 100.0  # detail.low_frequency_std of the hash input
    thumbnail: bytes = b""  # detail.thumbnail of the picture inside `box`
    framed: bool = False  # borders or a screenshot's frame were left out


def picture_hashes(gray: Image.Image) -> PictureHashes:
    """Every hash of one upright 8-bit grayscale picture.

    Borders are found on a ~128 px box-reduced thumbnail, then the pHash input (32x32) is
    resampled from `gray` inside them: without borders this is imagehash.phash(gray) exactly.
    The orientations are turns of that 32x32 input; the crop hashes come from the thumbnail.
    """
    factor = geometry.thumbnail_factor(gray.size)
    thumb = gray.reduce(factor) if factor > 1 else gray
    thumb_pixels = np.asarray(thumb)
    left, top, right, bottom = geometry.border_box(thumb_pixels)
    if (left, top, right, bottom) == (0, 0, thumb.width, thumb.height):
        # No centred uniform border: maybe a screenshot's frame (fingerprint/frames.py).
        left, top, right, bottom = frames.frame_box(thumb_pixels) or (left, top, right, bottom)
    framed = (left, top, right, bottom) != (0, 0, thumb.width, thumb.height)
    box = (
        float(left * factor),
        float(top * factor),
        float(min(right * factor, gray.width)),
        float(min(bottom * factor, gray.height)),
    )
    small = gray.resize((HASH_INPUT_SIZE, HASH_INPUT_SIZE), Image.Resampling.LANCZOS, box=box)
    pixels = np.asarray(small)
    turns = [undo(pixels) for undo in geometry.ORIENTATIONS.values()]
    crops = _crop_inputs(thumb, (left, top, right, bottom))
    hashes = phash_many(np.concatenate((np.stack(turns), crops)))  # one DCT call for all 37
    dct = _fftpack().dct
    low_std = detail.low_frequency_std(dct(dct(pixels.astype(float), axis=0), axis=1))
    orientations, crop_hashes = hashes[: len(turns)], hashes[len(turns) :]
    return PictureHashes(
        orientations, crop_hashes, box, low_std, detail.thumbnail(gray, box), framed
    )


def _crop_inputs(thumb: Image.Image, box: tuple[int, int, int, int]) -> NDArray[Any]:
    """The 32x32 hash inputs of transforms.CROP_REGIONS, as windows of one or two small
    resamplings of the picture (two resizes instead of one per region: ~30x cheaper)."""
    windows = []
    for grid, offsets in CROP_GRIDS:
        resampled = np.asarray(thumb.resize((grid, grid), Image.Resampling.BOX, box=box))
        windows += [
            resampled[y : y + HASH_INPUT_SIZE, x : x + HASH_INPUT_SIZE]
            for y in offsets
            for x in offsets
        ]
    return np.stack(windows)


def phash_many(inputs: NDArray[Any]) -> tuple[int, ...]:
    """phash_bits of each 32x32 grayscale in a stack, with one DCT call for all of them."""
    dct = _fftpack().dct
    coefficients = dct(dct(inputs.astype(float), axis=1), axis=2)[:, :HASH_SIZE, :HASH_SIZE]
    flat = coefficients.reshape(len(inputs), -1)
    above = flat > np.median(flat, axis=1, keepdims=True)
    return tuple(int.from_bytes(row.tobytes(), "big") for row in np.packbits(above, axis=1))


def phash_bits(gray: Image.Image | NDArray[Any]) -> int:
    """imagehash.phash's 64 bits of a 32x32 grayscale image (or its array), as an unsigned int.

    The same scipy DCT, the same 8x8 low-frequency block, the same median threshold, so the
    result equals int(str(imagehash.phash(gray)), 16).
    """
    pixels: NDArray[Any] = np.asarray(gray)
    dct = _fftpack().dct
    coefficients = dct(dct(pixels, axis=0), axis=1)[:HASH_SIZE, :HASH_SIZE]
    above = coefficients > np.median(coefficients)
    return int.from_bytes(np.packbits(above).tobytes(), "big")


@cache
def _fftpack() -> Any:
    import scipy.fftpack  # ~0.2 s to import: only when the first hash is computed

    return scipy.fftpack
