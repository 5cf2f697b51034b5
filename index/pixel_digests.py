"""Telling a `pixel` match from a `near` one: digests of fully decoded pixels.

A full decode costs ten times a fingerprint, so a file's pixel digest is made only when a
same-size file with the same perceptual hash but other bytes arrives, at most once per
content (kept in memory by content digest, and in the file's record once written).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable

import lmdb

from dupwatch.index.errors import FingerprintError
from dupwatch.index.fingerprint.pixels import pixel_digest
from dupwatch.index.store.environment import Store
from dupwatch.index.store.records import FileRecord, encode_record, u64

log = logging.getLogger(__name__)

CACHE_SIZE = 4096  # contents (32 bytes each): a write batch's digests made ahead stay in it


class PixelDigests:
    def __init__(self, store: Store) -> None:
        self.store = store
        # How a file's pixel digest is made: here, or (the service) in a hashing process.
        # Raises FingerprintError.
        self.decode: Callable[[bytes], bytes] = pixel_digest
        self._by_content: OrderedDict[bytes, bytes | None] = OrderedDict()
        self._lock = threading.Lock()  # the writer thread and readers share the cache

    def of_file(self, path: bytes, content_digest: bytes) -> bytes | None:
        """The pixel digest of the file at `path`, whose bytes have `content_digest`;
        None when it cannot be decoded."""
        with self._lock:
            if content_digest in self._by_content:
                self._by_content.move_to_end(content_digest)
                return self._by_content[content_digest]
        try:
            digest: bytes | None = self.decode(path)
        except FingerprintError as error:
            log.debug("pixel comparison skipped: %s", error)
            digest = None
        with self._lock:
            self._by_content[content_digest] = digest
            while len(self._by_content) > CACHE_SIZE:
                self._by_content.popitem(last=False)
        return digest

    def provide(self, content_digest: bytes, digest: bytes | None) -> None:
        """The pixel digest of this content, made elsewhere (dupwatch.index.prefetch)."""
        with self._lock:
            self._by_content[content_digest] = digest
            self._by_content.move_to_end(content_digest)
            while len(self._by_content) > CACHE_SIZE:
                self._by_content.popitem(last=False)

    def known(self, content_digest: bytes) -> bytes | None:
        """The digest already made for this content, without decoding anything."""
        with self._lock:
            return self._by_content.get(content_digest)

    def of_record(
        self, txn: lmdb.Transaction, record: FileRecord, *, writable: bool
    ) -> bytes | None:
        """The pixel digest of an indexed file, made (and stored when `writable`) on first
        need; None when the file changed since it was indexed or cannot be decoded."""
        if record.has_pixel_digest:
            return record.pixel_digest
        try:
            st = os.stat(record.path)
        except OSError:
            return None
        if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != (
            record.dev,
            record.ino,
            record.size,
            record.mtime_ns,
        ):
            return None  # not the bytes the record describes
        digest = self.of_file(record.path, record.digest)
        if digest is not None and writable:
            updated = dataclasses.replace(record, pixel_digest=digest)
            txn.put(u64(record.id), encode_record(updated), db=self.store.dbs[b"files"])
        return digest
