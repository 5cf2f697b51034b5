"""What a picture is: a file's fingerprint, made from its bytes alone.

- `file.py`: `fingerprint(path)` reads a file once and makes its `Fingerprint` (the digest of
  its bytes and the pHashes of its pixels); `match_distance` says how far two pictures are.
- `decode.py`: the bytes, read safely, and the upright grayscale picture, through Pillow.
- `phash.py`: the pHashes of a grayscale picture (whole, eight orientations, crop regions).
- `geometry.py`: turning the hash input, finding the picture inside uniform borders.
- `transforms.py`: the names of the transforms and crop regions (no numpy: the command line
  checks `--transforms` with it); `formats.py`: which names and first bytes make a file an
  image, and which of Pillow's decoders may read it.
- `pixels.py`: pixel digests, to tell a `pixel` match; `confirm.py`: the pixel check of a
  match through a transform.

Imports only dupwatch.index.errors from dupwatch: no index, no store, no threads or sockets.
Names are exported lazily, so that the light modules load without numpy and Pillow.
"""

from dupwatch.index.lazy import exporter

_EXPORTS = {
    "Fingerprint": "file",
    "HASH_PARAMS": "file",
    "DRAFT_SIZE": "file",
    "fingerprint": "file",
    "match_distance": "file",
    "comparison_picture": "file",
    "DEFAULT_MAX_BYTES": "decode",
    "DEFAULT_MAX_PIXELS": "decode",
    "FilePath": "decode",
    "read_bytes": "decode",
    "HASH_INPUT_SIZE": "phash",
    "phash_bits": "phash",
    "phash_many": "phash",
    "picture_hashes": "phash",
    "IMAGE_SUFFIXES": "formats",
    "is_image_name": "formats",
    "pixel_digest": "pixels",
    "same_pixels": "pixels",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = exporter(__name__, _EXPORTS, globals())
