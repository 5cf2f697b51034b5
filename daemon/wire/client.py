"""A blocking client for the service's socket: `Client(path).call(op, **args)` and `subscribe()`."""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dupwatch.daemon.config import default_socket_path
from dupwatch.daemon.wire import protocol
from dupwatch.daemon.wire.protocol import ErrorCode
from dupwatch.index.errors import DupwatchError

log = logging.getLogger(__name__)

CONNECT_RETRY_S = 0.05
START_HINT = "start it with `dupwatch daemon DIR...` or `systemctl --user start dupwatch`"


class DaemonNotRunning(DupwatchError):
    """Nothing answers on the socket; the message says how to start the service."""

    def __init__(self, socket_path: Path | str, cause: str = "no service listening") -> None:
        self.socket_path = str(socket_path)
        self.cause = cause
        super().__init__(
            f"the dupwatch service is not running ({self.socket_path}: {cause}); {START_HINT}"
        )


class Client:
    """One connection to the service, opened on first use; a context manager.

    `timeout_s` bounds each wait for a response (None waits forever, as `subscribe` does).
    """

    def __init__(self, socket_path: Path | str | None = None, *, timeout_s: float | None = 30.0):
        self.socket_path = Path(socket_path) if socket_path is not None else default_socket_path()
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._file: Any = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def connect(self) -> None:
        """Connect now; raises DaemonNotRunning when nothing listens on the socket.

        A full connection queue (the service busy accepting a crowd) is waited out until
        `timeout_s`: on a Unix socket it fails at once with EAGAIN instead of blocking."""
        if self._sock is not None:
            return
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        while True:
            try:
                self._sock = self._connect_once()
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise DupwatchError(
                        f"{self.socket_path}: the service is busy: its connection queue stayed "
                        f"full for {self.timeout_s} s"
                    ) from None
                time.sleep(CONNECT_RETRY_S)
        self._file = self._sock.makefile("rb")

    def _connect_once(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout_s)
        try:
            sock.connect(str(self.socket_path))
        except BlockingIOError:
            sock.close()
            raise
        except FileNotFoundError:
            sock.close()
            raise DaemonNotRunning(self.socket_path, "no such socket") from None
        except ConnectionRefusedError:
            sock.close()
            raise DaemonNotRunning(self.socket_path, "connection refused") from None
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EACCES:
                raise DupwatchError(f"{self.socket_path}: permission denied") from None
            raise DaemonNotRunning(self.socket_path, exc.strerror or str(exc)) from None
        return sock

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Send one request and return the successful response object (with `v` and `ok`).

        Raises the error the service answered with (a DupwatchError subclass), ProtocolError
        on a malformed answer, DaemonNotRunning when it cannot connect or the service hung up.
        A connection the service closed to make room (a crowd of idle connections) is opened
        again until `timeout_s`: the request was never read, so nothing ran twice.
        """
        line = protocol.encode_request(op, **args)
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        while True:
            answer = self._exchange(line)
            if not _turned_away(answer) or (deadline is not None and time.monotonic() >= deadline):
                return protocol.check_response(answer)
            self.close()
            time.sleep(CONNECT_RETRY_S)

    def subscribe(self) -> Iterator[dict[str, Any]]:
        """Subscribe now; the iterator yields each event as it arrives, until the service ends.

        Raises like `call` when the subscription itself fails.
        """
        self.call("subscribe")
        assert self._sock is not None
        self._sock.settimeout(None)
        return self._events()

    def _events(self) -> Iterator[dict[str, Any]]:
        while True:
            try:
                line = self._file.readline(protocol.MAX_RESPONSE_BYTES + 1)
            except OSError:
                return
            if not line:
                return
            yield protocol.decode_line(line, limit=protocol.MAX_RESPONSE_BYTES)

    def _exchange(self, line: bytes) -> dict[str, Any]:
        self.connect()
        assert self._sock is not None
        try:
            self._sock.sendall(line)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed before reading the request: the line it left says why, if any
        return self._receive()

    def _receive(self) -> dict[str, Any]:
        try:
            line = self._file.readline(protocol.MAX_RESPONSE_BYTES + 1)
        except TimeoutError:
            self.close()
            raise DupwatchError(
                f"{self.socket_path}: no answer within {self.timeout_s} s; the service is busy"
            ) from None
        except ConnectionResetError:
            line = b""
        if not line:
            self.close()
            raise DaemonNotRunning(self.socket_path, "the service hung up")
        return protocol.decode_line(line, limit=protocol.MAX_RESPONSE_BYTES)


def _turned_away(answer: dict[str, Any]) -> bool:
    error = answer.get("error")
    return isinstance(error, dict) and error.get("code") == ErrorCode.TOO_MANY_CONNECTIONS


def call(op: str, socket_path: Path | str | None = None, **args: Any) -> dict[str, Any]:
    """One request on a fresh connection; see Client.call."""
    with Client(socket_path) as client:
        return client.call(op, **args)
