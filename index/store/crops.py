"""Crop matching (`--transforms crop`): candidates from sub-region hashes, confirmed on pixels.

A copy that keeps 80% of a picture's width and height hashes far from it (15-25 bits), but
close to the hash of the matching sub-region of it. Each file's fingerprint carries the pHash
of transforms.CROP_REGIONS; they are kept in a table of their own, and a new file is matched
both ways: its own hash against the stored crop hashes (it is a crop of an indexed file) and
its crop hashes against the stored full hashes (an indexed file is a crop of it). Crop hashes
of unrelated pictures collide far more often than full hashes, so every candidate is
confirmed on pixels (index/confirm.py).

The table is a second LMDB environment beside the index (`crops/` in the index folder): it is
advisory. It is never trusted on its own (a candidate whose file is gone or changed simply
fails confirmation or lookup), file ids are never reused, so entries of removed files are
dropped lazily rather than in the index's transaction.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import lmdb

from dupwatch.index.errors import StoreError
from dupwatch.index.store.bktree import BKTree

log = logging.getLogger(__name__)

CROP_RADIUS = 8  # of 64 bits, between a crop's hash and the matching sub-region hash
_MAP_SIZE = 1 << 30


@dataclass(frozen=True, slots=True)
class CropCandidate:
    file_id: int
    distance: int
    query_is_crop: bool  # True: the query is a crop of the file; False: the other way round


class CropTable:
    """crop hash -> file ids, with a BK-tree for the radius search, in `folder`/crops."""

    def __init__(self, index_folder: str, *, readonly: bool = False) -> None:
        folder = os.path.join(index_folder, "crops")
        try:
            if readonly:
                self.env = (
                    lmdb.open(folder, readonly=True, max_dbs=2)
                    if os.path.exists(os.path.join(folder, "data.mdb"))
                    else None
                )
            else:
                os.makedirs(folder, mode=0o700, exist_ok=True)
                self.env = lmdb.open(folder, map_size=_MAP_SIZE, max_dbs=2)
        except lmdb.Error as error:
            raise StoreError(f"{folder}: cannot open the crop table: {error}") from error
        if self.env is None:
            self.tree = None
            return
        create = not readonly
        self.ids_db = self.env.open_db(b"ids", create=create, dupsort=True)
        self.tree = BKTree(self.env, db=self.env.open_db(b"tree", create=create))

    def close(self) -> None:
        if self.env is not None:
            self.env.close()

    def add(self, file_id: int, hashes: tuple[int, ...]) -> None:
        if self.env is None or not hashes:
            return
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for bits in set(hashes):
                        txn.put(bits.to_bytes(8, "big"), file_id.to_bytes(8, "big"),
                                db=self.ids_db)  # fmt: skip
                        self.tree.add(bits, txn=txn)
                return
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()["map_size"] * 2)

    def find(self, bits: int, radius: int) -> list[tuple[int, int]]:
        """(distance, file id) of every crop hash within `radius` of `bits`."""
        if self.env is None or self.tree is None:
            return []
        found = []
        with self.env.begin(buffers=True) as txn:
            for distance, near in self.tree.find(bits, radius, txn=txn):
                cursor = txn.cursor(db=self.ids_db)
                if cursor.set_key(near.to_bytes(8, "big")):
                    found += [(distance, int.from_bytes(raw, "big"))
                              for raw in cursor.iternext_dup()]  # fmt: skip
        return found
