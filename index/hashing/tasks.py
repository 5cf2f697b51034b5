"""What a hashing process runs: for one file its fingerprint (with the stat taken before it
was read) or its pixel digest, within the file's time limit; for a batch, each in turn."""

from __future__ import annotations

import os
import stat

from dupwatch.index.errors import FingerprintError, MissingFile, UnreadableFile
from dupwatch.index.fingerprint.file import fingerprint
from dupwatch.index.fingerprint.pixels import pixel_digest
from dupwatch.index.hashing.engine import Outcome, PixelOutcome
from dupwatch.index.hashing.limits import HASH_TIMEOUT_S, bounded


def hash_file(path: bytes, timeout_s: float | None = HASH_TIMEOUT_S) -> Outcome:
    """Fingerprint one file with the stat taken before reading it, within `timeout_s`.

    The stat comes first so that a file changed while it is read looks changed
    at the next comparison, rather than current with an old hash. A symbolic link
    is not followed (as in walk()): it could lead anywhere.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path, MissingFile(path, "deleted before it could be read"), None
    except OSError as error:
        return path, UnreadableFile(path, error.strerror or str(error)), None
    if stat.S_ISLNK(st.st_mode):
        return path, UnreadableFile(path, "a symbolic link (not followed)"), None
    try:
        with bounded(path, timeout_s):
            return path, fingerprint(path), st
    except FingerprintError as error:
        return path, error, st


def digest_pixels(path: bytes, timeout_s: float | None = HASH_TIMEOUT_S) -> bytes:
    """pixel_digest() within `timeout_s` (a hashing process's job); raises FingerprintError."""
    with bounded(path, timeout_s):
        return pixel_digest(path)


def hash_batch(paths: list[bytes], timeout_s: float | None) -> list[Outcome]:
    """The task a hashing process runs for a batch: hash_file() of each, each in its limit."""
    return [hash_file(path, timeout_s) for path in paths]


def digest_batch(paths: list[bytes], timeout_s: float | None) -> list[PixelOutcome]:
    """The task a hashing process runs for pixel digests: None for a file that cannot be
    decoded (the writer then compares it as `near`, as when it decodes it itself)."""
    done: list[PixelOutcome] = []
    for path in paths:
        try:
            done.append((path, digest_pixels(path, timeout_s)))
        except FingerprintError:
            done.append((path, None))
    return done
