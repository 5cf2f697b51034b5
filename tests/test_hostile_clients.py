"""Hostile clients against the real `dupwatch daemon`: fuzzed lines, deep JSON, huge numbers,
bad UTF-8, NUL bytes, 10 MB lines, floods of idle connections, subscribers that never read,
half-closed sockets. The service must keep answering a well-behaved client, keep its memory
bounded and give back every file descriptor.

DUPWATCH_FUZZ_LINES and DUPWATCH_FUZZ_IDLE scale the fuzz for a longer local run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import resource
import shutil
import socket
import stat
import struct
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image, PngImagePlugin

from dupwatch.daemon.service.ops import Ops
from dupwatch.daemon.service.server import ACCEPT_BATCH, MAX_CONNECTIONS, Peer, Server
from dupwatch.daemon.service.writer import Writer
from dupwatch.daemon.wire import protocol
from dupwatch.daemon.wire.client import Client
from dupwatch.daemon.wire.protocol import ErrorCode, ProtocolError
from dupwatch.index import Index, MissingFile

from support import SKIMAGE_DATA, Daemon, wait_for

TIMEOUT_S = 60.0
# A well-behaved client must be answered within this much during any abuse. The bound is
# one of liveness, not speed (tests/bench/soak.py measures speed): the 2 cores are shared.
ANSWER_BOUND_S = 5.0
# What the service may keep of the memory an abuse made it use (allocator slack).
RSS_SLACK_KIB = 64 * 1024
FUZZ_LINES = int(os.environ.get("DUPWATCH_FUZZ_LINES", "3000"))
IDLE_CONNECTIONS = int(os.environ.get("DUPWATCH_FUZZ_IDLE", "2000"))
CODES = {code.value for code in ErrorCode}
RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


class Service(Daemon):
    """The real `dupwatch daemon` on a folder of two near-duplicate photos, in /tmp, with one
    hashing worker; its socket alone in a folder of its own."""

    def __init__(self, base: Path) -> None:
        super().__init__(base, config="workers = 1\n")
        img = Image.open(SKIMAGE_DATA / "astronaut.png").convert("RGB")
        img.save(self.root / "astronaut.jpg", quality=90)
        img.resize((256, 256)).save(self.root / "small.jpg", quality=80)
        self.socket = base / "sock" / "s.sock"
        self.env["DUPWATCH_SOCKET"] = str(self.socket)
        self.start()
        assert self.process is not None
        self.pid = self.process.pid

    def answer_s(self) -> float:
        """Seconds a well-behaved client waits for a status; fails past ANSWER_BOUND_S.

        Well-behaved, as dupwatch.daemon.wire.client is: a full listen queue (EAGAIN) is waited
        out, and a connection closed to make room before its request was read is opened again.
        """
        started = time.monotonic()
        with Client(self.socket, timeout_s=ANSWER_BOUND_S) as client:
            answer = client.call("status")
        assert answer["state"] == "ready", answer
        return time.monotonic() - started

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def settle(self, fds_before: int) -> None:
        """Wait until the service holds no more descriptors than before the abuse."""
        wait_for(lambda: self.fds() <= fds_before, what=f"fds back to {fds_before}")


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    base = Path(tempfile.mkdtemp(dir="/tmp", prefix="dwh"))
    running = Service(base)
    yield running
    try:
        assert running.stop() == 0
        output = running.output()
        assert "Traceback" not in output and "connection failed" not in output, output
    finally:
        if running.process is not None:
            running.kill()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def enough_fds() -> None:
    """The idle flood needs more sockets than a default soft limit of 1024 allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = IDLE_CONNECTIONS + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def connect(service: Service, *, timeout_s: float = TIMEOUT_S) -> socket.socket:
    """A connection, retried while the listen backlog is full (as a flood fills it)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            sock.connect(str(service.socket))
            return sock
        except BlockingIOError:
            if time.monotonic() > deadline:
                sock.close()
                raise
            time.sleep(0.001)


def answers(sock: socket.socket, count: int) -> list[dict[str, Any]]:
    """Read `count` response lines; each must be a protocol object."""
    reader = sock.makefile("rb")
    out = []
    for _ in range(count):
        line = reader.readline()
        assert line.endswith(b"\n"), f"the service hung up after {len(out)} answers"
        out.append(protocol.decode_line(line))
    return out


def exchange(service: Service, payload: bytes, count: int) -> list[dict[str, Any]]:
    """Send `payload` on a new connection and read its `count` answers.

    During a flood a new connection may be closed to make room before its first byte is
    read (its sender was slow to send, as a thread of this busy process can be); it is told
    why, and, as dupwatch.daemon.wire.client does, opened again.
    """
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        with connect(service) as sock, sock.makefile("rb") as reader:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(payload)
            lines = [reader.readline() for _ in range(count)]
        replies = [protocol.decode_line(line) for line in lines if line.endswith(b"\n")]
        turned_away = replies and replies[0].get("error", {}).get("code") == "too_many_connections"
        if not turned_away or time.monotonic() > deadline:
            assert len(replies) == count, f"the service hung up after {len(replies)} answers"
            return replies


def assert_typed(answer: dict[str, Any]) -> None:
    """A version-1 answer; an error carries a known code, and never `internal` (a bug)."""
    assert answer.get("v") == 1 and isinstance(answer.get("ok"), bool), answer
    if not answer["ok"]:
        assert answer["error"]["code"] in CODES, answer
        assert answer["error"]["code"] != "internal", answer


# The fuzz


SEEDS = [
    b'{"v": 1, "op": "status"}',
    b'{"v": 1, "op": "query", "path": "/tmp/x.jpg", "radius": 8}',
    b'{"v": 1, "op": "query", "hash": "c3a1c3a1c3a1c3a1"}',
    b'{"v": 1, "op": "query", "hash": 1234567, "radius": 0}',
    b'{"v": 1, "op": "groups", "radius": 4}',
]

NASTY_VALUES = [
    "1e999",
    "-1e999",
    "NaN",
    "Infinity",
    "-0",
    "1" * 5000,  # past Python's int-from-text digit limit
    "1" * 4000,  # an integer that parses, far past 64 bits
    '"' + "f" * 60000 + '"',
    '"\\ud800"',
    '"/tmp/a\\u0000b.jpg"',
    '"relative.jpg"',
    '""',
    "true",
    "null",
    "[" * 500 + "]" * 500,
    '{"a": ' * 500 + "1" + "}" * 500,
    '"/' + "a" * 5000 + '.jpg"',
    '"/proc/self/fd/0"',
    '"/dev/zero"',
]


def nasty_request(rng: random.Random) -> bytes:
    """A well-formed request with a hostile value in one argument (or in v or op)."""
    op = rng.choice(["status", "query", "groups", "nonsense", "\\u0000", "x" * 300])
    key = rng.choice(["v", "op", "path", "hash", "radius", "extra"])
    fields = {"v": "1", "op": json.dumps(op)}
    fields[key] = rng.choice(NASTY_VALUES)
    return ("{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}").encode()


def mutated(rng: random.Random) -> bytes:
    """A seed request with a few bytes flipped, inserted or removed."""
    data = bytearray(rng.choice(SEEDS))
    for _ in range(rng.randint(1, 8)):
        at = rng.randrange(len(data) + 1)
        action = rng.random()
        if action < 0.4 and at < len(data):
            data[at] = rng.randrange(256)
        elif action < 0.8:
            data[at:at] = bytes([rng.randrange(256)])
        elif at < len(data):
            del data[at]
    return bytes(data)


def fuzz_line(rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.25:
        line = rng.randbytes(rng.randrange(600))
    elif kind < 0.6:
        line = mutated(rng)
    elif kind < 0.9:
        line = nasty_request(rng)
    else:
        line = rng.choice([b"[" * 100_000, b'{"a":' * 50_000, b"\xff\xfe\xfd", b"\x00" * 64])
    return line.replace(b"\n", b" ")


def is_harmless(line: bytes) -> bool:
    """False for the few lines that would be valid requests that change the service or turn
    the connection into an alert stream (a mutation can make one)."""
    try:
        request = protocol.decode_request(line)
    except ProtocolError:
        return True
    return request.op not in ("subscribe", "watch", "unwatch")


class Footprint:
    """The service's fds and RSS before, during and after one abuse, and how long a
    well-behaved client waited for its status meanwhile."""

    def __init__(self, service: Service, label: str) -> None:
        self.service = service
        self.label = label
        self.fds_before = self.most_fds = service.fds()
        self.rss_before = self.most_rss = service.rss_kib()
        self.latencies: list[float] = []

    def sample(self) -> None:
        self.most_fds = max(self.most_fds, self.service.fds())
        self.most_rss = max(self.most_rss, self.service.rss_kib())

    def probe(self) -> None:
        self.latencies.append(self.service.answer_s())
        self.sample()

    def finish(self) -> None:
        """Every fd given back, memory kept bounded; prints the figures."""
        self.probe()
        self.service.settle(self.fds_before)
        rss_after = self.service.rss_kib()
        print(
            f"\n{self.label}: fds {self.fds_before} -> at most {self.most_fds} -> "
            f"{self.service.fds()}; RSS {self.rss_before // 1024} -> at most "
            f"{self.most_rss // 1024} -> {rss_after // 1024} MiB; {len(self.latencies)} "
            f"status answers, slowest {max(self.latencies):.3f} s"
        )
        assert self.most_fds <= self.fds_before + MAX_CONNECTIONS + ACCEPT_BATCH + 8
        assert rss_after < self.rss_before + RSS_SLACK_KIB


def fuzz_batches(service: Service, lines: int, seed: int, footprint: Footprint) -> int:
    """Send `lines` fuzzed lines in batches of 100, each answered one typed answer per line."""
    rng = random.Random(seed)
    sent = 0
    while sent < lines:
        batch = [line for line in (fuzz_line(rng) for _ in range(100)) if is_harmless(line)]
        payload = b"".join(line + b"\n" for line in batch)
        replies = exchange(service, payload, sum(1 for line in batch if line.strip()))
        for reply in replies:
            assert_typed(reply)
        sent += len(batch)
        footprint.probe()
    return sent


def test_fuzzed_lines_each_get_one_typed_answer(service: Service) -> None:
    footprint = Footprint(service, f"{FUZZ_LINES} fuzzed lines")
    assert fuzz_batches(service, FUZZ_LINES, 7, footprint) >= FUZZ_LINES
    footprint.finish()


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"[" * 60_000, "bad_json"),  # under the line limit, far past the recursion limit
        (b'{"v": 1, "op": "status", "x": ' + b"[" * 60_000 + b"}", "bad_json"),
        (b"[" * 100_000, "line_too_long"),
        (b'{"v": 1, "op": "query", "hash": ' + b"9" * 5000 + b"}", "bad_json"),
        (b'{"v": 1, "op": "query", "hash": ' + b"9" * 4000 + b"}", "bad_request"),
        (b'{"v": 1, "op": "query", "hash": 1e999}', "bad_request"),
        (b'{"v": 1, "op": "query", "hash": "00", "radius": 1e999}', "bad_request"),
        (b'{"v": 1, "op": "query", "hash": "00", "radius": NaN}', "bad_request"),
        (b'{"v": 1e999, "op": "status"}', "unsupported_version"),
        (b'{"v": true, "op": "status"}', "unsupported_version"),
        (b'{"v": 1, "op": "st\xffatus"}', "bad_json"),
        (b'{"v": 1, "op": "query", "path": "/tmp/\xc0\xaf.jpg"}', "bad_json"),
        (b'{"v": 1, "op": "query", "path": "/tmp/\\ud800.jpg"}', "bad_request"),
        (b'{"v": 1, "op": "query", "path": "/tmp/a\\u0000.jpg"}', "bad_request"),
        (b'{"v": 1, "op": "query", "path": "/tmp/a\x00.jpg"}', "bad_json"),
        (b"\x00" * 1000, "bad_json"),
        (b'{"v": 1, "op": "query", "path": ' + b"[" * 900 + b"]" * 900 + b"}", "bad_request"),
        (b'{"v": 1, "op": "' + b"x" * 60_000 + b'"}', "unknown_op"),
        (b'{"v": 1, "op": "status", "x": "' + b"a" * (10 << 20) + b'"}', "line_too_long"),
    ],
    ids=lambda value: value.decode("ascii", "replace")[:24] if isinstance(value, bytes) else value,
)
def test_each_nasty_line_is_named_and_the_connection_lives(
    service: Service, payload: bytes, code: str
) -> None:
    with connect(service) as sock:
        sock.sendall(payload + b"\n" + protocol.encode_request("status"))
        bad, good = answers(sock, 2)
    assert bad["ok"] is False and bad["error"]["code"] == code, bad
    assert len(bad["error"]["message"]) < 300  # the bad value is quoted short, not echoed
    assert good["ok"] is True and good["state"] == "ready"


class Prober(threading.Thread):
    """A well-behaved client asking for the status every 50 ms until stopped."""

    def __init__(self, footprint: Footprint) -> None:
        super().__init__()
        self.footprint = footprint
        self.stopping = threading.Event()
        self.failure: BaseException | None = None

    def run(self) -> None:
        while not self.stopping.wait(0.05):
            try:
                self.footprint.probe()
            except BaseException as exc:  # noqa: BLE001 - reported by stop()
                self.failure = exc
                return

    def __enter__(self) -> Prober:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.join(TIMEOUT_S)
        assert self.failure is None, self.failure


def idle_flood(service: Service, count: int, footprint: Footprint) -> list[socket.socket]:
    """Open `count` connections that send nothing; sample the service every 100."""
    idle = []
    for i in range(count):
        idle.append(connect(service))
        if i % 100 == 0:
            footprint.sample()
    footprint.sample()
    return idle


def test_a_flood_of_idle_connections(service: Service) -> None:
    """Thousands of connections opened and left idle: the oldest idle ones are closed to make
    room (each told why), the fds stay under the cap, and status is answered throughout."""
    footprint = Footprint(service, f"{IDLE_CONNECTIONS} idle connections")
    with Prober(footprint):
        idle = idle_flood(service, IDLE_CONNECTIONS, footprint)
    turned_away = answers(idle[0], 1)[0]  # the first one was closed to make room
    assert turned_away["error"]["code"] == "too_many_connections"
    for sock in idle:
        sock.close()
    footprint.finish()


def duplicate_pngs(folder: Path, count: int, name: str, photo: str) -> None:
    """`count` files of one picture with different bytes: each new one matches all before."""
    img = Image.open(SKIMAGE_DATA / photo).convert("L").resize((64, 64))
    for i in range(count):
        info = PngImagePlugin.PngInfo()
        info.add_text("copy", f"{name}{i}")
        img.save(folder / f"{name}{i:03d}.png", pnginfo=info)


def stalled_subscribers(service: Service, count: int) -> list[socket.socket]:
    """Subscribers with a tiny receive buffer that never read a byte."""
    stalled = []
    for _ in range(count):
        sock = connect(service)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(protocol.encode_request("subscribe"))
        stalled.append(sock)
    return stalled


def arrive(service: Service, count: int, name: str, photo: str) -> None:
    """`count` near-identical images moved into the watched folder at once."""
    staged = service.base / f"staged-{name}"
    staged.mkdir()
    duplicate_pngs(staged, count, name, photo)
    for path in sorted(staged.iterdir()):
        os.rename(path, service.root / path.name)


def test_subscribers_that_never_read(service: Service) -> None:
    footprint = Footprint(service, "20 stalled subscribers, 120 alerts")
    files_before = service.status()["files"]
    stalled = stalled_subscribers(service, 20)
    wait_for(lambda: service.status()["subscribers"] == 20, what="20 subscribers")
    with Prober(footprint):
        # Alerts of ever more matches: megabytes that nobody reads.
        arrive(service, 120, "sub", "camera.png")
        wait_for(
            lambda: (s := service.status())["files"] == files_before + 120 and s["queue"] == 0,
            what="the copies to be indexed",
        )
    assert service.status()["alerts"] >= 119
    for sock in stalled:
        sock.close()
    wait_for(lambda: service.status()["subscribers"] == 0, what="the subscribers to go")
    footprint.finish()


def hoard(service: Service) -> socket.socket:
    """Requests sent until the service stops reading (its answers unread), write side shut."""
    hoarder = connect(service)
    hoarder.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hoarder.setblocking(False)
    requests = protocol.encode_request("status") * 1000
    pushed = 0
    with contextlib.suppress(BlockingIOError):
        for _ in range(1000):
            pushed += hoarder.send(requests)
            time.sleep(0.002)
    assert pushed > len(requests)  # the service read some before its answers backed up
    hoarder.shutdown(socket.SHUT_WR)
    return hoarder


def test_half_closed_abandoned_and_slow_connections(service: Service) -> None:
    footprint = Footprint(service, "half-closed, hoarding, reset and dribbling clients")
    with connect(service) as sock:  # a request, then the write side shut: answered, then EOF
        sock.sendall(protocol.encode_request("status"))
        sock.shutdown(socket.SHUT_WR)
        assert answers(sock, 1)[0]["ok"] is True
        assert sock.recv(1) == b""
    hoarder = hoard(service)
    for _ in range(200):  # hung up at once, with a reset
        with connect(service) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
    for _ in range(200):  # hung up mid-line
        with connect(service) as sock:
            sock.sendall(b'{"v": 1, "op": "sta')
    dribblers = [connect(service) for _ in range(50)]  # a line that never ends, slowly
    for _ in range(20):
        for sock in dribblers:
            sock.sendall(b"x" * 1000)
        footprint.probe()
    hoarder.close()
    for sock in dribblers:
        sock.close()
    footprint.finish()


def test_queries_of_a_huge_picture(service: Service) -> None:
    """A small PNG of 36 megapixels costs a decode of ~100 MiB and most of a second: asked
    for four times at once, it must neither starve the status nor keep the memory."""
    big = service.base / "big.png"
    Image.new("RGB", (6000, 6000), (10, 200, 30)).save(big, compress_level=1)
    footprint = Footprint(service, "4 queries at once of a 36 MP picture")
    failures: list[BaseException] = []

    def query() -> None:
        try:
            with Client(service.socket, timeout_s=TIMEOUT_S) as client:
                client.call("query", path=str(big))
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    askers = [threading.Thread(target=query) for _ in range(4)]
    with Prober(footprint):
        for asker in askers:
            asker.start()
        for asker in askers:
            asker.join(TIMEOUT_S)
    assert not failures, failures
    footprint.finish()


def test_everything_at_once(service: Service) -> None:
    """Fuzz, an idle flood, 10 MB lines, stalled subscribers and arrivals together."""
    footprint = Footprint(service, "all the abuses at once")
    files_before = service.status()["files"]
    stalled = stalled_subscribers(service, 10)
    failures: list[str] = []

    def abuse(work: Callable[[], Any]) -> threading.Thread:
        def run() -> None:
            try:
                work()
            except BaseException:  # noqa: BLE001 - reported below, with where it happened
                failures.append(traceback.format_exc())

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    def huge_lines() -> None:
        payload = b'{"v": 1, "op": "status", "x": "' + b"a" * (10 << 20) + b'"}\n'
        for _ in range(5):
            assert exchange(service, payload, 1)[0]["error"]["code"] == "line_too_long"

    idle: list[socket.socket] = []
    with Prober(footprint):
        threads = [
            abuse(lambda: fuzz_batches(service, FUZZ_LINES // 3, 11, footprint)),
            abuse(lambda: idle.extend(idle_flood(service, IDLE_CONNECTIONS // 2, footprint))),
            abuse(huge_lines),
            abuse(huge_lines),
            abuse(lambda: arrive(service, 40, "all", "coffee.png")),
        ]
        for thread in threads:
            thread.join(TIMEOUT_S)
        assert not failures, "\n".join(failures)
        wait_for(
            lambda: (s := service.status())["files"] == files_before + 40 and s["queue"] == 0,
            what="the arrivals to be indexed",
        )
    for sock in idle + stalled:
        sock.close()
    footprint.finish()


async def subscribe_to(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(protocol.encode_request("subscribe"))
    assert protocol.decode_line(await asyncio.wait_for(reader.readline(), 5))["ok"] is True
    return reader, writer


async def told_why(reader: asyncio.StreamReader) -> str:
    """The message of the too_many_connections line a closed connection was sent."""
    told = protocol.decode_line(await asyncio.wait_for(reader.readline(), 5))
    assert told["error"]["code"] == "too_many_connections"
    assert await asyncio.wait_for(reader.readline(), 5) == b""  # and then closed
    return told["error"]["message"]


async def cap_scenario(path: Path) -> None:
    async def status(args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return {"state": "ready"}

    server = Server({"status": status}, max_connections=3)
    await server.start(path)
    try:
        talker = await asyncio.open_unix_connection(str(path))
        talker[1].write(b'{"v": 1, "op": ')  # half a request: it has sent something
        await talker[1].drain()
        idle = await asyncio.open_unix_connection(str(path))  # younger, but silent
        subscribers = [await subscribe_to(path)]
        await asyncio.sleep(0.1)  # the talker's bytes are in
        subscribers.append(await subscribe_to(path))  # the silent one makes room
        assert "idle" in await told_why(idle[0])
        talker[1].write(b'"status"}\n')
        assert protocol.decode_line(await asyncio.wait_for(talker[0].readline(), 5))["ok"]
        subscribers.append(await subscribe_to(path))  # now the talker, quiet again
        await told_why(talker[0])
        # Three subscribers waiting for alerts are all busy: a newcomer is turned away.
        reader, writer = await asyncio.open_unix_connection(str(path))
        assert "at most 3" in await told_why(reader)
        writer.close()
        server.publish(protocol.duplicate_event("/p.jpg", []))
        for sub_reader, _ in subscribers:
            event = protocol.decode_line(await asyncio.wait_for(sub_reader.readline(), 5))
            assert event["path"] == "/p.jpg"
        subscribers.pop()[1].close()
        for _ in range(500):
            if len(server.connections) < 3:
                break
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(protocol.encode_request("status"))
        assert protocol.decode_line(await asyncio.wait_for(reader.readline(), 5))["ok"] is True
        writer.close()
        for _, sub_writer in subscribers:
            sub_writer.close()
    finally:
        await server.close()


def test_past_the_cap_the_idle_make_room_and_the_busy_stay() -> None:
    folder = Path(tempfile.mkdtemp(dir="/tmp", prefix="dwk"))
    try:
        asyncio.run(cap_scenario(folder / "s.sock"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# The folder, the socket and what a query tells


def test_socket_and_folder_are_private(service: Service) -> None:
    folder = service.socket.parent
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(service.socket.stat().st_mode) == 0o600
    assert sorted(p.name for p in folder.iterdir()) == ["s.sock"]  # no staging folder left


@pytest.fixture
def open_base() -> Iterator[Path]:
    """A folder in /tmp others may pass through (pytest's tmp_path is private)."""
    folder = Path(tempfile.mkdtemp(dir="/tmp", prefix="dwo"))
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_path_the_asker_cannot_read_reveals_nothing(open_base: Path) -> None:
    """A path the asker cannot read is answered as if it did not exist, and a match it could
    not read is not named. The real service refuses any other uid before reading a request
    (test_service.py) and runs as root here, which reads everything: so the query op runs on
    a real index for a stranger's uid directly."""
    private = open_base / "private"
    private.mkdir(mode=0o700)
    shown = open_base / "shown"
    shown.mkdir(mode=0o755)
    img = Image.open(SKIMAGE_DATA / "coffee.png").convert("RGB")
    for folder in (private, shown):
        img.save(folder / "a.jpg", quality=90)
    os.chmod(shown / "a.jpg", 0o600)  # in a folder the stranger can list, but unreadable
    img.save(shown / "b.jpg", quality=85)
    img.resize((200, 150)).save(open_base / "open.jpg", quality=90)
    for path in (shown / "b.jpg", open_base / "open.jpg"):
        os.chmod(path, 0o644)
    stranger = Peer(pid=1, uid=65534, gid=65534)
    with Index.open(open_base / "idx") as index:
        index.update([private, shown], workers=1)
        # The ops of a service: its index, and its writer's hashing process for the decoding.
        pool = partial(ProcessPoolExecutor, 1, mp_context=multiprocessing.get_context("forkserver"))
        writer = Writer(index, pool, workers=1, ignore=(), on_duplicate=lambda result: None)
        ops = Ops(SimpleNamespace(index=index, writer=writer))  # type: ignore[arg-type]

        def refusal(path: Path) -> tuple[str, str, str]:
            with pytest.raises(MissingFile) as caught:
                run(ops.query({"path": str(path)}, stranger))
            error = protocol.error_for(caught.value)["error"]
            return error["code"], error["message"].replace(str(path), "PATH"), error["reason"]

        for folder in (private, shown):
            assert refusal(folder / "a.jpg") == refusal(folder / "nothing.jpg")
        assert refusal(private / "a.jpg") == refusal(shown / "a.jpg")
        found = run(ops.query({"path": str(open_base / "open.jpg")}, stranger))
        assert [m["path"] for m in found["matches"]] == [str(shown / "b.jpg")]
        bits = index.get(shown / "b.jpg").bits
        found = run(ops.query({"hash": bits}, stranger))
        assert [m["path"] for m in found["matches"]] == [str(shown / "b.jpg")]
        me = Peer(pid=1, uid=os.getuid(), gid=os.getgid())
        assert len(run(ops.query({"hash": bits}, me))["matches"]) == 3
        writer.hashers.shutdown(wait=True)


def run(coro: Any) -> Any:
    return asyncio.run(coro)
