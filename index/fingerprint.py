"""Fingerprints of image files: a blake2b digest of the bytes and a 64-bit pHash of the pixels.

The pHash is imagehash.phash's, of the picture inside its uniform borders (letterbox bars and
padding are trimmed on a small thumbnail first). The fingerprint also carries the pHash of the
picture's eight orientations and of a few sub-regions, which --transforms rotate,flip,crop use.

Imports Pillow, numpy and (lazily) scipy.fftpack; starts no threads, opens no sockets.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import stat
import struct
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from dupwatch.index import transforms
from dupwatch.index.errors import (
    DecompressionBomb,
    EmptyFile,
    FingerprintError,
    MissingFile,
    NotAnImage,
    TooLarge,
    TruncatedImage,
    UnreadableFile,
)

if TYPE_CHECKING:
    from numpy.typing import NDArray

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
HASH_SIZE = 8
HIGHFREQ_FACTOR = 4
HASH_INPUT_SIZE = HASH_SIZE * HIGHFREQ_FACTOR  # the 32x32 grayscale pHash is computed from
DRAFT_SIZE = (256, 256)  # smaller drafts drift the hash by up to 14-16 bits (DESIGN.md)
# The hashes' thumbnail is reduced by the shorter side only, and each of its ~30 Lanczos
# resizes costs time and memory in proportion to its long side: a 716-byte TIFF declaring
# 1x1,280,736 took 9 s, 1x50,000,000 a MemoryError, a JPEG declaring 255x25,500 1.5 s. Past
# this long side (~1 s) a picture is refused; a 1000x100000 strip is still hashed.
MAX_THUMBNAIL_LONG_SIDE = 16_384

# Any change to the bits produced must bump "version": an index stores this and refuses a mismatch.
HASH_PARAMS: dict[str, Any] = {
    "algo": "phash",
    "hash_size": HASH_SIZE,
    "highfreq_factor": HIGHFREQ_FACTOR,
    "resample": "lanczos",
    "draft": "L 256x256",
    "exif_transpose": True,
    "gray16": "scaled",
    "trim": "uniform borders",
    "crop_regions": len(transforms.CROP_REGIONS),
    "confirm": "centre 80% region",
    "version": 3,
}

IMAGE_SUFFIXES = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff",
        ".heic", ".heif", ".avif",
    }
)  # fmt: skip

# Only these decoders ever see a file's bytes: no EPS/ghostscript, no guessing at TGA or XPM.
_WANTED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "HEIF", "AVIF")

# Signatures of the formats above: bytes that start like one but fail to open are truncated.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\0", b"MM\0*")

# What Pillow's decoders raise on corrupt or truncated data (its own Image.open swallows the
# same family while probing formats; the AVIF decoder raises RuntimeError).
_DECODE_ERRORS = (
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
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})

# warnings.catch_warnings swaps a process-global list; serialise our own uses of it so two
# threads cannot restore each other's filters and leave one behind.
_warnings_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What dupwatch knows about one file's content.

    `bits` is the unsigned 64-bit pHash (imagehash's bit order), `digest` the 16-byte blake2b
    of the file's bytes, `width`/`height` the upright size, `format` Pillow's format name,
    `size` the file's length in bytes. `orientations` holds the pHash of the picture turned
    back by each of transforms.ORIENTATION_NAMES (the first is `bits`), `crops` the pHash of
    each of transforms.CROP_REGIONS (one of them is the centre's, see match_distance).
    """

    bits: int
    digest: bytes
    width: int
    height: int
    format: str
    size: int
    orientations: tuple[int, ...] = ()
    crops: tuple[int, ...] = ()

    def oriented(self, name: str) -> int:
        """The pHash of the picture turned back by orientation `name` ("rot90", ...)."""
        return self.orientations[transforms.ORIENTATION_NAMES.index(name)]

    @property
    def centre(self) -> int | None:
        """The pHash of the central 80% region; None for a fingerprint made without regions."""
        return self.crops[transforms.CENTRE_REGION] if self.crops else None


