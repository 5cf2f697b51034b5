"""Reading an image file safely: its bytes, without blocking or overrunning a limit, and its
picture through Pillow, upright (EXIF orientation) and as 8-bit grayscale.

Whatever goes wrong ends in a FingerprintError subclass that names the file and the cause.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import stat
import struct
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import numpy as np
from PIL import Image, UnidentifiedImageError

from dupwatch.index.errors import (
    NOT_AN_IMAGE,
    DecompressionBomb,
    EmptyFile,
    FingerprintError,
    MissingFile,
    NotAnImage,
    TooLarge,
    TruncatedImage,
    UnreadableFile,
)
from dupwatch.index.fingerprint.formats import formats_for, looks_like_image
from dupwatch.index.fingerprint.geometry import thumbnail_factor

try:  # HEIC/AVIF through the optional extra `dupwatch[heif]`
    import pillow_heif
except ImportError:
    pillow_heif = None
else:
    pillow_heif.register_heif_opener()

log = logging.getLogger(__name__)

FilePath = str | bytes | os.PathLike[str] | os.PathLike[bytes]

DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
# The hashes' thumbnail is reduced by the shorter side only, and each of its ~30 Lanczos
# resizes costs time and memory in proportion to its long side: a 716-byte TIFF declaring
# 1x1,280,736 took 9 s, 1x50,000,000 a MemoryError, a JPEG declaring 255x25,500 1.5 s. Past
# this long side (~1 s) a picture is refused; a 1000x100000 strip is still hashed.
MAX_THUMBNAIL_LONG_SIDE = 16_384

# What Pillow's decoders raise on corrupt or truncated data (its own Image.open swallows the
# same family while probing formats; the AVIF decoder raises RuntimeError).
DECODE_ERRORS = (
    OSError,
    RuntimeError,
    SyntaxError,
    ValueError,
    struct.error,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
)

_EXIF_ORIENTATION = 0x0112
_TRANSPOSE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})

# warnings.catch_warnings swaps a process-global list; serialise our own uses of it so two
# threads cannot restore each other's filters and leave one behind. Re-entrant: noted_warnings
# holds it around open_image's own.
_warnings_lock = threading.RLock()


def read_bytes(path: FilePath, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The whole content of a regular file, read without ever blocking on a FIFO or device.

    Raises MissingFile, UnreadableFile, EmptyFile or TooLarge naming the file.
    """
    try:
        st = os.stat(path)
        _check_regular(path, st, max_bytes)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as error:
        raise _from_os_error(path, error) from error
    try:
        st = os.fstat(fd)  # the path may have been replaced between stat and open
        _check_regular(path, st, max_bytes)
        data = _read_fd(path, fd, st.st_size, max_bytes)
    except OSError as error:
        raise _from_os_error(path, error) from error
    finally:
        os.close(fd)
    if not data:
        raise EmptyFile(path, "zero bytes")
    return data


