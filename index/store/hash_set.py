"""What the stored hash sets (the BK-tree, the substring tables) share: an LMDB environment
of their own or a table of a shared one, and a transaction of their own when none is given."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Self

import lmdb


class StoredHashSet:
    """A set of 64-bit hashes kept in LMDB; subclasses take (env, *, owns_env, **knobs)."""

    DEFAULT_MAP_SIZE = 1 << 34

    env: lmdb.Environment
    _owns_env: bool

    @classmethod
    def open(
        cls, folder: str | os.PathLike, *, map_size: int | None = None, **knobs: object
    ) -> Self:
        """Open (or create) the set in an LMDB environment of its own in `folder`."""
        os.makedirs(folder, exist_ok=True)
        env = lmdb.open(os.fspath(folder), map_size=map_size or cls.DEFAULT_MAP_SIZE, max_dbs=2)
        return cls(env, owns_env=True, **knobs)  # type: ignore[call-arg]

    def close(self) -> None:
        if self._owns_env:
            self.env.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _reading(self, txn: lmdb.Transaction | None) -> Iterator[lmdb.Transaction]:
        if txn is not None:
            yield txn
        else:
            with self.env.begin(buffers=True) as own:
                yield own
