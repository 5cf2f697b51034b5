"""Telling a `pixel` match: two files that decode, in full, to the same upright picture."""

from __future__ import annotations

import hashlib

from dupwatch.index.fingerprint.decode import DEFAULT_MAX_PIXELS, FilePath, decode_upright


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
