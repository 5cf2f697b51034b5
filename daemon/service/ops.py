"""What each socket operation does: query, status, groups, watch, unwatch.

Reads run in threads beside the writer (LMDB readers never block it); anything that writes
goes through the writer thread. `subscribe` is the server's own.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from dupwatch.daemon.config import Config
from dupwatch.daemon.render import group_to_json
from dupwatch.daemon.service.server import OpHandler, Peer, Server
from dupwatch.daemon.service.writer import Reconcile, Writer
from dupwatch.daemon.wire.protocol import ErrorCode, ProtocolError, quote
from dupwatch.index.errors import FingerprintError, MissingFile, UnreadableFile
from dupwatch.index.folders import absolute
from dupwatch.index.index import Index
from dupwatch.index.matches import MAX_RADIUS, Match


class Served(Protocol):
    """What the ops read of the running service (service.py's Service)."""

    config: Config
    index: Index
    index_path: str
    state: str
    writer: Writer
    server: Server
    recent_alerts: deque[dict[str, Any]]
    recent_leaks: deque[dict[str, Any]]
    leaks: int
    unwatched: dict[bytes, list[bytes]]
    lost_roots: set[bytes]

    def uptime_s(self) -> float: ...
    def sync_watches(self) -> None: ...


def bad_request(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_REQUEST, message)


def radius_arg(args: dict[str, Any]) -> int | None:
    radius = args.get("radius")
    if radius is None:
        return None
    if not isinstance(radius, int) or isinstance(radius, bool) or not 0 <= radius <= MAX_RADIUS:
        raise bad_request(
            f'"radius" must be an integer from 0 to {MAX_RADIUS}, not {quote(radius)}'
        )
    return radius


def path_arg(args: dict[str, Any], name: str = "path") -> str:
    path = args.get(name)
    if not isinstance(path, str) or not path:
        raise bad_request(f'"{name}" must be a path (a string)')
    try:
        raw = os.fsencode(path)  # a lone surrogate that is no escaped byte cannot be a name
    except UnicodeEncodeError:
        raise bad_request(f'"{name}" {quote(path)} is not a file name') from None
    if b"\0" in raw:
        raise bad_request(f'"{name}" {quote(path)} holds a NUL byte')
    if not os.path.isabs(path):
        raise bad_request(f"{path}: the path must be absolute (the service has its own cwd)")
    return path


def hash_arg(args: dict[str, Any]) -> int:
    """A 64-bit hash as an integer or a hex string ("0x..." or 16 hex digits)."""
    value = args.get("hash")
    if isinstance(value, str):
        try:
            value = int(value, 16)
        except ValueError:
            raise bad_request(f'"hash" {quote(value)} is not hexadecimal') from None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 64:
        raise bad_request('"hash" must be a 64-bit hash (integer or hex string)')
    return value


def readable_by(path: str, peer: Peer) -> bool:
    """Whether the peer's uid could read `path`, from the file's owner, group and mode.

    The service refuses other uids anyway; this keeps a query from reading on behalf of a
    client what the client itself could not (should the uid rule ever be relaxed).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MissingFile(path, "no such file") from None
    except OSError as exc:
        raise UnreadableFile(path, exc.strerror or str(exc)) from None
    return _allows(st, peer, stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)


def searchable_by(folder: str, peer: Peer) -> bool:
    """Whether the peer's uid may pass through `folder` and each folder above it."""
    while True:
        try:
            st = os.stat(folder)
        except OSError:
            return False
        if not _allows(st, peer, stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH):
            return False
        parent = os.path.dirname(folder)
        if parent == folder:
            return True
        folder = parent


def _allows(st: os.stat_result, peer: Peer, owner: int, group: int, other: int) -> bool:
    if peer.uid == 0:
        return True
    if st.st_uid == peer.uid:
        return bool(st.st_mode & owner)
    if st.st_gid == peer.gid:
        return bool(st.st_mode & group)
    return bool(st.st_mode & other)


def visible_to(path: str, peer: Peer) -> bool:
    """Whether the peer could read `path` itself: the file, and every folder on the way."""
    try:
        return readable_by(path, peer) and searchable_by(os.path.dirname(path), peer)
    except FingerprintError:  # missing, or a folder on the way the service cannot pass
        return False


def require_readable(path: str, peer: Peer) -> None:
    """Refuse a path the peer could not read exactly as one that does not exist (same code,
    same message), so that a query tells nothing about a file the asker cannot see.

    Raises MissingFile.
    """
    if not visible_to(path, peer):
        raise MissingFile(path, f"no such file, or not readable by uid {peer.uid}")


def shown_to(matches: list[Match], peer: Peer) -> list[Match]:
    """The matches the peer may learn of: all for the service's own user (its own index),
    for any other uid only the files it could read."""
    if peer.uid == os.getuid():
        return matches
    return [m for m in matches if visible_to(m.record.fspath, peer)]


class Ops:
    """The op table of one Service."""

    def __init__(self, service: Served) -> None:
        self.service = service
        # A query by path waits for a hashing process to decode the picture, which can take a
        # second (a PNG just under the pixel limit): one at a time, on a thread of its own, so
        # that status and the other ops never wait behind them.
        self._decoding = ThreadPoolExecutor(1, thread_name_prefix="dupwatch-query")

    def table(self) -> dict[str, OpHandler]:
        return {
            "status": self.status,
            "query": self.query,
            "groups": self.groups,
            "watch": self.watch,
            "unwatch": self.unwatch,
        }

    async def status(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        service = self.service
        stats = service.writer.stats
        files = await asyncio.to_thread(len, service.index)
        unwatched = [os.fsdecode(f) for fs in service.unwatched.values() for f in fs]
        return {
            # A full disk under the index pauses indexing; reads still answer.
            "state": "disk_full" if service.writer.paused else service.state,
            "paused": service.writer.paused,
            "pid": os.getpid(),
            "index": service.index_path,
            "radius": service.index.radius,
            "roots": [os.fsdecode(r) for r in await asyncio.to_thread(service.index.roots)],
            "files": files,
            "queue": service.writer.queue_length,
            "hashed": stats.hashed,
            "failed": stats.failed,
            "unchanged": stats.unchanged,
            "moved": stats.moved,
            "removed": stats.removed,
            "alerts": stats.alerts,
            "leaks": service.leaks,  # alerts across splits, counted among the alerts too
            "subscribers": len(service.server.subscribers),
            "uptime_s": round(service.uptime_s(), 3),
            "unwatched": unwatched,
            "rescanned_folders": len(unwatched),  # past the watch limit: rescanned instead
            "rescan_interval_s": service.config.rescan_interval_s,
            "missing_roots": [os.fsdecode(r) for r in sorted(service.lost_roots)],
            "last_alerts": list(service.recent_alerts)[-5:],
            "last_leaks": list(service.recent_leaks)[-5:],
            "last_failures": list(stats.last_failures)[-5:],
        }

    async def query(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        radius = radius_arg(args)
        index = self.service.index
        target: str | int = hash_arg(args) if "hash" in args else path_arg(args)

        def find() -> list[Match]:  # in a thread: a stat can hang on a dead mount
            if isinstance(target, int):
                return shown_to(index.query(target, radius), peer)
            require_readable(target, peer)
            real = os.path.realpath(target)  # hashing processes follow no symbolic link
            fp = self.service.writer.fingerprint(os.fsencode(real))
            return shown_to(index.query(real, radius, fingerprinted=fp), peer)

        executor = self._decoding if isinstance(target, str) else None
        matches = await asyncio.get_running_loop().run_in_executor(executor, find)
        asked = target if isinstance(target, str) else f"{target:016x}"
        return {"query": asked, "matches": [m.to_json() for m in matches]}

    async def groups(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        radius = radius_arg(args)
        # In the writer thread: a radius above the stored pairs' recomputes them (a write).
        found = await asyncio.wrap_future(self.service.writer.call(lambda i: i.groups(radius)))
        return {"groups": [group_to_json(g) for g in found]}

    async def watch(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        path = path_arg(args)
        if not os.path.isdir(path):
            raise bad_request(f"{path}: not a folder")
        service = self.service
        root = absolute(path)
        await asyncio.wrap_future(service.writer.call(lambda i: i.add_root(root)))
        await asyncio.to_thread(service.sync_watches)
        service.writer.submit(Reconcile([root]))
        return {"watching": os.fsdecode(root), "roots": await self._roots()}

    async def unwatch(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        path = path_arg(args)
        service = self.service
        root = absolute(path)
        removed = await asyncio.wrap_future(service.writer.call(lambda i: i.remove_root(root)))
        if not removed:
            roots = ", ".join(await self._roots()) or "none"
            raise bad_request(f"{path}: not a watched folder (watched: {roots})")
        await asyncio.to_thread(service.sync_watches)
        return {"unwatched": os.fsdecode(root), "roots": await self._roots()}

    async def _roots(self) -> list[str]:
        return [os.fsdecode(r) for r in await asyncio.to_thread(self.service.index.roots)]
