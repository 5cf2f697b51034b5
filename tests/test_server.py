"""The socket server on a real Unix socket: requests, bad input, slow subscribers, other uids."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dupwatch.daemon.service.server import Peer, Server, ServerError
from dupwatch.daemon.wire import protocol
from dupwatch.daemon.wire.client import Client, DaemonNotRunning
from dupwatch.daemon.wire.protocol import RemoteError
from dupwatch.index.errors import DupwatchError, NotAnImage

NOBODY = 65534


async def op_status(args: dict[str, Any], peer: Peer) -> dict[str, Any]:
    return {"answer": 42, "peer_uid": peer.uid}


async def op_query(args: dict[str, Any], peer: Peer) -> dict[str, Any]:
    raise NotAnImage(args.get("path", "?"), "not an image Pillow knows")


async def op_groups(args: dict[str, Any], peer: Peer) -> dict[str, Any]:
    raise RuntimeError("a bug in an op")


OPS = {"status": op_status, "query": op_query, "groups": op_groups}


class LoopThread:
    """A Server running on its own event loop in a background thread, as the service runs it."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout_s: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def stop(self) -> None:
        self.run(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(dir="/tmp", prefix="dwt"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def served(sock_dir: Path) -> Iterator[LoopThread]:
    running = LoopThread(Server(OPS, subscriber_queue=8))
    running.run(running.server.start(sock_dir / "run" / "s.sock"))
    yield running
    running.stop()


def socket_of(running: LoopThread) -> Path:
    assert running.server.path is not None
    return running.server.path


def raw_exchange(path: Path, payload: bytes, lines: int) -> list[dict[str, Any]]:
    """Send raw bytes and read `lines` response lines, as a misbehaving client would."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(20)
        sock.connect(str(path))
        sock.sendall(payload)
        reader = sock.makefile("rb")
        return [protocol.decode_line(reader.readline()) for _ in range(lines)]


def wait_until(condition: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_socket_folder_0700_and_socket_0600(served: LoopThread) -> None:
    path = socket_of(served)
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_status_round_trip(served: LoopThread) -> None:
    with Client(socket_of(served)) as client:
        first = client.call("status")
        second = client.call("status")
    assert first == second == {"v": 1, "ok": True, "answer": 42, "peer_uid": os.getuid()}


def test_op_errors_come_back_typed(served: LoopThread) -> None:
    with Client(socket_of(served)) as client:
        with pytest.raises(NotAnImage) as caught:
            client.call("query", path="/tmp/x.jpg")
        assert caught.value.path == "/tmp/x.jpg"
        with pytest.raises(RemoteError) as internal:
            client.call("groups")
        assert internal.value.code == "internal"
        assert "a bug" not in internal.value.message  # the traceback stays in the log
        with pytest.raises(RemoteError) as unknown:
            client.call("watch", path="/tmp")
        assert unknown.value.code == "unknown_op"
        assert client.call("status")["answer"] == 42


def test_garbage_then_good_request_on_the_same_connection(served: LoopThread) -> None:
    payload = (
        b"garbage\n"
        + b"{not json\n"
        + b'{"v": 1, "op": "nope"}\n'
        + b'{"v": 9, "op": "status"}\n'
        + b"\n"
        + b'{"v": 1, "op": "status"}\n'
    )
    answers = raw_exchange(socket_of(served), payload, 5)
    codes = [a["error"]["code"] for a in answers[:4]]
    assert codes == ["bad_json", "bad_json", "unknown_op", "unsupported_version"]
    assert answers[4] == {"v": 1, "ok": True, "answer": 42, "peer_uid": os.getuid()}


def test_ten_megabyte_line_is_refused_and_the_connection_lives(served: LoopThread) -> None:
    payload = b'{"v": 1, "op": "status", "x": "' + b"a" * (10 << 20) + b'"}\n'
    payload += b'{"v": 1, "op": "status"}\n'
    answers = raw_exchange(socket_of(served), payload, 2)
    assert answers[0]["error"]["code"] == "line_too_long"
    assert answers[1]["answer"] == 42


def test_non_utf8_path_round_trips(served: LoopThread) -> None:
    path = os.fsdecode(b"/tmp/\xff\xfeodd.jpg")
    with Client(socket_of(served)) as client, pytest.raises(NotAnImage) as caught:
        client.call("query", path=path)
    assert os.fsencode(caught.value.path) == b"/tmp/\xff\xfeodd.jpg"


def test_subscriber_gets_alerts_in_order(served: LoopThread) -> None:
    with Client(socket_of(served)) as client:
        stream = client.subscribe()
        wait_until(lambda: len(served.server.subscribers) == 1)
        for i in range(3):
            served.server.publish(protocol.duplicate_event(f"/p{i}.jpg", []))
        events = [next(stream) for _ in range(3)]
    assert [e["path"] for e in events] == ["/p0.jpg", "/p1.jpg", "/p2.jpg"]
    wait_until(lambda: not served.server.subscribers)


def test_stalled_subscriber_is_told_what_it_missed(served: LoopThread) -> None:
    """A subscriber that stops reading costs the service nothing and later learns the count."""
    path = socket_of(served)
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(str(path))
    stalled.sendall(protocol.encode_request("subscribe"))
    reader = stalled.makefile("rb")
    assert protocol.decode_line(reader.readline())["ok"] is True
    wait_until(lambda: len(served.server.subscribers) == 1)
    total = 3000
    padding = ["x" * 200]
    for i in range(total):
        served.server.publish(protocol.duplicate_event(f"/p{i}.jpg", padding))
    # The service answers others while the stalled subscriber's queue is full.
    with Client(path, timeout_s=10) as other:
        assert other.call("status")["answer"] == 42
    received = 0
    missed = 0
    stalled.settimeout(20)
    while received + missed < total:
        event = protocol.decode_line(reader.readline())
        if event["event"] == "missed":
            missed += event["count"]
        else:
            received += 1
    assert missed > 0 and received + missed == total
    stalled.close()


def test_another_uid_is_refused(sock_dir: Path) -> None:
    """The peer check itself (SO_PEERCRED), not file permissions, refuses user nobody."""
    setpriv = shutil.which("setpriv")
    socat = shutil.which("socat")
    if os.getuid() != 0 or not setpriv or not socat:
        pytest.skip("needs root, setpriv and socat to connect as another uid")
    running = LoopThread(Server(OPS))
    try:
        path = sock_dir / "s.sock"
        running.run(running.server.start(path))
        os.chmod(sock_dir, 0o711)
        os.chmod(path, 0o666)  # let nobody connect so that only the uid check stands in the way
        result = subprocess.run(
            [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
            + [socat, "-t5", "-", f"UNIX-CONNECT:{path}"],
            input=protocol.encode_request("status"),
            capture_output=True,
            timeout=30,
        )
        answer = protocol.decode_line(result.stdout.splitlines()[0])
        assert answer["ok"] is False
        assert answer["error"]["code"] == "forbidden"
        assert f"uid {NOBODY}" in answer["error"]["message"]
        with Client(path) as client:  # and the service still serves its own user
            assert client.call("status")["answer"] == 42
    finally:
        running.stop()


def test_socat_is_a_client(served: LoopThread) -> None:
    socat = shutil.which("socat")
    if not socat:
        pytest.skip("socat is not installed (Debian package socat)")
    result = subprocess.run(
        [socat, "-t5", "-", f"UNIX-CONNECT:{socket_of(served)}"],
        input=b'{"v": 1, "op": "status"}\n',
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert protocol.decode_line(result.stdout) == {
        "v": 1,
        "ok": True,
        "answer": 42,
        "peer_uid": os.getuid(),
    }


def test_close_removes_the_socket(sock_dir: Path) -> None:
    running = LoopThread(Server(OPS))
    path = sock_dir / "s.sock"
    running.run(running.server.start(path))
    assert path.exists()
    running.stop()
    assert not path.exists()
    with pytest.raises(DaemonNotRunning, match="dupwatch daemon"):
        Client(path).call("status")


def test_live_socket_is_not_taken_over(served: LoopThread) -> None:
    second = LoopThread(Server(OPS))
    try:
        with pytest.raises(ServerError, match="already listening"):
            second.run(second.server.start(socket_of(served)))
    finally:
        second.stop()
    with Client(socket_of(served)) as client:
        assert client.call("status")["answer"] == 42


def test_stale_socket_is_replaced_and_a_plain_file_left_alone(sock_dir: Path) -> None:
    stale = sock_dir / "stale.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(stale))
    dead.close()  # the file stays, nobody listens: what a killed service leaves
    running = LoopThread(Server(OPS))
    try:
        running.run(running.server.start(stale))
        with Client(stale) as client:
            assert client.call("status")["answer"] == 42
        plain = sock_dir / "notes.txt"
        plain.write_text("keep me")
        other = LoopThread(Server(OPS))
        try:
            with pytest.raises(ServerError, match="not a socket"):
                other.run(other.server.start(plain))
        finally:
            other.stop()
        assert plain.read_text() == "keep me"
    finally:
        running.stop()


def test_socket_activation_socket_is_served_and_left_in_place(sock_dir: Path) -> None:
    path = sock_dir / "activated.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    running = LoopThread(Server(OPS))
    try:
        running.run(running.server.start(sock=listener))
        with Client(path) as client:
            assert client.call("status")["answer"] == 42
    finally:
        running.stop()
    assert path.exists()  # systemd owns an activated socket's file


def test_a_client_waits_out_a_full_connection_queue(sock_dir: Path) -> None:
    """A Unix socket whose queue of connections waiting to be accepted is full refuses a
    connect at once with EAGAIN; the client waits (up to its timeout) instead of reporting
    the service as not running."""
    path = sock_dir / "busy.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(0)
    waiting = []
    while True:  # fill the queue with connections nobody accepts
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(str(path))
        except BlockingIOError:
            sock.close()
            break
        waiting.append(sock)
    try:
        with pytest.raises(DupwatchError, match="busy: its connection queue stayed full") as e:
            Client(path, timeout_s=0.5).connect()
        assert not isinstance(e.value, DaemonNotRunning)

        def accept_the_queue() -> None:
            for _ in waiting:
                listener.accept()[0].close()

        threading.Timer(0.3, accept_the_queue).start()
        started = time.monotonic()
        with Client(path, timeout_s=10) as client:
            client.connect()
        assert 0.25 < time.monotonic() - started < 10
    finally:
        for sock in waiting:
            sock.close()
        listener.close()


# Past the cap: a client turned away asks again


@contextlib.contextmanager
def one_slot(sock_dir: Path, groups_s: float = 0.5) -> Iterator[LoopThread]:
    """A server with room for one connection, whose `groups` takes `groups_s`."""

    async def slow_groups(args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        await asyncio.sleep(groups_s)
        return {"groups": []}

    running = LoopThread(Server({**OPS, "groups": slow_groups}, max_connections=1))
    running.run(running.server.start(sock_dir / "run" / "s.sock"))
    try:
        yield running
    finally:
        running.stop()


def busy_with_groups(running: LoopThread) -> threading.Thread:
    """Take the only slot with a slow request (a connection being answered is not idle)."""
    busy = threading.Thread(
        target=raw_exchange, args=(socket_of(running), protocol.encode_request("groups"), 1)
    )
    busy.start()
    wait_until(lambda: len(running.server.connections) == 1)
    return busy


def test_a_client_closed_to_make_room_asks_again(sock_dir: Path) -> None:
    """The client's idle connection is closed to make room for another; its next call
    reads why, connects again (making room in turn) and gets its answer."""
    with one_slot(sock_dir) as running, Client(socket_of(running), timeout_s=10) as client:
        assert client.call("status")["answer"] == 42
        # The newcomer is answered, so the client's idle connection was closed for it.
        [answer] = raw_exchange(socket_of(running), protocol.encode_request("status"), 1)
        assert answer["answer"] == 42
        assert client.call("status")["answer"] == 42


def test_a_client_turned_away_while_all_are_busy_waits_its_turn(sock_dir: Path) -> None:
    with one_slot(sock_dir, groups_s=0.5) as running:
        busy = busy_with_groups(running)
        started = time.monotonic()
        with Client(socket_of(running), timeout_s=10) as client:
            assert client.call("status")["answer"] == 42
        assert time.monotonic() - started > 0.3  # it waited for the slow request to end
        busy.join(10)


def test_a_client_gives_up_on_a_full_service_after_its_timeout(sock_dir: Path) -> None:
    with one_slot(sock_dir, groups_s=3) as running:
        busy = busy_with_groups(running)
        with pytest.raises(RemoteError, match="too many connections") as error:
            Client(socket_of(running), timeout_s=0.5).call("status")
        assert error.value.code == "too_many_connections"
        busy.join(10)
