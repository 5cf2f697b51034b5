"""Where the bridge's groups and distances come from: the running service, else the index."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from dupwatch.daemon.render import group_to_json
from dupwatch.daemon.wire.client import Client, DaemonNotRunning
from dupwatch.index import Index, StoreError

CALL_TIMEOUT_S = 600.0  # a groups answer for a large index takes a while


class Source(Protocol):
    def groups(self) -> list[dict[str, Any]]: ...

    def relation(self, path: str, other: str) -> tuple[str, int] | None: ...


class ServiceSource:
    """The service on `socket_path`: `groups` and `query` over its socket."""

    def __init__(self, socket_path: Path, radius: int | None = None) -> None:
        self.socket_path = socket_path
        self.radius = radius

    def groups(self) -> list[dict[str, Any]]:
        args = {} if self.radius is None else {"radius": self.radius}
        with Client(self.socket_path, timeout_s=CALL_TIMEOUT_S) as client:
            return client.call("groups", **args)["groups"]

    def relation(self, path: str, other: str) -> tuple[str, int] | None:
        args: dict[str, Any] = {"path": path}
        if self.radius is not None:
            args["radius"] = self.radius
        with Client(self.socket_path) as client:
            matches = client.call("query", **args)["matches"]
        return _find(matches, other)


class IndexSource:
    """The index itself, read-only, for `--sync` while no service runs."""

    def __init__(self, index_path: str, radius: int | None = None) -> None:
        self.index_path = index_path
        self.radius = radius

    def groups(self) -> list[dict[str, Any]]:
        with self._open() as index:
            return [group_to_json(g) for g in index.groups(self.radius)]

    def relation(self, path: str, other: str) -> tuple[str, int] | None:
        with self._open() as index:
            matches = [m.to_json() for m in index.query(path, self.radius)]
        return _find(matches, other)

    def _open(self) -> Index:
        if not os.path.exists(os.path.join(self.index_path, "data.mdb")):
            raise StoreError(f"{self.index_path}: no index here yet (run `dupwatch scan DIR`)")
        return Index.open(self.index_path, readonly=True)


def open_source(socket_path: Path, index_path: str, radius: int | None = None) -> Source:
    """The service when it answers on `socket_path`, else the index at `index_path`."""
    try:
        with Client(socket_path, timeout_s=10) as client:
            client.call("status")
    except DaemonNotRunning:
        return IndexSource(index_path, radius)
    return ServiceSource(socket_path, radius)


def _find(matches: list[dict[str, Any]], other: str) -> tuple[str, int] | None:
    for match in matches:
        if match.get("path") == other:
            return str(match.get("kind", "near")), int(match.get("distance", 0))
    return None
