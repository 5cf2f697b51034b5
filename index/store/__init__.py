"""Where fingerprints live: one LMDB environment per index.

- `environment.py`: the environment, its named tables, transactions, schema and map growth.
- `records.py`: how a file (and a file that failed) is stored; table keys.
- `migrations.py`: each schema step, run in place when an older index is opened for writing.
- `substrings.py`: the distinct hashes, searched by radius in the `substrings` table
  (multi-index hashing, `multi_index.py`); `selfjoin.py`: every pair of hashes within a
  radius at once. `bktree.py`: the BK-tree with the same interface (schema 4 and before
  kept one in the `tree` table; now for the benchmark and as a library).
- `pairs.py`: the stored duplicate pairs and their kinds; `packed_pairs.py`: read and
  written as arrays; `ignored.py`: pairs marked "not a duplicate"; `crops.py`: the
  crop-region hashes of `--transforms crop` (an LMDB of its own).
- `hash_set.py`: what the BK-tree and the substring tables share (their own environment or a
  table of a shared one).
- `bookkeeping.py`: the watched folders and the files that failed.
- `check.py`: do the derived tables agree with the file records (`dupwatch check`)? Their
  rebuild (`--repair`); `location.py`: where an index lives by default.

Imports dupwatch.index.errors and dupwatch.index.fingerprint (transform names); never the
Index, hashing, threads or sockets.
"""

from dupwatch.index.lazy import exporter

_EXPORTS = {
    "Store": "environment",
    "SCHEMA_VERSION": "environment",
    "TABLES": "environment",
    "FileRecord": "records",
    "Failure": "records",
    "encode_record": "records",
    "decode_record": "records",
    "u64": "records",
    "from_u64": "records",
    "path_key": "records",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = exporter(__name__, _EXPORTS, globals())
