"""The report's pictures: a small upright JPEG of each file as a data URI, made in worker
processes when there are many, with the progress of making them."""

from __future__ import annotations

import base64
import io
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor

from PIL import Image, ImageOps

from dupwatch.index.fingerprint.decode import readable_formats

log = logging.getLogger(__name__)

THUMB_SIDE = 128  # pixels; ~3-5 KB a JPEG thumbnail, so 5,000 groups stay tens of MB
THUMB_QUALITY = 70
_POOL_THRESHOLD = 24  # fewer thumbnails than this are made in-process
_THUMB_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)

Progress = Callable[[int, int], None]  # (thumbnails made, thumbnails to make)


def thumbnail(path: bytes) -> str:
    """A small upright JPEG of the image as a data URI; "" when it cannot be decoded."""
    try:
        with Image.open(path, formats=readable_formats(path)) as img:  # only safe decoders
            img.draft("RGB", (THUMB_SIDE * 2, THUMB_SIDE * 2))
            small = ImageOps.exif_transpose(img)
            small.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BILINEAR)
            buffer = io.BytesIO()
            small.convert("RGB").save(buffer, "JPEG", quality=THUMB_QUALITY, optimize=True)
    except _THUMB_ERRORS as error:
        log.warning("%s: no thumbnail: %s", os.fsdecode(path), error)
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnails(
    paths: Sequence[bytes], workers: int | None = None, progress: Progress | None = None
) -> list[str]:
    """Thumbnails of many images, decoded in worker processes when there are many;
    `progress(done, total)` is called after each."""
    if len(paths) < _POOL_THRESHOLD or workers == 1:
        made = map(thumbnail, paths)
        return _counted(made, len(paths), progress)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return _counted(pool.map(thumbnail, paths, chunksize=16), len(paths), progress)


def _counted(made: Iterable[str], total: int, progress: Progress | None) -> list[str]:
    out = []
    for thumb in made:
        out.append(thumb)
        if progress is not None:
            progress(len(out), total)
    return out
