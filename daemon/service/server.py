"""The asyncio Unix socket server: peer check, one response per request line, alert fan-out.

It knows the wire format and the subscribers; what each op does is the `ops` table it is given.
Connections are capped (fds and buffers stay bounded); past the cap the longest idle or
stalled one makes room, or the newcomer is told no.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import socket
import stat
import struct
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dupwatch.daemon.service.socketfile import ServerError as ServerError  # raised by start()
from dupwatch.daemon.service.socketfile import bind_private, remove_stale_socket
from dupwatch.daemon.wire import protocol
from dupwatch.daemon.wire.protocol import ErrorCode, ProtocolError
from dupwatch.index.errors import DupwatchError

log = logging.getLogger(__name__)

# Far above what the CLI, `dupwatch alerts` and the notification bridge open together; each
# connection holds an fd and at most a request line (plus one socket read) of buffer.
MAX_CONNECTIONS = 256
FD_RESERVE = 128  # for the index, the watches, the hashing processes and the files read
# Connections the kernel queues before accept(): they hold no fd of ours, and when the queue
# is full a client's connect() fails (EAGAIN), so a burst should not fill it.
BACKLOG = 1024
# Accepted per wake-up: the fds of connections closed to make room are freed by the loop's
# next turn, so at most this many are open above the cap.
ACCEPT_BATCH = 16
ACCEPT_RETRY_S = 1.0  # after accept() ran out of fds or memory
CLOSE_WAIT_S = 1.0


@dataclass(frozen=True)
class Peer:
    """Who is on the other end, as the kernel reports it (SO_PEERCRED)."""

    pid: int
    uid: int
    gid: int


OpHandler = Callable[[dict[str, Any], Peer], Awaitable[dict[str, Any]]]


@dataclass(eq=False)
class Connection:
    """One client: whether it may be closed to make room (waiting for a request, or stuck
    writing to a peer that does not read), whether it ever sent a byte, and when it last
    sent or took one."""

    writer: asyncio.StreamWriter | None = None  # None while the stream is being set up
    evictable: bool = False
    has_sent: bool = False
    since: float = field(default_factory=time.monotonic)

    def mark(self, *, evictable: bool) -> None:
        self.evictable = evictable
        self.since = time.monotonic()

    def touch(self) -> None:
        self.has_sent = True
        self.since = time.monotonic()

    def eviction_order(self) -> tuple[bool, float]:
        """Silent ones first (a flood of idle connections), then the longest quiet; a client
        busy sending a long line is never closed for a squatter."""
        return (self.has_sent, self.since)


class _Reader(asyncio.StreamReader):
    """A StreamReader that tells its connection when bytes arrive: a client still sending is
    not idle, however long its line."""

    def __init__(self, conn: Connection, limit: int) -> None:
        super().__init__(limit=limit)
        self._conn = conn

    def feed_data(self, data: bytes) -> None:
        self._conn.touch()
        super().feed_data(data)


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

    def __init__(
        self,
        ops: Mapping[str, OpHandler],
        *,
        subscriber_queue: int = 1000,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.ops = dict(ops)
        self.subscriber_queue = subscriber_queue
        self.max_connections = min(max_connections, _fd_budget())
        self.subscribers: set[Subscriber] = set()
        self.path: Path | None = None
        self._owns_path = False
        self._listener: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections: set[Connection] = set()
        self._closing = False

    async def start(self, path: Path | None = None, *, sock: socket.socket | None = None) -> None:
        """Listen on `sock` (socket activation) or bind `path` (folder 0700, socket 0600).

        Raises ServerError when another live service answers on `path`.
        """
        self._loop = asyncio.get_running_loop()
        if sock is None:
            if path is None:
                raise ValueError("a socket path or a listening socket is required")
            self.path = path
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if stat.S_IMODE(path.parent.stat().st_mode) & 0o077:
                log.warning("%s: others may list this folder (the socket is 0600)", path.parent)
            remove_stale_socket(path)
            sock = bind_private(path, backlog=BACKLOG)
            self._owns_path = True
        sock.setblocking(False)
        self._listener = sock
        self._loop.add_reader(sock.fileno(), self._accept)

    async def close(self) -> None:
        """Stop listening, end every connection and remove the socket file we created."""
        self._closing = True
        if self._listener is not None and self._loop is not None:
            self._loop.remove_reader(self._listener.fileno())
            self._listener.close()
        for conn in list(self.connections):
            if conn.writer is not None:
                conn.writer.transport.abort()
        if self._tasks:
            # Aborted transports end most connections by themselves; cancel what is still busy.
            _done, busy = await asyncio.wait(set(self._tasks), timeout=2.0)
            for task in busy:
                task.cancel()
            if busy:
                await asyncio.wait(busy, timeout=2.0)
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

    def _accept(self) -> None:
        """Take the connections waiting; past the cap, make room or turn the newcomer away."""
        assert self._listener is not None and self._loop is not None
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:  # the peer gave up while queued
                continue
            except OSError as exc:  # out of fds or memory: wait rather than spin
                log.warning("cannot accept connections for now: %s", exc.strerror or exc)
                self._pause_accepting()
                return
            if not self._make_room():
                _turn_away_socket(sock, f"too many connections (at most {self.max_connections})")
                continue
            conn = Connection()
            self.connections.add(conn)
            task = self._loop.create_task(self._serve(sock, conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _pause_accepting(self) -> None:
        assert self._listener is not None and self._loop is not None
        fd = self._listener.fileno()
        self._loop.remove_reader(fd)

        def resume() -> None:
            if not self._closing:
                self._loop.add_reader(fd, self._accept)  # type: ignore[union-attr]

        self._loop.call_later(ACCEPT_RETRY_S, resume)

    def _make_room(self) -> bool:
        """Below the cap, or the longest idle or stalled connection was closed: True."""
        if len(self.connections) < self.max_connections:
            return True
        idle = [c for c in self.connections if c.evictable and c.writer is not None]
        if not idle:
            log.warning("refused a connection: %d open, all busy", len(self.connections))
            return False
        oldest = min(idle, key=Connection.eviction_order)
        assert oldest.writer is not None
        _turn_away(oldest.writer, "closed to make room: too many connections, this one idle")
        self.connections.discard(oldest)  # its task ends on the aborted transport
        return True

    async def _serve(self, sock: socket.socket, conn: Connection) -> None:
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await _open_stream(sock, conn)
            conn.writer = writer
            conn.mark(evictable=True)
            await self._converse(reader, conn)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            if not self._closing:
                raise
        except Exception:
            log.exception("connection failed")
        finally:
            self.connections.discard(conn)  # gone already when closed to make room
            if writer is not None:
                await _close(writer)
            else:
                sock.close()

    async def _converse(self, reader: asyncio.StreamReader, conn: Connection) -> None:
        assert conn.writer is not None
        peer = peer_of(conn.writer.get_extra_info("socket"))
        if peer.uid != os.getuid():
            await _refuse(peer, reader, conn)
            return
        while True:
            try:
                line = await _read_line(reader)
            except ProtocolError as exc:
                await _send(conn, protocol.error_for(exc))
                continue
            if line is None:
                return
            if not line.strip():
                continue
            conn.mark(evictable=False)
            if await self._answer(line, peer, reader, conn):
                return

    async def _answer(
        self, line: bytes, peer: Peer, reader: asyncio.StreamReader, conn: Connection
    ) -> bool:
        """Answer one request line; True when the connection became a finished alert stream."""
        try:
            request = protocol.decode_request(line)
        except ProtocolError as exc:
            await _send(conn, protocol.error_for(exc))
            return False
        if request.op == "subscribe":
            await self._stream(reader, conn)
            return True
        await _send(conn, await self._call(request, peer))
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

    async def _stream(self, reader: asyncio.StreamReader, conn: Connection) -> None:
        """Send alerts until the subscriber hangs up; what does not fit is counted, not queued.

        A subscriber waiting for alerts is not idle (it is not closed to make room); one
        stuck on a write is.
        """
        sub = Subscriber(asyncio.Queue(maxsize=self.subscriber_queue))
        self.subscribers.add(sub)
        hangup = asyncio.ensure_future(_wait_eof(reader))
        getter: asyncio.Future[dict[str, Any]] | None = None
        try:
            await _send(conn, protocol.ok(), then_evictable=False)
            while not hangup.done():
                getter = asyncio.ensure_future(sub.queue.get())
                await asyncio.wait({getter, hangup}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    return
                await _send(conn, getter.result(), then_evictable=False)
                sub.sent += 1
                if sub.missed and sub.queue.empty():
                    missed, sub.missed = sub.missed, 0
                    await _send(conn, protocol.missed_event(missed), then_evictable=False)
        finally:
            self.subscribers.discard(sub)
            hangup.cancel()
            if getter is not None:
                getter.cancel()


async def _open_stream(
    sock: socket.socket, conn: Connection
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """asyncio.open_unix_connection for an accepted socket, with a reader that notes activity."""
    loop = asyncio.get_running_loop()
    reader = _Reader(conn, limit=protocol.MAX_REQUEST_BYTES + 1)
    stream = asyncio.StreamReaderProtocol(reader)
    transport, _ = await loop.connect_accepted_socket(lambda: stream, sock=sock)
    return reader, asyncio.StreamWriter(transport, stream, reader, loop)


async def _refuse(peer: Peer, reader: asyncio.StreamReader, conn: Connection) -> None:
    """Answer another user's first request with `forbidden`, reading nothing else from it.

    Waiting for the request (briefly) lets the client read the answer instead of meeting a
    closed socket while it is still writing.
    """
    log.warning("refused a connection from uid %d (pid %d)", peer.uid, peer.pid)
    with contextlib.suppress(asyncio.TimeoutError, ProtocolError):
        await asyncio.wait_for(_read_line(reader), 5.0)
    message = f"uid {peer.uid} may not use the service of uid {os.getuid()}"
    await _send(conn, protocol.error(ErrorCode.FORBIDDEN, message))


async def _send(conn: Connection, obj: dict[str, Any], *, then_evictable: bool = True) -> None:
    """Write one line; while the peer does not read, the connection may be closed for room."""
    writer = conn.writer
    assert writer is not None
    writer.write(protocol.encode(obj))
    if writer.transport.get_write_buffer_size():
        conn.mark(evictable=True)
        await writer.drain()
    conn.mark(evictable=then_evictable)


def _too_many(message: str) -> bytes:
    return protocol.encode(protocol.error(ErrorCode.TOO_MANY_CONNECTIONS, message))


def _turn_away(writer: asyncio.StreamWriter, message: str) -> None:
    """Tell the peer why (if its socket has room for the line), then drop the connection."""
    with contextlib.suppress(Exception):
        writer.write(_too_many(message))
    writer.transport.abort()


def _turn_away_socket(sock: socket.socket, message: str) -> None:
    """The same for a socket just accepted: one non-blocking send, then close."""
    with contextlib.suppress(OSError):
        sock.setblocking(False)
        sock.send(_too_many(message))
    sock.close()


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close after the last answer; a peer that does not read is cut off, not waited for."""
    if writer.transport.get_write_buffer_size():
        writer.transport.abort()
    else:
        writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), CLOSE_WAIT_S)


async def _read_line(reader: asyncio.StreamReader) -> bytes | None:
    """The next line, None at end of input; ProtocolError after skipping an overlong line."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        return exc.partial or None
    except asyncio.LimitOverrunError as exc:
        await _skip_line(reader, exc.consumed)
        raise ProtocolError(
            ErrorCode.LINE_TOO_LONG, f"request longer than {protocol.MAX_REQUEST_BYTES} bytes"
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


def _fd_budget() -> int:
    """How many connections the open-file limit leaves room for."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(8, (soft - FD_RESERVE) // 2)
