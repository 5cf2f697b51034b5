"""What a query answers: the files that duplicate a picture, each with its kind and
distance, best first; what storing a file answers (AddResult); and the radius that
decides what matches."""

from __future__ import annotations

from dataclasses import dataclass

from dupwatch.index.store.pairs import KIND_CODES, Kind
from dupwatch.index.store.records import FileRecord

# The match distance (fingerprint.match_distance: Hamming distances of 64-bit pHashes) at or
# below which two pictures count as the same, chosen on the accuracy benchmark
# (tests/bench/accuracy.py, README "Accuracy"): the best near-copy F1 with no false pair among
# distinct originals, on each of six seeds.
DEFAULT_RADIUS = 12
MAX_RADIUS = 32  # past this a 64-bit pHash matches unrelated pictures


def check_radius(radius: int) -> int:
    if not 0 <= radius <= MAX_RADIUS:
        raise ValueError(f"radius {radius} is outside 0..{MAX_RADIUS}")
    return radius


@dataclass(frozen=True, slots=True)
class Match:
    record: FileRecord
    distance: int
    kind: Kind
    is_self: bool = False
    # How the query is the matched picture transformed ("rot90", "flip_lr", "crop", ...),
    # None when it is the picture as it is. See dupwatch.index.fingerprint.transforms.
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
class AddResult:
    record: FileRecord
    matches: list[Match]  # the other files it duplicates, best first
    hashed: bool = True
