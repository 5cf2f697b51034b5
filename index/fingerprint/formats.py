"""Which files are images: the names dupwatch looks at, the bytes that start an image, and
the Pillow decoders it lets read them.

A file is a candidate by its name when its suffix is an image suffix, never when its suffix
is one of the usual non-image ones (labels, text, data, video, archives: a big labelling tree
holds thousands, and none is read), and by its first bytes otherwise (a picture saved without
a suffix, or under an odd one): only a known image signature makes it a candidate.

Standard library only, so that the watcher and the command line can ask without loading Pillow.
"""

from __future__ import annotations

import os
import re

# Suffix -> Pillow format; every format here is one dupwatch lets Pillow decode.
SUFFIX_FORMATS = {
    **dict.fromkeys((".jpg", ".jpeg", ".jpe", ".jfif"), "JPEG"),
    **dict.fromkeys((".png", ".apng"), "PNG"),
    ".webp": "WEBP",
    ".gif": "GIF",
    ".bmp": "BMP",
    ".dib": "DIB",
    **dict.fromkeys((".tif", ".tiff"), "TIFF"),
    **dict.fromkeys((".heic", ".heif"), "HEIF"),
    ".avif": "AVIF",
    **dict.fromkeys((".pbm", ".pgm", ".ppm", ".pnm", ".pfm"), "PPM"),
    **dict.fromkeys((".jp2", ".j2k", ".jpc", ".jpf", ".jpx", ".j2c"), "JPEG2000"),
    **dict.fromkeys((".tga", ".icb", ".vda", ".vst"), "TGA"),
    ".ico": "ICO",
    ".qoi": "QOI",
    ".pcx": "PCX",
    **dict.fromkeys((".sgi", ".rgb", ".rgba", ".bw"), "SGI"),
    ".dds": "DDS",
    ".psd": "PSD",
}
IMAGE_SUFFIXES = frozenset(SUFFIX_FORMATS)

# The decoders Pillow may use, in the order it tries them. Each is Pillow's own code on the
# bytes in memory; none runs another program (no EPS/ghostscript, no WMF) and none guesses at
# text (XPM, XBM). TGA has no signature: it is tried only for a TGA name (TGA_ONLY_BY_NAME),
# last, so that it never claims bytes that are something else.
WANTED_FORMATS = (
    "JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "HEIF", "AVIF",
    "PPM", "JPEG2000", "ICO", "QOI", "PCX", "SGI", "DDS", "PSD",
)  # fmt: skip
TGA_ONLY_BY_NAME = "TGA"

# Suffixes of files that are never images: not even their first bytes are read.
NOT_IMAGE_SUFFIXES = frozenset(
    {
        # labels and text
        ".txt", ".json", ".jsonl", ".xml", ".csv", ".tsv", ".yaml", ".yml", ".toml", ".ini",
        ".cfg", ".md", ".rst", ".html", ".htm", ".log", ".names", ".pbtxt", ".srt", ".vtt",
        ".xmp", ".geojson",
        # code and notebooks
        ".py", ".pyc", ".ipynb", ".sh", ".js", ".css", ".c", ".h", ".cpp", ".lock",
        # arrays, models, tables
        ".npy", ".npz", ".pt", ".pth", ".ckpt", ".onnx", ".pkl", ".pickle", ".h5", ".hdf5",
        ".mat", ".parquet", ".arrow", ".feather", ".tfrecord", ".safetensors", ".db",
        ".sqlite", ".mdb",
        # archives, documents, video, audio
        ".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".zst", ".7z", ".rar",
        ".pdf", ".doc", ".docx", ".xls", ".xlsx", ".ppt", ".pptx", ".odt",
        ".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg",
        ".mp3", ".wav", ".flac", ".ogg", ".m4a",
    }
)  # fmt: skip

_SUFFIX_SAYS = {**dict.fromkeys(NOT_IMAGE_SUFFIXES, False), **dict.fromkeys(IMAGE_SUFFIXES, True)}

SNIFF_BYTES = 32  # enough for every signature below

# ISO base media brands of HEIF and AVIF pictures (an MP4 video has the same boxes).
_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1",
                b"avif", b"avis")  # fmt: skip
# Signatures distinctive enough to make a file with an unknown suffix a candidate.
_STRONG = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"II*\0",  # TIFF, little- and big-endian
    b"MM\0*",
    b"II+\0",  # BigTIFF
    b"MM\0+",
    b"\0\0\0\x0cjP  \r\n\x87\n",  # JPEG 2000 (JP2)
    b"\xff\x4f\xff\x51",  # JPEG 2000 codestream
    b"qoif",
    b"8BPS",  # PSD
    b"DDS ",
)
# PBM/PGM/PPM (plain or raw) and PFM: "P1".."P6", "Pf" or "PF", white space, then a comment
# or the width and height ("P1 is the first plate" in a README is no picture).
_NETPBM = re.compile(rb"P[1-6fF]\s+(#|\d+\s+\d+\s)")
# The BMP header sizes Pillow reads (after "BM" and 12 bytes of file header).
_BMP_HEADER_SIZES = (12, 40, 52, 56, 64, 108, 124)
# Formats whose signatures are too short to pick a file out by (ICO: 0 0 1 0, SGI: 01 DA,
# PCX: 0A): bytes that start like one are an image that is damaged, not a stranger.
_WEAK = (b"\0\0\1\0", b"\x01\xda", b"BM")


def is_image_name(name: str | bytes) -> bool:
    """True when the file name ends in a suffix dupwatch reads as an image (any case)."""
    return name_says_image(name) is True


def is_other_name(name: str | bytes) -> bool:
    """True when the name's suffix is one of a file that is never an image (a label, text,
    data, video...): such a file is not even opened."""
    return name_says_image(name) is False


def name_says_image(name: str | bytes) -> bool | None:
    """True for an image suffix, False for a suffix of files that are never images, None
    when the name does not say (no suffix, or another one). One lookup: a walk asks it of
    every file of a tree."""
    return _SUFFIX_SAYS.get(_suffix(name))


def starts_like_image(head: bytes) -> bool:
    """True when the first bytes of a file are a distinctive image signature: enough to take
    a file whose name says nothing for an image."""
    if head.startswith(_STRONG):
        return True
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return True
    if head[:2] == b"BM" and len(head) >= 18:
        return int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES
    return _NETPBM.match(head) is not None


def looks_like_image(data: bytes) -> bool:
    """True when the bytes start like one of the formats dupwatch reads, distinctive or not:
    such bytes that fail to open are a truncated or corrupt image, not something else."""
    return starts_like_image(data) or data.startswith(_WEAK) or data[4:8] == b"ftyp"


def file_starts_like_image(path: str | bytes | os.PathLike) -> bool:
    """Read the first bytes of a regular file (never following a symbolic link, never
    blocking on a FIFO) and tell whether they are an image signature."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except OSError:
        return False
    try:
        return starts_like_image(os.read(fd, SNIFF_BYTES))
    except OSError:
        return False
    finally:
        os.close(fd)


def formats_for(name: str | bytes | os.PathLike) -> tuple[str, ...]:
    """The Pillow decoders that may read the file `name`: WANTED_FORMATS, and TGA last when
    the name says TGA."""
    if SUFFIX_FORMATS.get(_suffix(os.fspath(name))) == TGA_ONLY_BY_NAME:
        return (*WANTED_FORMATS, TGA_ONLY_BY_NAME)
    return WANTED_FORMATS


def _suffix(name: str | bytes) -> str:
    return os.path.splitext(os.fsdecode(name))[1].lower()
