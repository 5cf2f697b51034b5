"""Matches, their kinds, and the duplicate pairs the index stores (the `pairs` table).

A pair is stored under each of its two files: the value names the other file, the distance,
the kind and, for a pair found through --transforms, how this file is the other transformed
(so the two entries of a turned pair name inverse turns).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from dupwatch.index.store import FileRecord, from_u64, u64
from dupwatch.index.transforms import INVERSE, MATCH_TRANSFORMS


class Kind(StrEnum):
    EXACT = "exact"  # same bytes
    PIXEL = "pixel"  # same decoded pixels, other bytes
    NEAR = "near"  # perceptual hashes within the radius


KIND_CODES = {Kind.EXACT: 0, Kind.PIXEL: 1, Kind.NEAR: 2}
_KINDS = {code: kind for kind, code in KIND_CODES.items()}
_TRANSFORM_CODES = {None: 0, **{name: i for i, name in enumerate(MATCH_TRANSFORMS, 1)}}
_TRANSFORMS = {code: name for name, code in _TRANSFORM_CODES.items()}


@dataclass(frozen=True, slots=True)
class Match:
    record: FileRecord
    distance: int
    kind: Kind
    is_self: bool = False
    # How the query is the matched picture transformed ("rot90", "flip_lr", "crop", ...),
    # None when it is the picture as it is. See dupwatch.index.transforms.
    transform: str | None = None

    def to_json(self) -> dict:
        out = {"path": self.record.fspath, "distance": self.distance, "kind": str(self.kind)}
        if self.is_self:
            out["self"] = True
        if self.transform:
            out["transform"] = self.transform
        return out


def best_first(match: Match) -> tuple:
    return (match.distance, KIND_CODES[match.kind], match.record.path)


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
            [self.distance, KIND_CODES[self.kind], _TRANSFORM_CODES[self.transform]]
        )

    @staticmethod
    def decode(raw: bytes) -> Pair:
        return Pair(from_u64(raw[:8]), raw[8], _KINDS[raw[9]], _TRANSFORMS[raw[10]])

    def seen_from(self, other: int) -> Pair:
        """The same pair as stored under its other file (whose id this one is `other`)."""
        transform = None if self.transform is None else INVERSE[self.transform]
        return Pair(other, self.distance, self.kind, transform)
