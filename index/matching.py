"""Finding the indexed files that duplicate a picture: candidates from the substring tables
(store/substrings.py) by the whole-picture hash, the distance with the centre's second
opinion, the kind of each match (exact, pixel, near), and the matches through a transform
(transformed.py)."""

from __future__ import annotations

from collections.abc import Collection, Iterable

import lmdb

from dupwatch.index.fingerprint.detail import confirms_turned, near_allowed
from dupwatch.index.fingerprint.file import Fingerprint, match_distance
from dupwatch.index.fingerprint.geometry import ORIENTATIONS
from dupwatch.index.fingerprint.pixels import may_share_pixels
from dupwatch.index.matches import Match, best_first
from dupwatch.index.pixel_digests import PixelDigests
from dupwatch.index.store.crops import CropTable
from dupwatch.index.store.environment import Store
from dupwatch.index.store.pairs import Kind
from dupwatch.index.store.records import FileRecord, u64
from dupwatch.index.store.substrings import SubstringIndex
from dupwatch.index.transformed import transformed_matches


def _looks_alike(fp: Fingerprint | None, record: FileRecord) -> bool:
    """The second look at a near candidate (fingerprint/detail.py). A query by hash alone has
    no thumbnail: only the record's own low information is known."""
    if fp is None:
        return not record.low_information
    return near_allowed(fp.low_information, fp.thumbnail, record.low_information, record.thumbnail)


def _turn_looks_alike(fp: Fingerprint, match: Match) -> bool:
    """A turned or mirrored match must also pass the second look, the query's thumbnail
    turned back; crops are confirmed on pixels already."""
    undo = ORIENTATIONS.get(match.transform or "")
    return undo is None or confirms_turned(fp.thumbnail, match.record.thumbnail, undo)


def as_fingerprint(record: FileRecord) -> Fingerprint:
    """What an indexed record keeps of its fingerprint: the hashes of the whole picture and
    turned (no crop regions but the centre), the detail."""
    return Fingerprint(
        record.bits, record.digest, record.width, record.height, record.format, record.size,
        orientations=(record.bits, *record.orientations),
        low_std=0.0 if record.low_information else 100.0,
        thumbnail=record.thumbnail,
    )  # fmt: skip


class Matcher:
    """What one index matches against: its store and hash search, the pixel digests that
    tell a `pixel` match, and the transforms (and crop table) that `--transforms` asks for."""

    def __init__(
        self,
        store: Store,
        hashes: SubstringIndex,
        pixels: PixelDigests,
        transforms: frozenset[str],
        crop_table: CropTable | None,
    ) -> None:
        self.store = store
        self.hashes = hashes
        self.pixels = pixels
        self.transforms = transforms
        self.crop_table = crop_table

    def find(
        self,
        txn: lmdb.Transaction,
        bits: int,
        centre: int | None,
        fp: Fingerprint | None,
        path: bytes | None,
        radius: int,
        *,
        exclude: Collection[int] = (),
        writable: bool = False,
        second_look: bool = True,
        near: Iterable[tuple[int, int]] | None = None,
    ) -> list[Match]:
        """Records within `radius` of the picture whose hashes are `bits` and `centre`
        (match_distance), but those of `exclude`; the hash search proposes them by `bits`
        alone, which is never farther (`near`: its (distance, hash) answer, when a batched
        search found it already). A near match must pass the second look
        (fingerprint/detail.py: neither picture low information, the thumbnails agree)
        unless `second_look` is off (the caller decides the kind itself, and then looks).
        `writable`: `txn` is a write transaction, where pixel digests made on the way are
        kept in their records."""
        found = []
        if near is None:
            near = self.hashes.find(bits, radius, txn=txn)
        for full, near_bits in near:
            for file_id in self.store.ids(txn, b"by_hash", u64(near_bits)):
                if file_id in exclude:
                    continue
                record = self.store.record(txn, file_id)
                if record is None:
                    continue
                distance = match_distance(full, centre, record.centre)
                if distance > radius:
                    continue
                if path is not None and record.path == path:
                    found.append(Match(record, 0, Kind.EXACT, is_self=True))
                else:
                    kind = self.kind(txn, record, fp, path, full, writable)
                    if kind is Kind.NEAR and second_look and not _looks_alike(fp, record):
                        continue
                    found.append(Match(record, distance, kind))
        if fp is not None and self.transforms:
            seen = {m.record.id for m in found} | set(exclude)
            found += self.through_transforms(txn, fp, path, radius, seen)
        return sorted(found, key=best_first)

    def through_transforms(
        self,
        txn: lmdb.Transaction,
        fp: Fingerprint,
        path: bytes | None,
        radius: int,
        seen: set[int],
    ) -> list[Match]:
        """Files that `fp` duplicates turned, mirrored or cropped (index/transformed.py),
        each past the second look; none for a low-information picture."""
        if fp.low_information:
            return []
        found = [
            Match(f.record, f.distance, Kind.NEAR, transform=f.transform)
            for f in transformed_matches(self, txn, fp, path, radius, seen)
        ]
        return [m for m in found if not m.record.low_information and _turn_looks_alike(fp, m)]

    def kind(
        self,
        txn: lmdb.Transaction,
        record: FileRecord,
        fp: Fingerprint | None,
        path: bytes | None,
        full: int,
        writable: bool,
    ) -> Kind:
        """How an indexed record duplicates a fingerprint (of the file at `path`), whose
        whole-picture hashes are `full` apart."""
        if fp is None:
            return Kind.NEAR
        if record.digest == fp.digest:
            return Kind.EXACT
        same_size = (record.width, record.height) == (fp.width, fp.height)
        if (
            full == 0
            and same_size
            and path
            and may_share_pixels(fp.format, fp.thumbnail, record.format, record.thumbnail)
        ):
            mine = self.pixels.of_file(path, fp.digest)
            if mine is not None and mine == self.pixels.of_record(txn, record, writable=writable):
                return Kind.PIXEL
        return Kind.NEAR

    def pair_kind(self, txn: lmdb.Transaction, record: FileRecord, other: FileRecord) -> Kind:
        """How two indexed records duplicate each other (for pairs stored again)."""
        if record.digest == other.digest:
            return Kind.EXACT
        same_size = (record.width, record.height) == (other.width, other.height)
        if (
            record.bits == other.bits
            and same_size
            and may_share_pixels(record.format, record.thumbnail, other.format, other.thumbnail)
        ):
            mine = self.pixels.of_record(txn, record, writable=True)
            if mine is not None and mine == self.pixels.of_record(txn, other, writable=True):
                return Kind.PIXEL
        return Kind.NEAR
