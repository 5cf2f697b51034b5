"""Which files in a folder dupwatch looks at, and walking folders with bytes paths."""

from __future__ import annotations

import fnmatch
import logging
import os
import stat
from collections.abc import Callable, Iterable, Iterator

from dupwatch.index.fingerprint.formats import file_starts_like_image, name_says_image

log = logging.getLogger(__name__)

# Names a download or an editor uses while a file is still being written.
DEFAULT_IGNORE = ("*.part", "*.crdownload", "*.tmp", ".~*", ".*")


def is_ignored(name: bytes | str, ignore: Iterable[str] = DEFAULT_IGNORE) -> bool:
    text = os.fsdecode(name)
    return any(fnmatch.fnmatchcase(text, pattern) for pattern in ignore)


def is_candidate(path: bytes | str, ignore: Iterable[str] = DEFAULT_IGNORE) -> bool:
    """True for a file to fingerprint: not a temporary or hidden name, and an image by its
    name, or by its first bytes when the name does not say (formats.py)."""
    name = os.path.basename(os.fsencode(path))
    says = name_says_image(name)
    if says is False or is_ignored(name, ignore):
        return False
    return says or file_starts_like_image(path)


def may_be_candidate(path: bytes | str, ignore: Iterable[str] = DEFAULT_IGNORE) -> bool:
    """What is_candidate would say of a file that is gone (its bytes cannot be read): every
    name that could have been an image."""
    name = os.path.basename(os.fsencode(path))
    return name_says_image(name) is not False and not is_ignored(name, ignore)


def absolute(path: str | bytes | os.PathLike) -> bytes:
    """The absolute path as bytes, the form the index stores."""
    return os.path.abspath(os.fsencode(path))


def walk(
    folder: bytes,
    *,
    ignore: Iterable[str] = DEFAULT_IGNORE,
    on_error: Callable[[bytes, OSError], None] | None = None,
) -> Iterator[tuple[bytes, os.stat_result]]:
    """Every candidate image under `folder` with its stat, recursively.

    Symbolic links are not followed: a link can loop or lead out of the folder,
    and the file it points to is indexed where it really lives.
    """
    ignore = tuple(ignore)
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            entries = list(os.scandir(current))
        except OSError as error:
            if on_error is not None:
                on_error(current, error)
            else:
                log.warning("%s: cannot list folder: %s", os.fsdecode(current), error.strerror)
            continue
        for entry in entries:
            # The kind comes with the listing (no stat): only candidates are stat'ed, and a
            # file with a label's or a video's name is never even opened.
            try:
                if entry.is_dir(follow_symlinks=False):
                    if not is_ignored(entry.name, ignore):
                        pending.append(entry.path)
                    continue
                if not entry.is_file(follow_symlinks=False) or not is_candidate(entry.path, ignore):
                    continue
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # gone since the listing
            if stat.S_ISREG(info.st_mode):
                yield entry.path, info


def is_under(path: bytes, folder: bytes) -> bool:
    folder = folder.rstrip(b"/") + b"/"
    return path.startswith(folder)
