"""Matches through a transform (`--transforms rotate,flip,crop`): candidates, then confirmation.

Turned and mirrored copies: the query's orientation hashes (its 32x32 hash input turned
back) are looked up in the substring tables. Turning the 32x32 input is exact up to the copy's own
re-encoding, so a true copy lands within ORIENTATION_RADIUS; a wider radius would only
collect pictures of the same texture or composition turned (a brick wall, the edge of a
fundus photo). Cropped copies: store/crops.py. Every candidate is confirmed on pixels
(fingerprint/confirm.py) before it is reported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from PIL import Image

from dupwatch.index.errors import FingerprintError
from dupwatch.index.fingerprint.confirm import (
    TURN_MIN_CORRELATION,
    crop_evidence,
    turn_correlation,
)
from dupwatch.index.fingerprint.file import Fingerprint, comparison_picture
from dupwatch.index.fingerprint.transforms import orientations_for
from dupwatch.index.store.crops import CROP_RADIUS, CropTable
from dupwatch.index.store.environment import Store
from dupwatch.index.store.records import FileRecord, u64
from dupwatch.index.store.substrings import SubstringIndex

if TYPE_CHECKING:
    import lmdb

log = logging.getLogger(__name__)

ORIENTATION_RADIUS = 4  # of 64 bits; turned copies in dupbench: 87% at 0, all within 4


class Searched(Protocol):
    """What is searched: the Index's store, hash search, transforms and crop table."""

    store: Store
    hashes: SubstringIndex
    transforms: frozenset[str]
    crop_table: CropTable | None


@dataclass(frozen=True, slots=True)
class Found:
    record: FileRecord
    distance: int
    transform: str  # an orientation name, "crop" (the query is a crop) or "uncrop"


class _Pictures:
    """Decodes for confirmation, each file at most once per query."""

    def __init__(self, path: bytes) -> None:
        self.path = path
        self._query: Image.Image | None = None

    @property
    def query(self) -> Image.Image:
        if self._query is None:
            self._query = comparison_picture(self.path)
        return self._query

    def confirm(self, record: FileRecord, check: Callable[[Image.Image], bool]) -> bool:
        try:
            return check(comparison_picture(record.path))
        except FingerprintError as error:
            log.debug("candidate not confirmed: %s", error)
            return False


def transformed_matches(
    index: Searched,
    txn: lmdb.Transaction,
    fp: Fingerprint,
    path: bytes | None,
    radius: int,
    seen: set[int],
) -> list[Found]:
    """Files that `fp` (the file at `path`) duplicates turned, mirrored or cropped, one per
    file, confirmed on pixels; files in `seen` (already matched as they are) are skipped.
    Without a path there is nothing to confirm with, so nothing is returned."""
    if path is None:
        return []
    pictures = _Pictures(path)
    found: dict[int, Found] = {}
    for file_id, (distance, name) in _orientation_candidates(index, txn, fp, radius).items():
        record = _candidate(index, txn, file_id, seen, path)
        if record is None:
            continue
        if pictures.confirm(record, lambda other, name=name: turn_correlation(
                pictures.query, other, name) >= TURN_MIN_CORRELATION):  # fmt: skip
            found[file_id] = Found(record, distance, name)
    if index.crop_table is not None:
        skip = seen | set(found)
        for file_id, (distance, query_is_crop) in _crop_candidates(index, txn, fp).items():
            record = _candidate(index, txn, file_id, skip, path)
            if record is None:
                continue
            if pictures.confirm(record, lambda other, q=query_is_crop: crop_evidence(
                    pictures.query, other, q).confirmed):  # fmt: skip
                found[file_id] = Found(record, distance, "crop" if query_is_crop else "uncrop")
    return list(found.values())


def _candidate(
    index: Searched, txn: lmdb.Transaction, file_id: int, seen: set[int], path: bytes
) -> FileRecord | None:
    if file_id in seen:
        return None
    record = index.store.record(txn, file_id)
    return None if record is None or record.path == path else record


def _orientation_candidates(
    index: Searched, txn: lmdb.Transaction, fp: Fingerprint, radius: int
) -> dict[int, tuple[int, str]]:
    """file id -> (distance, orientation) of the closest orientation hash."""
    candidates: dict[int, tuple[int, str]] = {}
    for name in orientations_for(index.transforms):
        bits = fp.oriented(name)
        for distance, near in index.hashes.find(bits, min(radius, ORIENTATION_RADIUS), txn=txn):
            for file_id in index.store.ids(txn, b"by_hash", u64(near)):
                candidates[file_id] = min(candidates.get(file_id, (65, name)), (distance, name))
    return candidates


def _crop_candidates(
    index: Searched, txn: lmdb.Transaction, fp: Fingerprint
) -> dict[int, tuple[int, bool]]:
    """file id -> (distance, the query is a crop of it): the query's crop hashes against the
    indexed hashes (an indexed file is a crop of the query), and the query's hash against
    the indexed crop hashes (the query is a crop of an indexed file)."""
    candidates: dict[int, tuple[int, bool]] = {}
    for crop_bits in set(fp.crops):
        for distance, near in index.hashes.find(crop_bits, CROP_RADIUS, txn=txn):
            for file_id in index.store.ids(txn, b"by_hash", u64(near)):
                candidates[file_id] = min(candidates.get(file_id, (65, False)), (distance, False))
    assert index.crop_table is not None
    for distance, file_id in index.crop_table.find(fp.bits, CROP_RADIUS):
        candidates[file_id] = min(candidates.get(file_id, (65, True)), (distance, True))
    return candidates
