"""How one file is stored: the record of a file, the record of a file that failed, and the
keys (big-endian ids, hashed paths) of the index's tables."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from hashlib import blake2b


def u64(value: int) -> bytes:
    """Big-endian, so LMDB's byte order is numeric order."""
    return value.to_bytes(8, "big")


def from_u64(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def path_key(path: bytes) -> bytes:
    return blake2b(path, digest_size=16).digest()


def pair_key(digest_a: bytes, digest_b: bytes) -> bytes:
    """The table key of a pair, the same whichever way round it is given.

    >>> pair_key(b"b", b"a") == pair_key(b"a", b"b") == b"ab"
    True
    """
    return min(digest_a, digest_b) + max(digest_a, digest_b)


@dataclass(frozen=True, slots=True)
class FileRecord:
    """What the index knows of one file."""

    id: int
    path: bytes
    dev: int
    ino: int
    size: int
    mtime_ns: int
    bits: int
    digest: bytes
    width: int
    height: int
    format: str
    # Of the fully decoded pixels; computed only when needed to tell a `pixel` match.
    pixel_digest: bytes = bytes(16)
    centre: int | None = None  # the centre region's pHash (Fingerprint.centre)
    # What the pHash cannot see (fingerprint/detail.py): too little in the picture for a near
    # match; the 16x16 grey thumbnail that confirms near matches (b"" when unknown).
    low_information: bool = False
    thumbnail: bytes = b""
    framed: bool = False  # inside borders or a screenshot's frame (Fingerprint.framed)
    # The pHash of the picture turned back by each orientation but identity (Fingerprint
    # orientations[1:]), so that --transforms rotate,flip can pair files already indexed.
    orientations: tuple[int, ...] = ()

    @property
    def has_pixel_digest(self) -> bool:
        return self.pixel_digest != bytes(16)

    @property
    def fspath(self) -> str:
        """The path as str; names that are not UTF-8 keep their bytes as surrogates."""
        return os.fsdecode(self.path)

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def has_stat(self, st: os.stat_result) -> bool:
        """True when the file on disk still has the stat it was indexed with: same device,
        inode, size and mtime, so its fingerprint still describes it."""
        return (self.dev, self.ino, self.size, self.mtime_ns) == (
            st.st_dev,
            st.st_ino,
            st.st_size,
            st.st_mtime_ns,
        )


# dev, ino, size, mtime_ns, bits, centre, whether the centre is known, digest, pixel digest,
# width, height, format length, detail flags, thumbnail, the 7 turned hashes; then the format
# and the path.
_HEAD = (
    ("dev", "Q"), ("ino", "Q"), ("size", "Q"), ("mtime_ns", "q"), ("bits", "Q"),
    ("centre", "Q"), ("has_centre", "?"), ("digest", "16s"), ("pixels", "16s"),
    ("width", "I"), ("height", "I"), ("fmt_len", "B"), ("flags", "B"), ("thumbnail", "256s"),
    ("turns", "7Q"),
)  # fmt: skip
_RECORD = struct.Struct("<" + "".join(code for _, code in _HEAD))
# Where each field of the head starts, and its struct code: for readers of many records at
# once as arrays (pair_arrays.Catalog.read), which need no FileRecord each.
HEAD_FIELDS = {
    name: (struct.calcsize("<" + "".join(code for _, code in _HEAD[:i])), code)
    for i, (name, code) in enumerate(_HEAD)
}
LOW_INFORMATION, FRAMED, DETAIL_KNOWN = 1, 2, 4  # detail flags
_FLAGS_AT = HEAD_FIELDS["flags"][0]
_THUMBNAIL_AT = HEAD_FIELDS["thumbnail"][0]
_THUMBNAIL_SIZE = struct.calcsize(HEAD_FIELDS["thumbnail"][1])
_NO_TURNS = (0,) * 7


def encode_record(record: FileRecord) -> bytes:
    fmt = record.format.encode("ascii", "replace")[:255]
    head = _RECORD.pack(
        record.dev,
        record.ino,
        record.size,
        record.mtime_ns,
        record.bits,
        record.centre or 0,
        record.centre is not None,
        record.digest,
        record.pixel_digest,
        record.width,
        record.height,
        len(fmt),
        _flags(record),
        record.thumbnail,
        *(record.orientations or _NO_TURNS),
    )
    return head + fmt + record.path


def detail_known(record: FileRecord) -> bool:
    """Whether the record's detail (thumbnail, turned hashes) is stored and read back: records
    of schema 3 and before, and fingerprints made without it, have none."""
    return bool(record.thumbnail and record.orientations)


def _flags(record: FileRecord) -> int:
    known = DETAIL_KNOWN if detail_known(record) else 0
    low = LOW_INFORMATION if record.low_information else 0
    return known | low | (FRAMED if record.framed else 0)


def encoded_thumbnail(raw: bytes) -> bytes:
    """The thumbnail decode_record would give, read from the encoded record alone."""
    if not raw[_FLAGS_AT] & DETAIL_KNOWN:
        return b""
    return bytes(raw[_THUMBNAIL_AT : _THUMBNAIL_AT + _THUMBNAIL_SIZE])


def decode_record(file_id: int, raw: bytes, *, detail: bool = True) -> FileRecord:
    """The record stored as `raw`; with `detail=False` without its thumbnail and turned
    hashes (~600 of its ~1,400 bytes in memory), for lists of many files that show them."""
    (dev, ino, size, mtime_ns, bits, centre, has_centre, digest, pixels, width, height,
     fmt_len, flags, thumbnail, *turns) = _RECORD.unpack_from(raw)  # fmt: skip
    fmt_end = _RECORD.size + fmt_len
    fmt = bytes(raw[_RECORD.size : fmt_end]).decode("ascii")
    path = bytes(raw[fmt_end:])
    known = detail and bool(flags & DETAIL_KNOWN)
    return FileRecord(
        file_id, path, dev, ino, size, mtime_ns, bits, digest, width, height, fmt, pixels,
        centre if has_centre else None, bool(flags & LOW_INFORMATION),
        thumbnail if known else b"", bool(flags & FRAMED), tuple(turns) if known else (),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Failure:
    """A file that could not be fingerprinted, remembered with its stat so that it is
    tried again only when it changes."""

    path: bytes
    dev: int
    ino: int
    size: int
    mtime_ns: int
    reason: str


_FAILURE = struct.Struct("<QQQqH")


def encode_failure(failure: Failure) -> bytes:
    reason = failure.reason.encode("utf-8", "replace")[:1000]
    head = _FAILURE.pack(failure.dev, failure.ino, failure.size, failure.mtime_ns, len(reason))
    return head + reason + failure.path


def decode_failure(raw: bytes) -> Failure:
    dev, ino, size, mtime_ns, reason_len = _FAILURE.unpack_from(raw)
    end = _FAILURE.size + reason_len
    reason = bytes(raw[_FAILURE.size : end]).decode("utf-8", "replace")
    return Failure(bytes(raw[end:]), dev, ino, size, mtime_ns, reason)
