"""Which files are images: the names dupwatch looks at and the bytes that start an image.

Standard library only, so that the watcher and the command line can ask without loading Pillow.
"""

from __future__ import annotations

import os

IMAGE_SUFFIXES = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff",
        ".heic", ".heif", ".avif",
    }
)  # fmt: skip

# Only these decoders ever see a file's bytes: no EPS/ghostscript, no guessing at TGA or XPM.
WANTED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "HEIF", "AVIF")

# Signatures of the formats above: bytes that start like one but fail to open are truncated.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\0", b"MM\0*")


def is_image_name(name: str | bytes) -> bool:
    """True when the file name ends in a suffix dupwatch reads as an image (any case)."""
    suffix = os.path.splitext(os.fsdecode(name))[1]
    return suffix.lower() in IMAGE_SUFFIXES


def looks_like_image(data: bytes) -> bool:
    """True when the bytes start like one of the formats dupwatch reads."""
    if data.startswith(_MAGIC):
        return True
    riff_webp = data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    return riff_webp or data[4:8] == b"ftyp"  # ftyp: the ISO boxes of HEIC and AVIF
