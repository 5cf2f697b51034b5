"""`dupwatch compare A B`: how two images relate under every hash, to calibrate the radius.

A is taken as the new file and B as the indexed one, as when A lands in a watched folder
where B is already indexed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import imagehash
from PIL import Image

from dupwatch.index.errors import UnreadableFile
from dupwatch.index.fingerprint.confirm import (
    CROP_MIN_CORRELATION,
    CROP_MIN_DETAIL,
    TURN_MIN_CORRELATION,
    crop_evidence,
    turn_correlation,
)
from dupwatch.index.fingerprint.decode import readable_formats
from dupwatch.index.fingerprint.detail import confirms_turned, near_allowed
from dupwatch.index.fingerprint.file import (
    Fingerprint,
    comparison_picture,
    fingerprint,
    match_distance,
)
from dupwatch.index.fingerprint.geometry import ORIENTATIONS
from dupwatch.index.fingerprint.pixels import may_share_pixels, same_pixels
from dupwatch.index.fingerprint.transforms import (
    ORIENTATION_NAMES,
    orientations_for,
    parse_transforms,
)
from dupwatch.index.store.crops import CROP_RADIUS
from dupwatch.index.transformed import ORIENTATION_RADIUS

PLAIN_HASHES = {
    "pHash": imagehash.phash,
    "dHash": imagehash.dhash,
    "aHash": imagehash.average_hash,
    "wHash": imagehash.whash,
}


@dataclass
class Comparison:
    a: str
    b: str
    radius: int
    transforms: list[str]
    distance: int  # dupwatch's match distance, the picture as it is (match_distance)
    full_distance: int  # of the whole pictures' pHashes
    centre_distance: int  # of their central regions' pHashes
    distances: dict[str, int]  # plain imagehash of the full decode, for comparison
    orientations: dict[str, int]  # A turned back by each orientation, against B
    crop: dict[str, float | int | str] = field(default_factory=dict)
    kind: str | None = None  # exact, pixel or near when they match at these settings
    transform: str | None = None  # the transform under which they match, if not as they are
    match_distance: int | None = None

    @property
    def matches(self) -> bool:
        return self.kind is not None

    @property
    def smallest_radius(self) -> int:
        """The smallest --radius at which they match as they are (no transforms)."""
        return self.distance

    def to_json(self) -> dict:
        return {
            "a": self.a,
            "b": self.b,
            "match": self.matches,
            "kind": self.kind,
            "transform": self.transform,
            "distance": self.match_distance,
            "radius": self.radius,
            "transforms": self.transforms,
            "smallest_radius": self.smallest_radius,
            "distances": {
                "dupwatch": self.distance,
                "full": self.full_distance,
                "centre": self.centre_distance,
                **self.distances,
            },
            "orientations": self.orientations,
            "crop": self.crop,
        }

    def lines(self) -> list[str]:
        """The comparison in words, for a terminal."""
        if self.matches:
            how = f" as {self.transform}" if self.transform else ""
            verdict = f"match: {self.kind}{how} at distance {self.match_distance}"
        else:
            verdict = "no match"
        chosen = ",".join(self.transforms) or "none"
        out = [
            f"{verdict} (radius {self.radius}, transforms {chosen})",
            f"dupwatch distance {self.distance} (whole picture {self.full_distance}, centre "
            f"{self.centre_distance}): they match as they are from --radius "
            f"{self.smallest_radius}",
            "plain imagehash (full decode): "
            + ", ".join(f"{name} {d}" for name, d in self.distances.items()),
        ]
        best = min(self.orientations.items(), key=lambda item: item[1])
        out.append(
            f"turned: best {best[0]} at {best[1]} (--transforms rotate,flip matches turned copies"
            f" within {ORIENTATION_RADIUS}, confirmed at correlation >= {TURN_MIN_CORRELATION})"
        )
        if self.crop:
            out.append(
                "crop: "
                + ", ".join(f"{key} {value}" for key, value in self.crop.items())
                + f" (candidates at <= {CROP_RADIUS}, confirmed at correlation"
                f" >= {CROP_MIN_CORRELATION} and detail >= {CROP_MIN_DETAIL})"
            )
        return out


def compare(
    a: str | bytes | os.PathLike,
    b: str | bytes | os.PathLike,
    *,
    radius: int,
    transforms: Iterable[str] = (),
) -> Comparison:
    """Compare two image files; raises a FingerprintError naming the file that fails."""
    chosen = parse_transforms(transforms)
    fa, fb = fingerprint(a), fingerprint(b)
    full = _distance(fa.bits, fb.bits)
    result = Comparison(
        a=os.fsdecode(a),
        b=os.fsdecode(b),
        radius=radius,
        transforms=sorted(chosen),
        distance=match_distance(full, fa.centre, fb.centre),
        full_distance=full,
        centre_distance=_distance(fa.centre or 0, fb.centre or 0),
        distances={name: _plain_distance(method, a, b) for name, method in PLAIN_HASHES.items()},
        orientations={
            name: _distance(fa.oriented(name), fb.bits) for name in ORIENTATION_NAMES[1:]
        },
    )
    kind = _kind(a, b, fa, fb, result, radius)
    if kind is not None:
        result.kind, result.match_distance = kind, result.distance
        return result
    reach = min(radius, ORIENTATION_RADIUS)
    turned = sorted((d, name) for name, d in result.orientations.items()
                    if name in orientations_for(chosen) and d <= reach)  # fmt: skip
    if turned:
        picture_a, picture_b = comparison_picture(a), comparison_picture(b)
        for distance, name in turned:
            if fa.low_information or fb.low_information:
                break
            if not confirms_turned(fa.thumbnail, fb.thumbnail, ORIENTATIONS[name]):
                continue  # as the index decides it (matching.py, fingerprint/detail.py)
            if turn_correlation(picture_a, picture_b, name) >= TURN_MIN_CORRELATION:
                result.kind, result.transform, result.match_distance = "near", name, distance
                break
    if "crop" in chosen:
        _compare_crops(result, a, b, fa, fb)
    return result


def _kind(a, b, fa: Fingerprint, fb: Fingerprint, result: Comparison, radius: int) -> str | None:
    """As the index decides it (Matcher.kind, then the second look of fingerprint/detail.py:
    a low-information picture is never near, and the thumbnails must agree)."""
    if fa.digest == fb.digest:
        return "exact"
    same_size = (fa.width, fa.height) == (fb.width, fb.height)
    if (
        result.full_distance == 0
        and same_size
        and may_share_pixels(fa.format, fa.thumbnail, fb.format, fb.thumbnail)
        and same_pixels(a, b)
    ):
        return "pixel"
    if result.distance > radius:
        return None
    allowed = near_allowed(fa.low_information, fa.thumbnail, fb.low_information, fb.thumbnail)
    return "near" if allowed else None


def _compare_crops(result: Comparison, a, b, fa: Fingerprint, fb: Fingerprint) -> None:
    """Crop candidates both ways, as the index proposes them, and the pixel confirmation."""
    a_is_crop = min(_distance(fa.bits, bits) for bits in fb.crops)  # A inside B
    b_is_crop = min(_distance(fb.bits, bits) for bits in fa.crops)  # B inside A
    query_is_crop = a_is_crop <= b_is_crop
    distance = min(a_is_crop, b_is_crop)
    evidence = crop_evidence(comparison_picture(a), comparison_picture(b), query_is_crop)
    name = "crop" if query_is_crop else "uncrop"
    result.crop = {
        "as": name,
        "distance": distance,
        "correlation": round(evidence.correlation, 3),
        "detail": round(evidence.detail, 3),
    }
    if result.kind is None and distance <= CROP_RADIUS and evidence.confirmed:
        result.kind, result.transform, result.match_distance = "near", name, distance


def _distance(x: int, y: int) -> int:
    return (x ^ y).bit_count()


def _plain_distance(method, a, b) -> int:
    try:
        with (
            Image.open(a, formats=readable_formats(a)) as img_a,
            Image.open(b, formats=readable_formats(b)) as img_b,
        ):
            return int(method(img_a) - method(img_b))
    except (OSError, ValueError) as error:  # already fingerprinted: only a plain quirk here
        raise UnreadableFile(os.fsdecode(a), f"imagehash cannot read it: {error}") from error
