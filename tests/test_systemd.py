"""sd_notify, socket activation and the watchdog against a real datagram socket and the real
systemd-socket-activate."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dupwatch.daemon.service import systemd
from dupwatch.daemon.service.systemd import ActivationError, Watchdog
from dupwatch.daemon.wire.client import call

from support import DUPWATCH


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path: AF_UNIX paths stop at 108 bytes."""
    path = Path(tempfile.mkdtemp(dir="/tmp", prefix="dwsd"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def manager(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket standing in for systemd's notify socket, with NOTIFY_SOCKET at it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(short_dir / "notify"))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(short_dir / "notify"))
    yield sock
    sock.close()


def receive(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_notify_without_manager_returns_false(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False


def test_notify_sends_ready_and_status(manager: socket.socket) -> None:
    assert systemd.notify("READY=1\nSTATUS=watching 2 folders") is True
    assert receive(manager) == "READY=1\nSTATUS=watching 2 folders"
    assert systemd.notify("STATUS=reconciling /srv/labels") is True
    assert receive(manager) == "STATUS=reconciling /srv/labels"


def test_notify_reaches_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"dupwatch-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.notify("READY=1") is True
        assert receive(sock) == "READY=1"


def test_notify_to_a_vanished_manager_returns_false(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(short_dir / "gone"))
    assert systemd.notify("READY=1") is False


def test_notify_refuses_a_relative_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/notify")
    assert systemd.notify("READY=1") is False


def test_listen_fds_is_empty_without_activation(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        monkeypatch.delenv(variable, raising=False)
    assert systemd.listen_fds() == []


def test_listen_fds_ignores_another_process_and_unsets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert systemd.listen_fds() == []
    assert "LISTEN_PID" not in os.environ and "LISTEN_FDS" not in os.environ


def test_listen_fds_keeps_environment_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert systemd.listen_fds(unset_environment=False) == []
    assert os.environ["LISTEN_FDS"] == "1"


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [("LISTEN_FDS", "two", "LISTEN_FDS='two' is not a number"), ("LISTEN_FDS", "-1", "negative")],
)
def test_listen_fds_rejects_malformed_variables(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, reason: str
) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv(variable, value)
    with pytest.raises(ActivationError, match=reason):
        systemd.listen_fds()
    assert "LISTEN_FDS" not in os.environ


def test_listen_fds_rejects_a_descriptor_that_is_not_a_socket() -> None:
    # In a child, so that fd 3 is surely ours to replace with a pipe.
    script = textwrap.dedent(
        """
        import os
        from dupwatch.daemon.service.systemd import ActivationError, listen_fds
        read_end, write_end = os.pipe()
        os.dup2(read_end, 3)
        os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1")
        try:
            listen_fds()
        except ActivationError as error:
            print(error)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    assert "socket activation: descriptor 3 is not a usable socket" in result.stdout


# The child that systemd-socket-activate starts: it takes the socket systemd passed, reports
# what it got on the first connection, and checks the variables are gone for its own children.
ACTIVATED_CHILD = textwrap.dedent(
    """
    import json, os
    from dupwatch.daemon.service.systemd import listen_fds_with_names
    sockets = listen_fds_with_names()
    name, listener = sockets[0]
    connection, _ = listener.accept()
    report = {
        "count": len(sockets),
        "name": name,
        "fd": listener.fileno(),
        "inheritable": os.get_inheritable(listener.fileno()),
        "env_left": [v for v in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES") if v in os.environ],
    }
    connection.sendall(json.dumps(report).encode() + b"\\n")
    connection.close()
    """
)


@pytest.mark.skipif(not shutil.which("systemd-socket-activate"), reason="needs systemd")
def test_listen_fds_under_systemd_socket_activate(short_dir: Path) -> None:
    path = short_dir / "activated.sock"
    activator = subprocess.Popen(
        ["systemd-socket-activate", "-l", str(path), "--fdname=dupwatch"]
        + [sys.executable, "-c", ACTIVATED_CHILD],
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(path.exists, "systemd-socket-activate to listen")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(20)
            client.connect(str(path))
            report = json.loads(client.makefile().readline())
        assert report == {
            "count": 1,
            "name": "dupwatch",
            "fd": 3,
            "inheritable": False,
            "env_left": [],
        }
        assert activator.wait(timeout=20) == 0
    finally:
        activator.kill()
        activator.wait()
        activator.stderr.close()


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_watchdog_absent_without_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert Watchdog.from_environment() is None


def test_watchdog_reads_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    watchdog = Watchdog.from_environment()
    assert watchdog == Watchdog(timeout_s=30.0)
    assert watchdog.ping_interval_s == 15.0


def test_watchdog_of_another_process_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert Watchdog.from_environment() is None


def test_watchdog_unsets_environment_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    assert Watchdog.from_environment(unset_environment=True) == Watchdog(timeout_s=1.0)
    assert "WATCHDOG_USEC" not in os.environ


def test_watchdog_rejects_garbage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "soon")
    with pytest.raises(ActivationError, match="WATCHDOG_USEC='soon' is not a number"):
        Watchdog.from_environment()


def test_watchdog_run_pings_repeatedly_within_the_interval(manager: socket.socket) -> None:
    watchdog = Watchdog(timeout_s=1.0)

    async def collect_pings(count: int) -> list[float]:
        task = asyncio.create_task(watchdog.run())
        arrivals = []
        try:
            loop = asyncio.get_running_loop()
            for _ in range(count):
                message = await asyncio.wait_for(loop.run_in_executor(None, receive, manager), 5)
                assert message == "WATCHDOG=1"
                arrivals.append(time.monotonic())
        finally:
            task.cancel()
        return arrivals

    arrivals = asyncio.run(collect_pings(3))
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:], strict=False)]
    # Each gap stays below the timeout: systemd would not have killed this service.
    assert all(gap < watchdog.timeout_s for gap in gaps), gaps


def test_watchdog_withholds_pings_while_unhealthy(manager: socket.socket) -> None:
    watchdog = Watchdog(timeout_s=0.02)
    checks = 0

    async def run_until_five_checks() -> None:
        five_checks = asyncio.Event()

        def is_healthy() -> bool:
            nonlocal checks
            checks += 1
            if checks == 5:
                five_checks.set()
            return checks > 3  # stuck for three ticks, then well again

        task = asyncio.create_task(watchdog.run(is_healthy))
        await asyncio.wait_for(five_checks.wait(), 10)
        task.cancel()

    asyncio.run(run_until_five_checks())
    manager.setblocking(False)
    messages = []
    while True:
        try:
            messages.append(receive(manager))
        except BlockingIOError:
            break
    assert messages == ["WATCHDOG=1", "WATCHDOG=1"]  # ticks four and five only


# The real service: `dupwatch daemon` under a test NOTIFY_SOCKET and under systemd-socket-activate


@pytest.fixture
def watched(photo: Any) -> Path:
    """A folder with one real photograph in it."""
    photo.save(photo.image("coffee.png", size=(200, 133)), "coffee.jpg")
    return Path(photo.folder)


def daemon_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    return {**os.environ, "XDG_RUNTIME_DIR": str(runtime), **extra}


def stop(process: subprocess.Popen[Any]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=30)


def test_daemon_tells_systemd_it_is_ready_and_keeps_pinging(
    manager: socket.socket, short_dir: Path, watched: Path, tmp_path: Path
) -> None:
    env = daemon_env(tmp_path, NOTIFY_SOCKET=str(short_dir / "notify"), WATCHDOG_USEC="1000000")
    command = [DUPWATCH, "daemon", "--index", str(tmp_path / "index")]
    command += ["--socket", str(short_dir / "dupwatch.sock"), str(watched)]
    manager.settimeout(60)  # the first start spawns the hashing processes
    with (tmp_path / "daemon.log").open("w") as log:
        daemon = subprocess.Popen(command, env=env, stderr=log)
        try:
            messages = [receive(manager)]
            while "READY=1" not in messages[-1]:
                messages.append(receive(manager))
            manager.settimeout(5)
            pings = []
            while len(pings) < 4:
                message = receive(manager)
                assert message == "WATCHDOG=1"
                pings.append(time.monotonic())
            daemon.send_signal(signal.SIGTERM)
            while receive(manager) != "STOPPING=1":
                pass
        finally:
            status = stop(daemon)
    assert any(m.startswith("STATUS=reconciling") for m in messages[:-1]), messages
    assert messages[-1].startswith("READY=1\nSTATUS=watching 1 folders")
    gaps = [later - earlier for earlier, later in zip(pings, pings[1:], strict=False)]
    assert max(gaps) < 1.0, f"a WATCHDOG=1 gap exceeded WATCHDOG_USEC: {gaps}"
    assert status == 0, (tmp_path / "daemon.log").read_text()


@pytest.mark.skipif(not shutil.which("systemd-socket-activate"), reason="needs systemd")
def test_socket_activation_starts_the_daemon_which_answers_status(
    short_dir: Path, watched: Path, tmp_path: Path
) -> None:
    path = short_dir / "dupwatch.sock"
    command = ["systemd-socket-activate", "-l", str(path), DUPWATCH, "daemon"]
    command += ["--index", str(tmp_path / "index"), str(watched)]
    with (tmp_path / "daemon.log").open("w") as log:
        activator = subprocess.Popen(command, env=daemon_env(tmp_path), stderr=log)
        try:
            wait_for(path.exists, "systemd-socket-activate to listen")
            status = call("status", path)
        finally:
            exit_status = stop(activator)
    assert status["ok"] is True and status["roots"] == [str(watched)]
    log_text = (tmp_path / "daemon.log").read_text()
    assert "serving the socket systemd passed (socket activation)" in log_text
    assert exit_status == 0, log_text
    assert path.exists(), "the socket belongs to systemd: the daemon leaves it in place"
