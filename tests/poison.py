"""A hashing task that kills its process on files named *poison* (a decoder that crashes):
importable by the hashing processes (pytest puts tests/ on their path too)."""

from __future__ import annotations

import os

from dupwatch.index.hashing.tasks import hash_file


def hash_or_die(path: bytes):  # noqa: ANN201
    if b"poison" in os.path.basename(path):
        os._exit(1)
    return hash_file(path)
