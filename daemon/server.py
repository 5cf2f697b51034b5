"""The asyncio Unix socket server: peer check, one response per request line, alert fan-out.

It knows the wire format and the subscribers; what each op does is the `ops` table it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dupwatch.daemon import protocol
from dupwatch.daemon.protocol import ErrorCode, ProtocolError
from dupwatch.index.errors import DupwatchError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Peer:
    """Who is on the other end, as the kernel reports it (SO_PEERCRED)."""

    pid: int
    uid: int
    gid: int


OpHandler = Callable[[dict[str, Any], Peer], Awaitable[dict[str, Any]]]


class ServerError(DupwatchError):
    """The socket cannot be served (in use by a running service, bad folder)."""


@dataclass(eq=False)
class Subscriber:
    """One alert stream: a bounded queue, and how many alerts did not fit in it."""

    queue: asyncio.Queue[dict[str, Any]]
    missed: int = 0
    sent: int = field(default=0)


def peer_of(sock: Any) -> Peer:
    """The credentials of the process connected on the Unix socket `sock`."""
    fmt = "3i"
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize(fmt))
    pid, uid, gid = struct.unpack(fmt, raw)
    return Peer(pid, uid, gid)


class Server:
    """Serve `ops` on a Unix stream socket and fan alerts out to subscribers.

    Runs in one event loop; `publish` may be called from any thread.
    """

    def __init__(self, ops: Mapping[str, OpHandler], *, subscriber_queue: int = 1000) -> None:
        self.ops = dict(ops)
        self.subscriber_queue = subscriber_queue
        self.subscribers: set[Subscriber] = set()
        self.path: Path | None = None
        self._owns_path = False
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._closing = False

    async def start(self, path: Path | None = None, *, sock: socket.socket | None = None) -> None:
        """Listen on `sock` (socket activation) or bind `path` (folder 0700, socket 0600).

        Raises ServerError when another live service answers on `path`.
        """
        self._loop = asyncio.get_running_loop()
        limit = protocol.MAX_LINE_BYTES + 1
        if sock is not None:
            self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=limit)
            return
        if path is None:
            raise ValueError("a socket path or a listening socket is required")
        self.path = path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _remove_stale_socket(path)
        self._server = await asyncio.start_unix_server(self._serve, path=str(path), limit=limit)
        self._owns_path = True
        os.chmod(path, 0o600)

    async def close(self) -> None:
        """Stop listening, end every connection and remove the socket file we created."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            # Aborted transports end most connections by themselves; cancel what is still busy.
            _done, busy = await asyncio.wait(set(self._tasks), timeout=2.0)
            for task in busy:
                task.cancel()
            if busy:
                await asyncio.wait(busy, timeout=2.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        if self._owns_path and self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._owns_path = False

    def publish(self, event: dict[str, Any]) -> None:
        """Queue `event` for every subscriber; thread-safe and never blocks."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
            loop.call_soon_threadsafe(self._fan_out, event)

    def _fan_out(self, event: dict[str, Any]) -> None:
        for sub in self.subscribers:
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                sub.missed += 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._converse(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            if not self._closing:
                raise
        except Exception:
            log.exception("connection failed")
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 5.0)

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_of(writer.get_extra_info("socket"))
        if peer.uid != os.getuid():
            await _refuse(peer, reader, writer)
            return
        while True:
            try:
                line = await _read_line(reader)
            except ProtocolError as exc:
                await _send(writer, protocol.error_for(exc))
                continue
            if line is None:
                return
            if not line.strip():
                continue
            if await self._answer(line, peer, reader, writer):
                return

    async def _answer(
        self, line: bytes, peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request line; True when the connection became a finished alert stream."""
        try:
            request = protocol.decode_request(line)
        except ProtocolError as exc:
            await _send(writer, protocol.error_for(exc))
            return False
        if request.op == "subscribe":
            await self._stream(reader, writer)
            return True
        await _send(writer, await self._call(request, peer))
        return False

    async def _call(self, request: protocol.Request, peer: Peer) -> dict[str, Any]:
        handler = self.ops.get(request.op)
        if handler is None:
            return protocol.error(ErrorCode.UNKNOWN_OP, f"op {request.op!r} is not served here")
        try:
            return protocol.ok(**await handler(request.args, peer))
        except DupwatchError as exc:
            return protocol.error_for(exc)
        except Exception:
            log.exception("op %s failed", request.op)
            return protocol.error(ErrorCode.INTERNAL, f"{request.op} failed; see the service log")

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Send alerts until the subscriber hangs up; what does not fit is counted, not queued."""
        sub = Subscriber(asyncio.Queue(maxsize=self.subscriber_queue))
        self.subscribers.add(sub)
        hangup = asyncio.ensure_future(_wait_eof(reader))
        getter: asyncio.Future[dict[str, Any]] | None = None
        try:
            await _send(writer, protocol.ok())
            while not hangup.done():
                getter = asyncio.ensure_future(sub.queue.get())
                await asyncio.wait({getter, hangup}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    return
                await _send(writer, getter.result())
                sub.sent += 1
                if sub.missed and sub.queue.empty():
                    missed, sub.missed = sub.missed, 0
                    await _send(writer, protocol.missed_event(missed))
        finally:
            self.subscribers.discard(sub)
            hangup.cancel()
            if getter is not None:
                getter.cancel()


async def _refuse(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer another user's first request with `forbidden`, reading nothing else from it.

    Waiting for the request (briefly) lets the client read the answer instead of meeting a
    closed socket while it is still writing.
    """
    log.warning("refused a connection from uid %d (pid %d)", peer.uid, peer.pid)
    with contextlib.suppress(asyncio.TimeoutError, ProtocolError):
        await asyncio.wait_for(_read_line(reader), 5.0)
    message = f"uid {peer.uid} may not use the service of uid {os.getuid()}"
    await _send(writer, protocol.error(ErrorCode.FORBIDDEN, message))


async def _send(writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
    writer.write(protocol.encode(obj))
    await writer.drain()


async def _read_line(reader: asyncio.StreamReader) -> bytes | None:
    """The next line, None at end of input; ProtocolError after skipping an overlong line."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        return exc.partial or None
    except asyncio.LimitOverrunError as exc:
        await _skip_line(reader, exc.consumed)
        raise ProtocolError(
            ErrorCode.LINE_TOO_LONG, f"request longer than {protocol.MAX_LINE_BYTES} bytes"
        ) from None


async def _skip_line(reader: asyncio.StreamReader, consumed: int) -> None:
    """Throw away the rest of an overlong line, chunk by chunk, without holding it."""
    while True:
        await reader.readexactly(max(consumed, 1))
        try:
            await reader.readuntil(b"\n")
            return
        except asyncio.IncompleteReadError:
            return
        except asyncio.LimitOverrunError as exc:
            consumed = exc.consumed


async def _wait_eof(reader: asyncio.StreamReader) -> None:
    """Discard whatever a subscriber sends until it hangs up."""
    with contextlib.suppress(ConnectionError):
        while await reader.read(65536):
            pass


def _remove_stale_socket(path: Path) -> None:
    """Unlink a socket file nobody answers on; raise ServerError when a service answers.

    Anything else at `path` (a file, a folder) is left alone and refused.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ServerError(f"{path}: exists and is not a socket; choose another --socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise ServerError(f"{path}: cannot use the socket: {exc.strerror}") from None
        log.info("removing stale socket %s", path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    finally:
        probe.close()
    raise ServerError(f"{path}: another dupwatch service is already listening there")
