"""The fingerprint of one file: a blake2b digest of its bytes and the pHashes of its pixels,
read once (decode.py reads, phash.py hashes), and the distance between two pictures."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from PIL import Image

from dupwatch.index.fingerprint import alpha, detail, transforms
from dupwatch.index.fingerprint.decode import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    FilePath,
    decoding,
    noted_warnings,
    open_image,
    orientation_of,
    read_bytes,
    to_gray,
    transpose,
    upright_size,
)
from dupwatch.index.fingerprint.phash import HASH_SIZE, HIGHFREQ_FACTOR, picture_hashes

DRAFT_SIZE = (256, 256)  # smaller drafts drift the hash by up to 14-16 bits (DESIGN.md)

# Any change to the bits produced must bump "version": an index stores this and refuses a mismatch.
HASH_PARAMS: dict[str, Any] = {
    "algo": "phash",
    "hash_size": HASH_SIZE,
    "highfreq_factor": HIGHFREQ_FACTOR,
    "resample": "lanczos",
    "draft": "L 256x256",
    "exif_transpose": True,
    "gray16": "scaled",
    "trim": "uniform borders, screenshot frames",
    "crop_regions": len(transforms.CROP_REGIONS),
    "confirm": "centre 80% region",
    "low_information": (
        f"low-frequency std < {detail.LOW_STD}, bits < {detail.MIN_BITS}, side < {detail.MIN_SIDE}"
    ),
    "verify": (
        f"16x16 grey correlation {detail.VERIFY_CORRELATION}/{detail.CLEAR_CORRELATION},"
        f" as crops {detail.CROP_CORRELATION}"
    ),
    "alpha": "composited on white",
    "version": 4,
}


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What dupwatch knows about one file's content.

    `bits` is the unsigned 64-bit pHash (imagehash's bit order), `digest` the 16-byte blake2b
    of the file's bytes, `width`/`height` the upright size, `format` Pillow's format name,
    `size` the file's length in bytes. `orientations` holds the pHash of the picture turned
    back by each of transforms.ORIENTATION_NAMES (the first is `bits`), `crops` the pHash of
    each of transforms.CROP_REGIONS (one of them is the centre's, see match_distance).
    """

    bits: int
    digest: bytes
    width: int
    height: int
    format: str
    size: int
    orientations: tuple[int, ...] = ()
    crops: tuple[int, ...] = ()
    # fingerprint/detail.py: the grey amplitude of what the hash is made of, and a 16x16 grey
    # thumbnail of the picture inside its borders (the second look at near candidates).
    low_std: float = 100.0
    thumbnail: bytes = b""
    # The picture lies inside borders or a screenshot's frame: never kept over the picture.
    framed: bool = False
    # What decoding said about the file (Pillow's warnings), for the per-file notes.
    notes: tuple[str, ...] = ()

    @property
    def low_information(self) -> bool:
        """Too little in the picture for its pHash to mean anything: matches only as exact
        or pixel (fingerprint/detail.py)."""
        return detail.is_low_information(self.low_std, self.bits, self.width, self.height)

    def oriented(self, name: str) -> int:
        """The pHash of the picture turned back by orientation `name` ("rot90", ...)."""
        return self.orientations[transforms.ORIENTATION_NAMES.index(name)]

    @property
    def centre(self) -> int | None:
        """The pHash of the central 80% region; None for a fingerprint made without regions."""
        return self.crops[transforms.CENTRE_REGION] if self.crops else None


def match_distance(full: int, centre: int | None = None, other_centre: int | None = None) -> int:
    """How far apart two pictures are, given the Hamming distance of their pHashes (`full`)
    and their centre regions' pHashes: `full`, raised to the mean of it and the centres'
    distance. They match at a radius r when both hashes agree on average within r and the
    full hashes within r.

    Chosen on the accuracy benchmark (README "Accuracy"): at radius 10 the full pHash alone
    paired different pictures with little in them (a blue backdrop and an orange fundus) on
    four of six seeds, and at 12 on all; with the centre's second opinion radius 12 pairs none
    on any seed and finds more mild copies (5% crops, corner watermarks) than 10 did. When
    either centre is unknown (a query by hash alone) it is the full distance.
    """
    if centre is None or other_centre is None:
        return full
    return max(full, (full + (centre ^ other_centre).bit_count() + 1) // 2)


def fingerprint(
    path: FilePath,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Fingerprint:
    """Fingerprint one file, reading its bytes once.

    The digest and the pixels come from the same bytes, so a file rewritten meanwhile cannot
    mix two versions. JPEGs are decoded at 1/2-1/8 scale inside the DCT (draft), the EXIF
    orientation is applied, and the pHash is imagehash.phash's on the upright picture.
    Raises a FingerprintError subclass naming the file; `max_pixels=None` leaves only Pillow's
    own hard limit (2 x Image.MAX_IMAGE_PIXELS).
    """
    data = read_bytes(path, max_bytes=max_bytes)
    with decoding(path, data), noted_warnings() as notes:
        img = open_image(path, data, max_pixels)
        declared_size, image_format = img.size, img.format or "unknown"
        img.draft("L", DRAFT_SIZE)  # a no-op for everything but JPEG
        img.load()
        orientation = orientation_of(img)  # after load: a PNG's eXIf may follow its pixels
        gray = to_gray(path, alpha.flatten(img))  # what is drawn through alpha, on white
        gray = transpose(gray, orientation)
        hashes = picture_hashes(gray)
    width, height = upright_size(declared_size, orientation)
    return Fingerprint(
        bits=hashes.orientations[0],
        digest=hashlib.blake2b(data, digest_size=16).digest(),
        width=width,
        height=height,
        format=image_format,
        size=len(data),
        orientations=hashes.orientations,
        crops=hashes.crops,
        low_std=hashes.low_std,
        thumbnail=hashes.thumbnail,
        framed=hashes.framed,
        notes=tuple(notes),
    )


def comparison_picture(
    path: FilePath, *, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """The upright grayscale picture inside its uniform borders, drafted like fingerprint():
    what a closer comparison (crop confirmation) looks at. Raises a FingerprintError subclass."""
    data = read_bytes(path)
    with decoding(path, data):
        img = open_image(path, data, max_pixels)
        img.draft("L", DRAFT_SIZE)
        img.load()
        gray = transpose(to_gray(path, alpha.flatten(img)), orientation_of(img))
        return gray.crop(tuple(round(v) for v in picture_hashes(gray).box))
