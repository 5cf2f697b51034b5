"""Telling a `pixel` match: two files that decode, in full, to the same upright picture."""

from __future__ import annotations

import hashlib

from dupwatch.index.fingerprint.decode import DEFAULT_MAX_PIXELS, FilePath, decode_upright


def may_share_pixels(format_a: str, thumbnail_a: bytes, format_b: str, thumbnail_b: bytes) -> bool:
    """False when two files of the same size cannot show the same pixels, by what their
    fingerprints say: no full decode needed to call them near, not pixel.

    Files of one format and size take the same road to their 16x16 thumbnail (the same JPEG
    draft scale; the full picture otherwise), so the same pixels give the same thumbnail.
    A JPEG's draft is made from its DCT coefficients rather than its pixels: two JPEGs could
    in principle decode to the same pixels from coefficients whose drafts differ; they would
    be called near, still a duplicate. Files of different formats (a JPEG and its PNG re-save)
    or without a thumbnail are decoded, as before.
    """
    if format_a != format_b or not thumbnail_a or not thumbnail_b:
        return True
    return thumbnail_a == thumbnail_b


def same_pixels(a: FilePath, b: FilePath, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> bool:
    """True when two files decode to the same upright picture: equal size, equal pixels.

    Both are decoded in full (no draft) and compared in their shared mode, or as RGBA when the
    modes differ. Raises a FingerprintError subclass naming the file that fails.
    """
    upright_a = decode_upright(a, max_pixels)
    upright_b = decode_upright(b, max_pixels)
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
    upright = decode_upright(path, max_pixels)
    if upright.mode not in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        upright = upright.convert("RGBA")
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{upright.mode} {upright.size[0]}x{upright.size[1]}".encode())
    digest.update(upright.tobytes())
    return digest.digest()
