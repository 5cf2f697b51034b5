"""Pixel digests made ahead, by the hashing engine, for the files about to be written.

Storing a file whose pHash equals an indexed file's of the same size, with other bytes,
needs both files' pixel digests (a full decode each, ten times a fingerprint) to tell a
`pixel` copy from a `near` one. Made inside the write transaction, in the one writer, those
decodes were most of a scan's critical path on a folder with many copies. Here the writer
names them as soon as a batch of fingerprints arrives, the engine's processes decode them
beside the hashing, and the digests are in PixelDigests' cache by the time the batch is
written: the same digests, the same kinds, off the critical path. Anything the engine could
not give (a worker died) is decoded by the writer as before (matching.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from dupwatch.index.fingerprint.file import match_distance
from dupwatch.index.fingerprint.pixels import may_share_pixels
from dupwatch.index.store.records import u64

if TYPE_CHECKING:
    import lmdb

    from dupwatch.index.fingerprint.file import Fingerprint
    from dupwatch.index.hashing.engine import PixelJob
    from dupwatch.index.pixel_digests import PixelDigests
    from dupwatch.index.store.environment import Store
    from dupwatch.index.store.records import FileRecord

Hashed = tuple[bytes, "Fingerprint", "os.stat_result"]


class PixelEngine(Protocol):
    """Whatever decodes pixel digests elsewhere: a hashing engine, the service's processes."""

    def pixel_digests(self, paths: list[bytes]) -> PixelJob: ...


class _PairRadius(Protocol):
    def radius(self, txn: lmdb.Transaction) -> int: ...


class Prefetched(Protocol):
    """What PixelPrefetch reads of the Index."""

    @property
    def store(self) -> Store: ...
    @property
    def radius(self) -> int: ...
    @property
    def pixels(self) -> PixelDigests: ...
    @property
    def pairs(self) -> _PairRadius: ...


class PixelPrefetch:
    """Start, for each batch of fingerprints about to be written, the pixel digests their
    writing will ask for; `provide()` puts the finished ones in the index's cache."""

    def __init__(self, index: Prefetched, engine: PixelEngine) -> None:
        self.index = index
        self.engine = engine
        # Fingerprints not written yet, by pHash: a copy may arrive in the same burst.
        self._unwritten: dict[int, list[tuple[bytes, Fingerprint]]] = {}
        self._jobs: list[tuple[PixelJob, dict[bytes, bytes]]] = []

    def start(self, hashed: Iterable[Hashed]) -> None:
        """Name and start the decodes that writing `hashed` will need."""
        wanted: dict[bytes, bytes] = {}  # path -> its content digest
        store = self.index.store
        with store.read() as txn:
            # The radius Index._put matches at: a candidate farther than it is never compared.
            radius = max(self.index.radius, self.index.pairs.radius(txn))
            for path, fp, _st in hashed:
                for other_path, other in self._unwritten.get(fp.bits, ()):
                    if _compared(fp, other, radius):
                        wanted[path] = fp.digest
                        wanted[other_path] = other.digest
                for file_id in store.ids(txn, b"by_hash", u64(fp.bits)):
                    record = store.record(txn, file_id)
                    if record is None or record.path == path:
                        continue
                    if not _compared(fp, record, radius):
                        continue
                    wanted[path] = fp.digest
                    if not record.has_pixel_digest and _unchanged(record):
                        wanted[record.path] = record.digest
                self._unwritten.setdefault(fp.bits, []).append((path, fp))
        pixels = self.index.pixels
        todo = {p: d for p, d in wanted.items() if pixels.known(d) is None}
        if todo:
            self._jobs.append((self.engine.pixel_digests(sorted(todo)), todo))

    def provide(self) -> None:
        """Wait for the decodes started so far and hand their digests to the index (call
        just before writing what was started)."""
        pixels = self.index.pixels
        for job, digests in self._jobs:
            made = job.result()
            for path, content_digest in digests.items():
                if path in made:
                    pixels.provide(content_digest, made[path])
        self._jobs.clear()
        self._unwritten.clear()


def _compared(fp: Fingerprint, other: Fingerprint | FileRecord, radius: int) -> bool:
    """True when the Index will compare the pixels of `fp`'s file and of `other` (a
    fingerprint or a record with the same pHash): matching.Matcher.kind."""
    if other.digest == fp.digest or (other.width, other.height) != (fp.width, fp.height):
        return False
    if not may_share_pixels(fp.format, fp.thumbnail, other.format, other.thumbnail):
        return False
    return match_distance(0, fp.centre, other.centre) <= radius


def _unchanged(record: FileRecord) -> bool:
    """True when the indexed file still has its record's stat: only then are its pixels the
    record's content (as PixelDigests.of_record decides)."""
    try:
        return record.has_stat(os.stat(record.path))
    except OSError:
        return False
