"""The service's side of systemd, in pure Python: sd_notify, socket activation, the watchdog.

Mirrors libsystemd's sd_notify(3), sd_listen_fds(3) and sd_watchdog_enabled(3) closely enough
for a Type=notify service; no systemd-python, no compiled code.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

from dupwatch.index.errors import DupwatchError

log = logging.getLogger(__name__)

# systemd passes the listening sockets as consecutive descriptors from 3 up (SD_LISTEN_FDS_START).
LISTEN_FDS_START = 3
_ACTIVATION_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
_WATCHDOG_VARIABLES = ("WATCHDOG_USEC", "WATCHDOG_PID")


class ActivationError(DupwatchError):
    """The socket-activation environment names descriptors this process cannot use."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"socket activation: {reason}")
        self.reason = reason


def notify(state: str) -> bool:
    """Send `state` ("READY=1", "STATUS=...", "WATCHDOG=1", lines joined by \\n) to systemd.

    Returns False when NOTIFY_SOCKET is unset (not run by systemd) or unusable, True once sent.
    A leading '@' in NOTIFY_SOCKET names a socket in the abstract namespace.
    """
    address = _notify_address(os.environ.get("NOTIFY_SOCKET", ""))
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError as error:
        # The manager went away or the socket is not ours to write: the service keeps running.
        log.warning("sd_notify to %r failed: %s", os.environ.get("NOTIFY_SOCKET"), error)
        return False
    return True


def _notify_address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + os.fsencode(value[1:])
    if value.startswith("/"):
        return value
    log.warning("NOTIFY_SOCKET=%r is neither a path nor an abstract socket; not notifying", value)
    return None


def listen_fds(unset_environment: bool = True) -> list[socket.socket]:
    """The listening sockets systemd passed to this process (LISTEN_FDS), in order; [] if none.

    Descriptors meant for another process (LISTEN_PID differs) are ignored. Each socket gets
    close-on-exec, like sd_listen_fds(). With `unset_environment`, the LISTEN_* variables are
    removed so that child processes do not take the sockets for theirs.
    Raises ActivationError when the variables are malformed or a descriptor is not a socket.
    """
    return [sock for _name, sock in listen_fds_with_names(unset_environment)]


def listen_fds_with_names(unset_environment: bool = True) -> list[tuple[str, socket.socket]]:
    """Like listen_fds(), each socket paired with its FileDescriptorName= ("unknown" if unset)."""
    try:
        count = _passed_fd_count()
        names = _fd_names(count)
        return [(name, _adopt(LISTEN_FDS_START + i)) for i, name in enumerate(names)]
    finally:
        if unset_environment:
            for variable in _ACTIVATION_VARIABLES:
                os.environ.pop(variable, None)


def _passed_fd_count() -> int:
    pid_text = os.environ.get("LISTEN_PID")
    if not pid_text:
        return 0
    pid = _parse_int("LISTEN_PID", pid_text)
    if pid != os.getpid():
        log.debug("LISTEN_PID=%d is not this process (%d): ignoring LISTEN_FDS", pid, os.getpid())
        return 0
    count = _parse_int("LISTEN_FDS", os.environ.get("LISTEN_FDS", "0"))
    if count < 0:
        raise ActivationError(f"LISTEN_FDS={count} is negative")
    return count


def _fd_names(count: int) -> list[str]:
    text = os.environ.get("LISTEN_FDNAMES")
    if text is None:
        return ["unknown"] * count
    names = text.split(":")
    if len(names) != count:
        raise ActivationError(f"LISTEN_FDNAMES has {len(names)} names for {count} descriptors")
    return names


def _adopt(fd: int) -> socket.socket:
    try:
        os.set_inheritable(fd, False)
        return socket.socket(fileno=fd)
    except OSError as error:
        raise ActivationError(f"descriptor {fd} is not a usable socket: {error}") from error


def _parse_int(variable: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ActivationError(f"{variable}={text!r} is not a number") from None


@dataclass(frozen=True)
class Watchdog:
    """systemd's watchdog for this process: WatchdogSec= arrives as WATCHDOG_USEC.

    systemd kills the service when no WATCHDOG=1 arrives within `timeout_s`; pinging every
    `ping_interval_s` (half of it, as sd_watchdog_enabled(3) advises) leaves room for a slow tick.
    """

    timeout_s: float

    @classmethod
    def from_environment(cls, unset_environment: bool = False) -> Watchdog | None:
        """The watchdog systemd armed for this process, or None (unset, other pid, or 0).

        Raises ActivationError when WATCHDOG_USEC or WATCHDOG_PID is not a number.
        """
        try:
            usec_text = os.environ.get("WATCHDOG_USEC")
            if not usec_text:
                return None
            pid_text = os.environ.get("WATCHDOG_PID")
            if pid_text and _parse_int("WATCHDOG_PID", pid_text) != os.getpid():
                return None
            usec = _parse_int("WATCHDOG_USEC", usec_text)
            return cls(timeout_s=usec / 1_000_000) if usec > 0 else None
        finally:
            if unset_environment:
                for variable in _WATCHDOG_VARIABLES:
                    os.environ.pop(variable, None)

    @property
    def ping_interval_s(self) -> float:
        return self.timeout_s / 2

    def ping(self) -> bool:
        """Tell systemd the service is alive; False when there is no one to tell."""
        return notify("WATCHDOG=1")

    async def run(self, is_healthy: Callable[[], bool] = lambda: True) -> None:
        """Ping every ping_interval_s while `is_healthy()` says so; runs until cancelled.

        Run it as a task on the loop that serves the socket, so that a stuck loop stops the
        pings; `is_healthy` lets the service withhold them when, say, its writer is stuck.
        """
        while True:
            if is_healthy():
                self.ping()
            else:
                log.warning("not pinging the systemd watchdog: the service reports itself stuck")
            await asyncio.sleep(self.ping_interval_s)
