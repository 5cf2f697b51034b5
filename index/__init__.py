"""dupwatch.index: the library. Fingerprints, the LMDB store and its search, and the Index
that ties them together; usable on its own from Python. No threads, sockets or watching
here (the service lives in dupwatch.daemon, which this package never imports).

Layers, each importing only those before it:
- `errors.py`: the errors, each naming the file or index and the cause.
- `fingerprint/`: what a picture is (decoding, hashes, transforms, pixel digests).
- `hashing/`: running fingerprinting (time and memory limits, hashing engines: a pool of
  hashing processes fed in batches, or the workers of a Dask cluster).
- `store/`: where fingerprints live (the LMDB environment, records, migrations, the hash
  search in substring tables beside the BK-tree, the self-join, stored and packed pairs, the
  consistency check).
- the Index API, in this folder: `index.py` (the Index: add, remove, move, query, groups),
  with `matches.py`, `groups.py`, `grouping.py`, `transformed.py`, `pixel_digests.py`,
  `prefetch.py`, `folders.py`, `writing.py`, `bulk.py`, `pair_arrays.py`, `cluster_join.py`
  (the self-join on a Dask cluster) and `update.py` below it, and `ignore.py` and
  `compare.py` above it.
- `cleanup/`: acting on duplicates (quarantine, label files).

Names are exported lazily: `from dupwatch.index.errors import ...` (which the command line
needs at start) does not load numpy, Pillow and LMDB.
"""

from dupwatch.index.lazy import exporter

_EXPORTS = {
    "BKTree": "store.bktree",
    "hamming": "store.bktree",
    "DecompressionBomb": "errors",
    "DupwatchError": "errors",
    "EmptyFile": "errors",
    "FingerprintError": "errors",
    "IndexLocked": "errors",
    "IndexMismatch": "errors",
    "MissingFile": "errors",
    "NotAnImage": "errors",
    "NotIndexed": "errors",
    "StoreError": "errors",
    "TooLarge": "errors",
    "TruncatedImage": "errors",
    "UnreadableFile": "errors",
    # The function fingerprint() is not exported here: it would hide the package of that name.
    "Fingerprint": "fingerprint.file",
    "same_pixels": "fingerprint.pixels",
    "KEEP_POLICIES": "groups",
    "Group": "groups",
    "keeper_rank": "groups",
    "DEFAULT_RADIUS": "index",
    "Index": "index",
    "default_index_path": "store.location",
    "AddResult": "matches",
    "Match": "matches",
    "Kind": "store.pairs",
    "SubstringIndex": "store.substrings",
    "FileRecord": "store.records",
    "Plan": "update",
    "UpdateReport": "update",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = exporter(__name__, _EXPORTS, globals())
