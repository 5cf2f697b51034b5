"""dupwatch.index: fingerprints, the LMDB store and BK-tree, and the Index that ties them.

No threads, sockets or watching here; the service lives in dupwatch.daemon.
"""

from dupwatch.index.bktree import BKTree, hamming
from dupwatch.index.errors import (
    DecompressionBomb,
    DupwatchError,
    EmptyFile,
    FingerprintError,
    IndexLocked,
    IndexMismatch,
    MissingFile,
    NotAnImage,
    NotIndexed,
    StoreError,
    TooLarge,
    TruncatedImage,
    UnreadableFile,
)

# The function fingerprint() is not re-exported: it would hide the module of the same name.
from dupwatch.index.fingerprint import Fingerprint, same_pixels
from dupwatch.index.groups import KEEP_POLICIES, Group, keeper_rank
from dupwatch.index.index import DEFAULT_RADIUS, AddResult, Index, default_index_path
from dupwatch.index.pairs import Kind, Match
from dupwatch.index.store import FileRecord
from dupwatch.index.update import Plan, UpdateReport

__all__ = [
    "DEFAULT_RADIUS",
    "KEEP_POLICIES",
    "AddResult",
    "BKTree",
    "DecompressionBomb",
    "DupwatchError",
    "EmptyFile",
    "FileRecord",
    "Fingerprint",
    "FingerprintError",
    "Group",
    "Index",
    "IndexLocked",
    "IndexMismatch",
    "Kind",
    "Match",
    "MissingFile",
    "NotAnImage",
    "NotIndexed",
    "Plan",
    "StoreError",
    "TooLarge",
    "TruncatedImage",
    "UnreadableFile",
    "UpdateReport",
    "default_index_path",
    "hamming",
    "keeper_rank",
    "same_pixels",
]