def _check_regular(path: FilePath, st: os.stat_result, max_bytes: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise UnreadableFile(path, f"not a regular file ({_file_kind(st.st_mode)})")
    if st.st_size == 0:
        raise EmptyFile(path, "zero bytes")
    if st.st_size > max_bytes:
        raise TooLarge(path, f"too large: {st.st_size:,} bytes, over the limit of {max_bytes:,}")


def _read_fd(path: FilePath, fd: int, size_hint: int, max_bytes: int) -> bytes:
    chunks = [os.read(fd, size_hint + 1)]  # one read for a file that does not grow
    total = len(chunks[0])
    while chunks[-1]:
        if total > max_bytes:
            raise TooLarge(path, f"too large: over the limit of {max_bytes:,} bytes")
        chunks.append(os.read(fd, 1 << 20))
        total += len(chunks[-1])
    return chunks[0] if len(chunks) <= 2 else b"".join(chunks)


def _file_kind(mode: int) -> str:
    kinds = {
        stat.S_ISDIR: "a directory",
        stat.S_ISFIFO: "a FIFO",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISSOCK: "a socket",
    }
    return next((name for test, name in kinds.items() if test(mode)), "a special file")


def _from_os_error(path: FilePath, error: OSError) -> FingerprintError:
    if error.errno in (errno.ENOENT, errno.ENOTDIR):
        return MissingFile(path, "no such file")
    if error.errno in (errno.EACCES, errno.EPERM):
        return UnreadableFile(path, "permission denied")
    if error.errno == errno.EISDIR:
        return UnreadableFile(path, "not a regular file (a directory)")
    return UnreadableFile(path, f"cannot read: {error.strerror or error}")


@contextmanager
def noted_warnings() -> Iterator[list[str]]:
    """Collect what Pillow (or numpy) warns while one file is decoded, each distinct message
    once, for the file's notes, instead of printing it on stderr."""
    notes: list[str] = []
    with _warnings_lock, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield notes
        finally:
            for warning in caught:
                text = str(warning.message)
                if text not in notes:
                    notes.append(text)


@contextmanager
def decoding(path: FilePath, data: bytes) -> Iterator[None]:
    """Turn whatever Pillow raises on bad bytes into a FingerprintError naming the file."""
    try:
        yield
    except FingerprintError:
        raise
    except Image.DecompressionBombError as error:
        raise DecompressionBomb(path, f"decompression bomb: {error}") from error
    except UnidentifiedImageError as error:
        if looks_like_image(data):
            reason = "truncated or corrupt image data: the header cannot be read"
            raise TruncatedImage(path, reason) from error
        raise NotAnImage(path, f"{NOT_AN_IMAGE} (unrecognised format)") from error
    except DECODE_ERRORS as error:
        reason = f"truncated or corrupt image data: {error or type(error).__name__}"
        raise TruncatedImage(path, reason) from error


def open_image(path: FilePath, data: bytes, max_pixels: int | None) -> Image.Image:
    """Open (not decode) the image; refuse it when it declares more than max_pixels.

    The source is in memory, so there is no file to close afterwards.
    """
    with _warnings_lock, warnings.catch_warnings():
        # Our own check below is the limit; Pillow's warning would only print.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(io.BytesIO(data), formats=readable_formats(path))
    width, height = img.size
    if max_pixels is not None and width * height > max_pixels:
        reason = (
            f"decompression bomb: {width}x{height} = {width * height:,} pixels,"
            f" over the limit of {max_pixels:,}"
        )
        raise DecompressionBomb(path, reason)
    if max(width, height) // thumbnail_factor((width, height)) > MAX_THUMBNAIL_LONG_SIDE:
        reason = f"decompression bomb: {width}x{height} is too elongated to hash at a bounded cost"
        raise DecompressionBomb(path, reason)
    return img


def decode_upright(path: FilePath, max_pixels: int | None) -> Image.Image:
    """The whole picture, decoded in full (no draft) and turned upright."""
    data = read_bytes(path)
    with decoding(path, data):
        img = open_image(path, data, max_pixels)
        img.load()
        return transpose(img, orientation_of(img))


def orientation_of(img: Image.Image) -> int:
    """The EXIF orientation (1-8), 1 when absent or unreadable: bad EXIF must not lose a photo."""
    try:
        value = img.getexif().get(_EXIF_ORIENTATION, 1)
    except DECODE_ERRORS as error:
        log.debug("ignoring unreadable EXIF: %s", error)
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE_FOR_ORIENTATION else 1


def upright_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    width, height = size
    return (height, width) if orientation >= 5 else (width, height)


def transpose(img: Image.Image, orientation: int) -> Image.Image:
    method = _TRANSPOSE_FOR_ORIENTATION.get(orientation)
    return img if method is None else img.transpose(method)


def to_gray(path: FilePath, img: Image.Image) -> Image.Image:
    """The loaded image as 8-bit grayscale: imagehash's convert('L'), but 16-bit is scaled.

    Pillow's convert('L') clips 16-bit values at 255, which would hash most 16-bit pictures
    as white.
    """
    if img.mode in SIXTEEN_BIT_MODES:
        wide = np.asarray(img.convert("I"), dtype=np.int64)
        return Image.fromarray((np.clip(wide, 0, 65535) // 257).astype(np.uint8), "L")
    if img.mode == "LAB":
        return img.getchannel("L")
    if img.mode == "L":
        return img  # a JPEG drafted as "L" is already gray: convert() would only copy it
    try:
        return img.convert("L")  # already loaded: a ValueError here is about the mode
    except ValueError as error:
        reason = f"{NOT_AN_IMAGE} dupwatch can read: pixel mode {img.mode} has no grayscale"
        raise NotAnImage(path, reason) from error


def readable_formats(path: FilePath) -> tuple[str, ...]:
    """The Pillow decoders allowed to read the file at `path` (formats.formats_for), those
    this Pillow has: pass them as Image.open(..., formats=) wherever a file is opened."""
    return _available(formats_for(path))


@cache
def _available(wanted: tuple[str, ...]) -> tuple[str, ...]:
    Image.init()
    return tuple(name for name in wanted if name in Image.OPEN)