def match_distance(full: int, centre: int | None = None, other_centre: int | None = None) -> int:
    """How far apart two pictures are, given the Hamming distance of their pHashes (`full`)
    and their centre regions' pHashes: `full`, raised to the mean of it and the centres'
    distance. They match at a radius r when both hashes agree on average within r and the
    full hashes within r.

    Chosen on the accuracy benchmark (README "Accuracy"): at radius 10 the full pHash alone
    paired different pictures with little in them (a blue backdrop and an orange fundus) on
    four of six seeds, and at 12 on all; with the centre's second opinion radius 12 pairs none
    on any seed and finds more mild copies (5% crops, corner watermarks) than 10 did. When
    either centre is unknown (a query by hash alone) it is the full distance.
    """
    if centre is None or other_centre is None:
        return full
    return max(full, (full + (centre ^ other_centre).bit_count() + 1) // 2)


def is_image_name(name: str | bytes) -> bool:
    """True when the file name ends in a suffix dupwatch reads as an image (any case)."""
    suffix = os.path.splitext(os.fsdecode(name))[1]
    return suffix.lower() in IMAGE_SUFFIXES


def fingerprint(
    path: FilePath,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Fingerprint:
    """Fingerprint one file, reading its bytes once.

    The digest and the pixels come from the same bytes, so a file rewritten meanwhile cannot
    mix two versions. JPEGs are decoded at 1/2-1/8 scale inside the DCT (draft), the EXIF
    orientation is applied, and the pHash is imagehash.phash's on the upright picture.
    Raises a FingerprintError subclass naming the file; `max_pixels=None` leaves only Pillow's
    own hard limit (2 x Image.MAX_IMAGE_PIXELS).
    """
    data = read_bytes(path, max_bytes=max_bytes)
    with _decoding(path, data):
        img = _open_image(path, data, max_pixels)
        declared_size, image_format = img.size, img.format or "unknown"
        img.draft("L", DRAFT_SIZE)  # a no-op for everything but JPEG
        img.load()
        orientation = _orientation(img)  # after load: a PNG's eXIf may follow its pixels
        gray = _to_gray(path, img)
        gray = _transpose(gray, orientation)
        hashes = picture_hashes(gray)
    width, height = _upright_size(declared_size, orientation)
    return Fingerprint(
        bits=hashes.orientations[0],
        digest=hashlib.blake2b(data, digest_size=16).digest(),
        width=width,
        height=height,
        format=image_format,
        size=len(data),
        orientations=hashes.orientations,
        crops=hashes.crops,
    )


@dataclass(frozen=True, slots=True)
class PictureHashes:
    orientations: tuple[int, ...]  # in transforms.ORIENTATION_NAMES order; [0] is the pHash
    crops: tuple[int, ...]  # in transforms.CROP_REGIONS order
    box: tuple[float, float, float, float]  # the picture inside its borders, in gray's pixels


def picture_hashes(gray: Image.Image) -> PictureHashes:
    """Every hash of one upright 8-bit grayscale picture.

    Borders are found on a ~128 px box-reduced thumbnail, then the pHash input (32x32) is
    resampled from `gray` inside them: without borders this is imagehash.phash(gray) exactly.
    The orientations are turns of that 32x32 input; the crop hashes come from the thumbnail.
    """
    factor = transforms.thumbnail_factor(gray.size)
    thumb = gray.reduce(factor) if factor > 1 else gray
    left, top, right, bottom = transforms.border_box(np.asarray(thumb))
    box = (
        float(left * factor),
        float(top * factor),
        float(min(right * factor, gray.width)),
        float(min(bottom * factor, gray.height)),
    )
    small = gray.resize((HASH_INPUT_SIZE, HASH_INPUT_SIZE), Image.Resampling.LANCZOS, box=box)
    pixels = np.asarray(small)
    turns = [undo(pixels) for undo in list(transforms.ORIENTATIONS.values())[1:]]
    turned = (phash_bits(pixels), *phash_many(np.stack(turns)))
    crops = phash_many(_crop_inputs(thumb, (left, top, right, bottom)))
    return PictureHashes(turned, crops, box)


def _crop_inputs(thumb: Image.Image, box: tuple[int, int, int, int]) -> NDArray[Any]:
    """The 32x32 hash inputs of transforms.CROP_REGIONS, as windows of one or two small
    resamplings of the picture (two resizes instead of one per region: ~30x cheaper)."""
    windows = []
    for grid, offsets in transforms.CROP_GRIDS:
        resampled = np.asarray(thumb.resize((grid, grid), Image.Resampling.BOX, box=box))
        windows += [
            resampled[y : y + HASH_INPUT_SIZE, x : x + HASH_INPUT_SIZE]
            for y in offsets
            for x in offsets
        ]
    return np.stack(windows)


def phash_many(inputs: NDArray[Any]) -> tuple[int, ...]:
    """phash_bits of each 32x32 grayscale in a stack, with one DCT call for all of them."""
    dct = _fftpack().dct
    coefficients = dct(dct(inputs.astype(float), axis=1), axis=2)[:, :HASH_SIZE, :HASH_SIZE]
    flat = coefficients.reshape(len(inputs), -1)
    above = flat > np.median(flat, axis=1, keepdims=True)
    return tuple(int.from_bytes(row.tobytes(), "big") for row in np.packbits(above, axis=1))


def comparison_picture(
    path: FilePath, *, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """The upright grayscale picture inside its uniform borders, drafted like fingerprint():
    what a closer comparison (crop confirmation) looks at. Raises a FingerprintError subclass."""
    data = read_bytes(path)
    with _decoding(path, data):
        img = _open_image(path, data, max_pixels)
        img.draft("L", DRAFT_SIZE)
        img.load()
        gray = _transpose(_to_gray(path, img), _orientation(img))
        return gray.crop(tuple(round(v) for v in picture_hashes(gray).box))


def same_pixels(a: FilePath, b: FilePath, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> bool:
    """True when two files decode to the same upright picture: equal size, equal pixels.

    Both are decoded in full (no draft) and compared in their shared mode, or as RGBA when the
    modes differ. Raises a FingerprintError subclass naming the file that fails.
    """
    upright_a = _decode_upright(a, max_pixels)
    upright_b = _decode_upright(b, max_pixels)
    if upright_a.size != upright_b.size:
        return False
    if upright_a.mode != upright_b.mode or upright_a.mode in ("P", "PA"):
        upright_a, upright_b = upright_a.convert("RGBA"), upright_b.convert("RGBA")
    return upright_a.tobytes() == upright_b.tobytes()


def pixel_digest(path: FilePath, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> bytes:
    """16 bytes of blake2b over the fully decoded upright pixels and their size.

    Two files with equal pixel digests show the same pixels, whatever their bytes: the
    index computes it at most once per file, and only when a same-size file with the same
    perceptual hash but other bytes needs telling apart. 8-bit modes are compared as RGBA;
    deeper ones (16-bit, float) by their own values, which RGBA would clip.
    """
    upright = _decode_upright(path, max_pixels)
    if upright.mode not in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        upright = upright.convert("RGBA")
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{upright.mode} {upright.size[0]}x{upright.size[1]}".encode())
    digest.update(upright.tobytes())
    return digest.digest()


def phash_bits(gray: Image.Image | NDArray[Any]) -> int:
    """imagehash.phash's 64 bits of a 32x32 grayscale image (or its array), as an unsigned int.

    The same scipy DCT, the same 8x8 low-frequency block, the same median threshold, so the
    result equals int(str(imagehash.phash(gray)), 16).
    """
    pixels: NDArray[Any] = np.asarray(gray)
    dct = _fftpack().dct
    coefficients = dct(dct(pixels, axis=0), axis=1)[:HASH_SIZE, :HASH_SIZE]
    above = coefficients > np.median(coefficients)
    return int.from_bytes(np.packbits(above).tobytes(), "big")


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
def _decoding(path: FilePath, data: bytes) -> Iterator[None]:
    """Turn whatever Pillow raises on bad bytes into a FingerprintError naming the file."""
    try:
        yield
    except FingerprintError:
        raise
    except Image.DecompressionBombError as error:
        raise DecompressionBomb(path, f"decompression bomb: {error}") from error
    except UnidentifiedImageError as error:
        if _looks_like_image(data):
            reason = "truncated or corrupt image data: the header cannot be read"
            raise TruncatedImage(path, reason) from error
        raise NotAnImage(path, "not an image (unrecognised format)") from error
    except _DECODE_ERRORS as error:
        reason = f"truncated or corrupt image data: {error or type(error).__name__}"
        raise TruncatedImage(path, reason) from error


def _looks_like_image(data: bytes) -> bool:
    if data.startswith(_MAGIC):
        return True
    riff_webp = data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    return riff_webp or data[4:8] == b"ftyp"  # ftyp: the ISO boxes of HEIC and AVIF


def _open_image(path: FilePath, data: bytes, max_pixels: int | None) -> Image.Image:
    """Open (not decode) the image; refuse it when it declares more than max_pixels.

    The source is in memory, so there is no file to close afterwards.
    """
    with _warnings_lock, warnings.catch_warnings():
        # Our own check below is the limit; Pillow's warning would only print.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(io.BytesIO(data), formats=_read_formats())
    width, height = img.size
    if max_pixels is not None and width * height > max_pixels:
        reason = (
            f"decompression bomb: {width}x{height} = {width * height:,} pixels,"
            f" over the limit of {max_pixels:,}"
        )
        raise DecompressionBomb(path, reason)
    if max(width, height) // transforms.thumbnail_factor((width, height)) > MAX_THUMBNAIL_LONG_SIDE:
        reason = f"decompression bomb: {width}x{height} is too elongated to hash at a bounded cost"
        raise DecompressionBomb(path, reason)
    return img


def _decode_upright(path: FilePath, max_pixels: int | None) -> Image.Image:
    data = read_bytes(path)
    with _decoding(path, data):
        img = _open_image(path, data, max_pixels)
        img.load()
        return _transpose(img, _orientation(img))


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation (1-8), 1 when absent or unreadable: bad EXIF must not lose a photo."""
    try:
        value = img.getexif().get(_EXIF_ORIENTATION, 1)
    except _DECODE_ERRORS as error:
        log.debug("ignoring unreadable EXIF: %s", error)
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE_FOR_ORIENTATION else 1


def _upright_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    width, height = size
    return (height, width) if orientation >= 5 else (width, height)


def _transpose(img: Image.Image, orientation: int) -> Image.Image:
    method = _TRANSPOSE_FOR_ORIENTATION.get(orientation)
    return img if method is None else img.transpose(method)


def _to_gray(path: FilePath, img: Image.Image) -> Image.Image:
    """The loaded image as 8-bit grayscale: imagehash's convert('L'), but 16-bit is scaled.

    Pillow's convert('L') clips 16-bit values at 255, which would hash most 16-bit pictures
    as white.
    """
    if img.mode in _SIXTEEN_BIT_MODES:
        wide = np.asarray(img.convert("I"), dtype=np.int64)
        return Image.fromarray((np.clip(wide, 0, 65535) // 257).astype(np.uint8), "L")
    if img.mode == "LAB":
        return img.getchannel("L")
    try:
        return img.convert("L")  # already loaded: a ValueError here is about the mode
    except ValueError as error:
        raise NotAnImage(path, f"cannot convert pixel mode {img.mode} to grayscale") from error


@cache
def _read_formats() -> tuple[str, ...]:
    Image.init()
    return tuple(name for name in _WANTED_FORMATS if name in Image.OPEN)


@cache
def _fftpack() -> Any:
    import scipy.fftpack  # ~0.2 s to import: only when the first hash is computed

    return scipy.fftpack
