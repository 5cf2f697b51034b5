"""The thumbnail a notification shows: a small upright PNG of the new file, cached by path,
size and mtime, the oldest dropped beyond a few hundred."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path

from PIL import Image, ImageOps

from dupwatch.index.fingerprint.decode import readable_formats

log = logging.getLogger(__name__)

THUMB_PIXELS = 128
THUMB_CACHE_FILES = 500


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/dupwatch/thumbs (the unit's CacheDirectory=dupwatch)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "dupwatch" / "thumbs"


def thumbnail(path: str, cache_dir: Path) -> Path | None:
    """A PNG of `path` at most THUMB_PIXELS wide and high, upright, cached; None if unreadable.

    The cache key is the path with its size and mtime, so a changed file gets a new picture.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = f"{path}\0{st.st_size}\0{st.st_mtime_ns}".encode("utf-8", "surrogateescape")
    target = cache_dir / f"{hashlib.blake2b(key, digest_size=16).hexdigest()}.png"
    if target.exists():
        return target
    try:
        with Image.open(path, formats=readable_formats(path)) as img:  # only safe decoders
            img.draft("RGB", (THUMB_PIXELS * 2, THUMB_PIXELS * 2))
            small = ImageOps.exif_transpose(img)
            small.thumbnail((THUMB_PIXELS, THUMB_PIXELS))
            small = small.convert("RGBA" if "A" in small.getbands() else "RGB")
        cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}")
        small.save(partial, "PNG")
        os.replace(partial, target)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        log.info("no thumbnail for %s: %s", path, error)
        return None
    prune_cache(cache_dir)
    return target


def prune_cache(cache_dir: Path, keep: int = THUMB_CACHE_FILES) -> None:
    """Drop the oldest thumbnails beyond `keep` (they are ours and cheap to remake)."""
    pictures = list(cache_dir.glob("*.png"))
    if len(pictures) <= keep:
        return
    pictures.sort(key=lambda p: p.stat().st_mtime_ns if p.exists() else 0)
    for old in pictures[: len(pictures) - keep]:
        with contextlib.suppress(FileNotFoundError):
            old.unlink()
