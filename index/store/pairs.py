"""The duplicate pairs the index stores (the `pairs` table) and their kinds.

A pair is stored under each of its two files: the value names the other file, the distance,
the kind and, for a pair found through --transforms, how this file is the other transformed
(so the two entries of a turned pair name inverse turns).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from dupwatch.index.fingerprint.transforms import INVERSE, MATCH_TRANSFORMS
from dupwatch.index.store.records import from_u64, u64


class Kind(StrEnum):
    EXACT = "exact"  # same bytes
    PIXEL = "pixel"  # same decoded pixels, other bytes
    NEAR = "near"  # perceptual hashes within the radius


KIND_CODES = {Kind.EXACT: 0, Kind.PIXEL: 1, Kind.NEAR: 2}
KINDS = {code: kind for kind, code in KIND_CODES.items()}
TRANSFORM_CODES = {None: 0, **{name: i for i, name in enumerate(MATCH_TRANSFORMS, 1)}}
TRANSFORMS = {code: name for name, code in TRANSFORM_CODES.items()}
# By transform code, the code of its inverse (0, none, for none): Pair.seen_from on codes.
INVERSE_CODES = tuple(
    TRANSFORM_CODES[None if name is None else INVERSE[name]]
    for _, name in sorted(TRANSFORMS.items())
)


@dataclass(frozen=True, slots=True)
class Pair:
    """A stored pair, as seen from one of its files: `transform` is how that file is
    `other` transformed (None: as it is)."""

    other: int
    distance: int
    kind: Kind
    transform: str | None = None

    def code(self) -> bytes:
        """The stored value: the other file's id, the distance, the kind, the transform."""
        return u64(self.other) + bytes(
            [self.distance, KIND_CODES[self.kind], TRANSFORM_CODES[self.transform]]
        )

    @staticmethod
    def decode(raw: bytes) -> Pair:
        return Pair(from_u64(raw[:8]), raw[8], KINDS[raw[9]], TRANSFORMS[raw[10]])

    def seen_from(self, other: int) -> Pair:
        """The same pair as stored under its other file (whose id this one is `other`)."""
        transform = None if self.transform is None else INVERSE[self.transform]
        return Pair(other, self.distance, self.kind, transform)
