"""A hashing child process driven over a pipe: the time limit and memory cap of one file,
where the caller cannot use a process pool (a Dask worker is a daemonic process, which
multiprocessing forbids to have children) or cannot take SIGALRM (a worker's task thread).

The child (`python -m dupwatch.index.hashing.child MEMORY_BYTES`) caps its address space,
then answers requests (op, paths, time limit) with one reply per file, in order, each file
under bounded() in its main thread. The parent (ChildHasher) waits for each reply at most
the file's time limit plus a grace: past it the child is killed and the file reported as
timed out; a child that dies is replaced, and a file in hand when it died twice is reported
as UnreadableFile. Since the child hashes one file at a time, the blame is exact.
"""

from __future__ import annotations

import os
import pickle
import select
import struct
import subprocess
import sys
import time
from typing import Any

from dupwatch.index.errors import FingerprintError, UnreadableFile
from dupwatch.index.hashing.limits import (
    HARD_GRACE_S,
    HASH_TIMEOUT_S,
    WORKER_MEMORY_BYTES,
    OutOfMemory,
    timed_out,
)

HASH, DIGEST = "hash", "digest"
_LENGTH = struct.Struct("<I")


class _Died(Exception):
    pass


class _Late(Exception):
    pass


class ChildHasher:
    """One hashing child process, started on first use and again after it dies."""

    def __init__(
        self,
        timeout_s: float | None = HASH_TIMEOUT_S,
        memory_bytes: int | None = WORKER_MEMORY_BYTES,
        grace_s: float = HARD_GRACE_S,
    ) -> None:
        self.timeout_s = timeout_s
        self.memory_bytes = memory_bytes
        self.grace_s = grace_s
        self._child: subprocess.Popen[bytes] | None = None
        self._crashes: dict[bytes, int] = {}

    def run(self, op: str, paths: list[bytes]) -> list[Any]:
        """Outcomes of `op` (HASH: tasks.hash_file's; DIGEST: (path, digest or None)) for
        every path, in order."""
        done: list[Any] = []
        todo = list(paths)
        while todo:
            child = self._started()
            _send(child, (op, todo, self.timeout_s))
            for at, path in enumerate(todo):
                try:
                    reply = self._reply(child)
                    done.append(reply)
                    if op == HASH and isinstance(reply[1], OutOfMemory):
                        # What the failed decode left mapped stays under the cap: start afresh.
                        self.close()
                        todo = todo[at + 1 :]
                        break
                except _Late:
                    self.close()
                    done.append(_failed(op, path, timed_out(path, self.timeout_s)))
                    todo = todo[at + 1 :]
                    break
                except _Died:
                    self.close()
                    crashes = self._crashes[path] = self._crashes.get(path, 0) + 1
                    if crashes >= 2:
                        reason = "the hashing process died while reading it"
                        done.append(_failed(op, path, UnreadableFile(path, reason)))
                        todo = todo[at + 1 :]
                    else:
                        todo = todo[at:]
                    break
            else:
                todo = []
        return done

    def close(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            child.kill()
            child.wait()
            for stream in (child.stdin, child.stdout):
                if stream is not None:
                    stream.close()

    def _started(self) -> subprocess.Popen[bytes]:
        if self._child is None or self._child.poll() is not None:
            self.close()
            memory = str(self.memory_bytes or 0)
            self._child = subprocess.Popen(
                [sys.executable, "-m", "dupwatch.index.hashing.child", memory],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        return self._child

    def _reply(self, child: subprocess.Popen[bytes]) -> Any:
        limit_s = (self.timeout_s or HASH_TIMEOUT_S) + self.grace_s
        deadline = time.monotonic() + limit_s
        assert child.stdout is not None
        fd = child.stdout.fileno()
        size = _LENGTH.unpack(_read_exact(fd, _LENGTH.size, deadline))[0]
        return pickle.loads(_read_exact(fd, size, deadline))


def _failed(op: str, path: bytes, error: FingerprintError) -> Any:
    if op == HASH:
        try:
            st: os.stat_result | None = os.lstat(path)
        except OSError:
            st = None
        return (path, error, st)
    return (path, None)


def _send(child: subprocess.Popen[bytes], message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    assert child.stdin is not None
    try:
        child.stdin.write(_LENGTH.pack(len(data)) + data)
        child.stdin.flush()
    except (BrokenPipeError, OSError):
        pass  # it died: the read of its first reply says so


def _read_exact(fd: int, size: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    while size:
        left_s = deadline - time.monotonic()
        if left_s <= 0 or not select.select([fd], [], [], left_s)[0]:
            raise _Late
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            raise _Died
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


# The child


def _serve(memory_bytes: int | None) -> None:
    from dupwatch.index.hashing.limits import init_process
    from dupwatch.index.hashing.tasks import digest_batch, hash_file

    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print must not corrupt the replies
    requests = sys.stdin.buffer
    init_process(memory_bytes)
    while True:
        head = requests.read(_LENGTH.size)
        if len(head) < _LENGTH.size:
            return  # the parent is gone
        op, paths, timeout_s = pickle.loads(requests.read(_LENGTH.unpack(head)[0]))
        for path in paths:
            if op == HASH:
                reply: Any = hash_file(path, timeout_s)
            else:
                reply = digest_batch([path], timeout_s)[0]
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
            replies.write(_LENGTH.pack(len(data)) + data)
            replies.flush()


if __name__ == "__main__":
    try:
        _serve(int(sys.argv[1]) or None)
    except (BrokenPipeError, KeyboardInterrupt):
        pass  # the parent is gone (its worker was lost) or stopping
