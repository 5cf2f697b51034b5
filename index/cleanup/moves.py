"""Moving one file without ever losing it: a hard link then an unlink on one file system,
a copy whose digest is checked before the source goes across file systems, and never over
a file that is already there."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil

from dupwatch.index.errors import DupwatchError

DIGEST_SIZE = 16  # blake2b, as the index's content digest
_CHUNK = 1 << 20
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS}


class QuarantineError(DupwatchError):
    """A move was refused or failed; the message names the file and the cause."""


class PathTaken(QuarantineError):
    """The destination path exists: dupwatch never overwrites a file."""


def move_file(source: bytes, dest: bytes, *, expected: bytes | None = None) -> None:
    """Move `source` to `dest` (made with its folders), never replacing a file.

    On one device the file is linked and unlinked (the same inode, no byte copied);
    across devices it is copied, the copy's digest checked against the source's (and
    `expected`, when given), and only then the source removed. Raises PathTaken when
    `dest` exists, QuarantineError when the bytes do not check out, OSError otherwise.
    """
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    if os.lstat(source).st_dev != os.stat(parent).st_dev:
        _copy_check_remove(source, dest, expected)
        return
    try:
        os.link(source, dest, follow_symlinks=False)
    except FileExistsError:
        raise PathTaken(f"{os.fsdecode(dest)}: a file is already there") from None
    except OSError as error:
        if error.errno == errno.EXDEV:
            _copy_check_remove(source, dest, expected)
            return
        if error.errno not in _NO_HARD_LINKS:
            raise
        _rename_if_free(source, dest)  # a file system without hard links
        return
    os.unlink(source)


def _link_or_rename(partial: bytes, dest: bytes) -> None:
    """Give the checked copy its name, without replacing a file that appeared meanwhile."""
    try:
        os.link(partial, dest)
    except FileExistsError:
        raise PathTaken(f"{os.fsdecode(dest)}: a file is already there") from None
    except OSError as error:
        if error.errno not in _NO_HARD_LINKS:
            raise
        _rename_if_free(partial, dest)  # FAT and other file systems without hard links


def _rename_if_free(source: bytes, dest: bytes) -> None:
    if os.path.lexists(dest):
        raise PathTaken(f"{os.fsdecode(dest)}: a file is already there")
    os.rename(source, dest)


def _copy_check_remove(source: bytes, dest: bytes, expected: bytes | None) -> None:
    if os.path.lexists(dest):
        raise PathTaken(f"{os.fsdecode(dest)}: a file is already there")
    partial = dest + b".dupwatch-partial"
    copied = _copy(source, partial)
    try:
        if expected is not None and copied != expected:
            raise QuarantineError(f"{os.fsdecode(source)}: its bytes changed since it was indexed")
        if file_digest(partial) != copied:
            raise QuarantineError(f"{os.fsdecode(dest)}: the copy does not match its source")
        shutil.copystat(source, partial)
        _link_or_rename(partial, dest)  # never replaces a file that appeared meanwhile
    finally:
        if os.path.lexists(partial):
            os.unlink(partial)  # our own temporary copy, never a user's file
    _fsync_folder(os.path.dirname(dest))
    os.unlink(source)


def _copy(source: bytes, dest: bytes) -> bytes:
    """Copy the bytes and fsync them; return the digest of what was read."""
    digest = hashlib.blake2b(digest_size=DIGEST_SIZE)
    with open(source, "rb") as src, open(dest, "xb") as out:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return digest.digest()


def file_digest(path: bytes) -> bytes:
    """The blake2b digest of a file's bytes, as the index computes it."""
    digest = hashlib.blake2b(digest_size=DIGEST_SIZE)
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.digest()


def _fsync_folder(folder: bytes) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
