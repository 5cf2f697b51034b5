"""The socket's file: bound 0600 with no window for other users, stale ones replaced."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
import tempfile
from pathlib import Path

from dupwatch.index.errors import DupwatchError

log = logging.getLogger(__name__)


class ServerError(DupwatchError):
    """The socket cannot be served (in use by a running service, bad folder)."""


def bind_private(path: Path, *, backlog: int) -> socket.socket:
    """A listening socket at `path` that is 0600 from the moment it is reachable there.

    It is bound in a fresh 0700 folder beside `path`, made 0600, then renamed into place:
    no other user can reach it between bind() and chmod().
    """
    private = tempfile.mkdtemp(prefix=".b", dir=path.parent)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        staged = os.path.join(private, "s")
        sock.bind(staged)
        os.chmod(staged, 0o600)
        sock.listen(backlog)
        os.rename(staged, path)
    except OSError:
        sock.close()
        raise
    finally:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(private, "s"))
        os.rmdir(private)
    return sock


def remove_stale_socket(path: Path) -> None:
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
