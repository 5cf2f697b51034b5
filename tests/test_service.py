"""The service end to end: the real `dupwatch daemon` in a subprocess on real folders."""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import signal
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
from PIL import Image

from dupwatch.daemon.cli.remote import query_via_service
from dupwatch.daemon.config import ConfigError, load_config, runtime_dir
from dupwatch.daemon.service.ops import readable_by
from dupwatch.daemon.service.server import Peer
from dupwatch.daemon.wire import protocol
from dupwatch.daemon.wire.client import Client, DaemonNotRunning
from dupwatch.index import Index, MissingFile

import support
from support import TIMEOUT_S, descendants, photo, wait_for


def tiny_png(path: Path | str, rng: random.Random) -> None:
    """A 16x16 PNG of random pixels: distinct content (and hash) for every file."""
    Image.frombytes("RGB", (16, 16), rng.randbytes(16 * 16 * 3)).save(path, format="PNG")


class Daemon(support.Daemon):
    """support.Daemon, reconciling folders it cannot watch every second, and asked about
    its index."""

    def __init__(self, base: Path, *, rescan_interval_s: float = 1.0) -> None:
        super().__init__(base, config=f"workers = 2\nrescan_interval_s = {rescan_interval_s}\n")

    def wait_files(self, count: int, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
        """Wait until `count` files are indexed and nothing is queued; returns the status."""

        def settled() -> dict[str, Any] | None:
            status = self.status()
            return status if status["files"] == count and status["queue"] == 0 else None

        return wait_for(settled, timeout_s, f"{count} files indexed")

    def indexed(self) -> set[str]:
        with Index.open(self.index, readonly=True) as index:
            return {record.fspath for record in index.files()}

    def check(self) -> list[str]:
        with Index.open(self.index, readonly=True) as index:
            return index.check()


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    base = Path(tempfile.mkdtemp(dir="/tmp", prefix="dws"))
    instance = Daemon(base)
    yield instance
    if instance.process is not None:
        instance.kill()
    shutil.rmtree(base, ignore_errors=True)


def subscribe(daemon: Daemon) -> Iterator[dict[str, Any]]:
    client = Client(daemon.socket, timeout_s=TIMEOUT_S)
    stream = client.subscribe()
    wait_for(lambda: daemon.status()["subscribers"] >= 1, what="the subscription")
    return stream


def next_event(stream: Iterator[dict[str, Any]], timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """The next event, bounded in time: a missing alert fails instead of hanging."""
    result: list[dict[str, Any]] = []
    reader = threading.Thread(target=lambda: result.append(next(stream)), daemon=True)
    reader.start()
    reader.join(timeout_s)
    assert result, "no alert arrived"
    return result[0]


# Alerts


def test_resized_copy_alerts_and_unrelated_photo_does_not(daemon: Daemon, tmp_path: Path) -> None:
    original = daemon.root / "astronaut.jpg"
    photo("astronaut.png").save(original, quality=92)
    daemon.start()
    assert daemon.status()["hashed"] == 1  # reconciled before READY
    stream = subscribe(daemon)

    staged = tmp_path / "small.jpg"
    photo("astronaut.png").resize((256, 256), Image.Resampling.LANCZOS).save(staged, quality=80)
    shutil.copy(staged, daemon.root / "renamed_copy.jpg")
    alert = next_event(stream)
    assert alert["event"] == "duplicate"
    assert alert["path"] == str(daemon.root / "renamed_copy.jpg")
    [match] = alert["matches"]
    assert match["path"] == str(original)
    assert match["kind"] == "near" and 0 <= match["distance"] <= 8
    assert alert["time"].endswith("+00:00")

    photo("coffee.png").save(tmp_path / "coffee.jpg", quality=90)
    shutil.copy(tmp_path / "coffee.jpg", daemon.root / "coffee.jpg")
    status = daemon.wait_files(3)
    assert status["alerts"] == 1  # the unrelated photo raised none
    shutil.copy(original, daemon.root / "exact.jpg")
    alert = next_event(stream)  # the next alert is this one: none came for the coffee
    assert alert["path"] == str(daemon.root / "exact.jpg")
    assert {(m["path"], m["kind"], m["distance"]) for m in alert["matches"]} >= {
        (str(original), "exact", 0)
    }
    assert "duplicate: " in daemon.output()  # the foreground service logs each alert
    assert daemon.stop() == 0


def test_an_alert_across_splits_names_the_leak(daemon: Daemon, tmp_path: Path) -> None:
    (daemon.root / "train").mkdir()
    (daemon.root / "val").mkdir()
    with open(daemon.config, "a") as config:
        config.write('[splits]\ntrain = "w/train"\nval = "w/val"\n')
    photo("rocket.jpg").save(daemon.root / "train" / "rocket.jpg", quality=92)
    daemon.start()
    stream = subscribe(daemon)
    staged = tmp_path / "rocket_small.jpg"
    photo("rocket.jpg").resize((300, 200)).save(staged, quality=80)
    shutil.copy(staged, daemon.root / "val" / "new.jpg")
    alert = next_event(stream)
    assert alert["path"] == str(daemon.root / "val" / "new.jpg")
    assert alert["leaks"] == ["leak: val/new.jpg duplicates train/rocket.jpg"]
    assert "leak: val/new.jpg duplicates train/rocket.jpg" in daemon.output()
    shutil.copy(staged, daemon.root / "val" / "again.jpg")  # within one split: no leak
    alert = next_event(stream)
    assert alert["path"] == str(daemon.root / "val" / "again.jpg")
    assert alert["leaks"] == ["leak: val/again.jpg duplicates train/rocket.jpg"]
    assert all("val/new.jpg" not in leak for leak in alert["leaks"])


def test_slow_write_and_part_rename_are_hashed_once(daemon: Daemon, tmp_path: Path) -> None:
    daemon.start()
    photo("chelsea.png").save(tmp_path / "chelsea.jpg", quality=90)
    data = (tmp_path / "chelsea.jpg").read_bytes()
    with open(daemon.root / "slow.jpg", "wb") as out:
        chunk = len(data) // 8 + 1
        for start in range(0, len(data), chunk):  # a slow download or copy
            out.write(data[start : start + chunk])
            out.flush()
            time.sleep(0.05)
    status = daemon.wait_files(1)
    assert status["hashed"] == 1 and status["failed"] == 0

    part = daemon.root / "cat.jpg.part"
    photo("camera.png").save(part, format="JPEG", quality=90)
    part.rename(daemon.root / "cat.jpg")
    status = daemon.wait_files(2)
    assert status["hashed"] == 2  # once, as cat.jpg; never as the .part
    assert daemon.indexed() == {str(daemon.root / "slow.jpg"), str(daemon.root / "cat.jpg")}
    assert daemon.stop() == 0


def test_renames_moves_deletes_and_a_folder_moved_in(daemon: Daemon, tmp_path: Path) -> None:
    photo("rocket.jpg").save(daemon.root / "a.jpg", quality=90)
    daemon.start()
    assert daemon.status()["hashed"] == 1

    (daemon.root / "a.jpg").rename(daemon.root / "b.jpg")
    (daemon.root / "sub").mkdir()
    wait_for(lambda: daemon.indexed() == {str(daemon.root / "b.jpg")}, what="the rename")
    (daemon.root / "b.jpg").rename(daemon.root / "sub" / "c.jpg")
    wait_for(lambda: daemon.indexed() == {str(daemon.root / "sub" / "c.jpg")}, what="the move")
    (daemon.root / "sub").rename(daemon.root / "renamed_sub")
    c_path = str(daemon.root / "renamed_sub" / "c.jpg")
    wait_for(lambda: daemon.indexed() == {c_path}, what="the folder rename")
    status = daemon.status()
    assert status["hashed"] == 1 and status["moved"] == 3  # followed, never hashed again

    os.remove(c_path)
    wait_for(lambda: daemon.indexed() == set(), what="the deletion")

    staging = tmp_path / "batch"
    staging.mkdir()
    rng = random.Random(200)
    for i in range(200):
        tiny_png(staging / f"img{i:03d}.png", rng)
    staging.rename(daemon.root / "batch")
    status = daemon.wait_files(200)
    assert status["hashed"] == 1 + 200
    assert daemon.check() == []
    assert daemon.stop() == 0


# Restarts


def test_restart_hashes_nothing_and_reconciles_what_changed(daemon: Daemon) -> None:
    for name in ("astronaut.png", "coffee.png", "rocket.jpg"):
        photo(name).save(daemon.root / f"{Path(name).stem}.jpg", quality=90)
    (daemon.root / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a JPEG")
    daemon.start()
    status = daemon.status()
    assert status["hashed"] == 3 and status["failed"] == 1
    assert daemon.stop() == 0

    daemon.start()
    status = daemon.status()
    assert status["hashed"] == 0 and status["files"] == 3  # nothing changed: nothing hashed
    assert status["failed"] == 0  # the broken file is remembered, not read again
    assert daemon.stop() == 0

    photo("camera.png").save(daemon.root / "new.jpg", quality=90)  # added while down
    photo("chelsea.png").save(daemon.root / "coffee.jpg", quality=90)  # changed while down
    os.remove(daemon.root / "rocket.jpg")  # deleted while down
    daemon.start()
    status = daemon.status()
    assert status["hashed"] == 2 and status["removed"] == 1
    assert daemon.indexed() == {
        str(daemon.root / n) for n in ("astronaut.jpg", "coffee.jpg", "new.jpg")
    }
    assert daemon.stop() == 0


def test_burst_of_5000_small_images(daemon: Daemon, tmp_path: Path) -> None:
    count = 5000
    staging = tmp_path / "burst"
    staging.mkdir()
    rng = random.Random(5000)
    for i in range(count):
        tiny_png(staging / f"b{i:04d}.png", rng)
    daemon.start()
    subprocess.run(["cp", "-r", f"{staging}/.", str(daemon.root)], check=True)
    status = daemon.wait_files(count, timeout_s=600)
    assert status["hashed"] == count  # every one indexed, none twice
    assert status["failed"] == 0
    assert len(daemon.indexed()) == count
    assert daemon.stop() == 0


def test_sigkill_mid_burst_then_restart_loses_nothing(daemon: Daemon, tmp_path: Path) -> None:
    count = 600
    staging = tmp_path / "burst"
    staging.mkdir()
    rng = random.Random(600)
    for i in range(count):
        tiny_png(staging / f"k{i:04d}.png", rng)
    daemon.start()
    subprocess.run(["cp", "-r", f"{staging}/.", str(daemon.root)], check=True)
    wait_for(lambda: daemon.status()["hashed"] >= 50, what="the burst to be under way")
    assert daemon.process is not None
    helpers = descendants(daemon.process.pid)
    daemon.kill()
    assert daemon.check() == []  # a crash leaves whole files only
    # Its hashing processes and forkserver do not outlive it.
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in helpers), 30, "orphans")

    daemon.start()
    status = daemon.wait_files(count)
    assert daemon.check() == []
    assert daemon.indexed() == {str(daemon.root / f"k{i:04d}.png") for i in range(count)}
    assert status["files"] == count
    assert daemon.stop() == 0


def start_and_kill_its_hashing_processes(daemon: Daemon) -> None:
    daemon.start()
    assert daemon.process is not None
    pid = daemon.process.pid
    helpers = wait_for(
        lambda: len(descendants(pid)) >= 3 and descendants(pid),
        what="the forkserver and two workers",
    )
    for helper in helpers:
        os.kill(helper, signal.SIGKILL)


def test_a_killed_hashing_process_is_replaced(daemon: Daemon) -> None:
    start_and_kill_its_hashing_processes(daemon)
    rng = random.Random(7)
    for i in range(5):
        tiny_png(daemon.root / f"after{i}.png", rng)
    status = daemon.wait_files(5)
    assert status["hashed"] == 5 and status["failed"] == 0
    assert "a hashing process died" in daemon.output()
    assert daemon.stop() == 0


def test_a_query_replaces_hashing_processes_killed_while_idle(daemon: Daemon) -> None:
    """With no file of its own to hash, the service learns that its hashing processes died
    from the query that needs one, starts new ones and answers it."""
    start_and_kill_its_hashing_processes(daemon)
    tiny_png(daemon.base / "asked.png", random.Random(8))
    with Client(daemon.socket, timeout_s=60) as client:
        assert client.call("query", path=str(daemon.base / "asked.png"))["matches"] == []
    assert "a hashing process died" in daemon.output()
    assert daemon.stop() == 0


def test_inotify_overflow_is_reconciled(daemon: Daemon) -> None:
    """A real kernel queue overflow: the service is stopped (SIGSTOP) while more events than
    max_queued_events arrive; the images written last lose their events and must still be
    indexed, by the reconciliation the overflow triggers."""
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if limit > 40_000:
        pytest.skip(f"max_queued_events is {limit}: too many events to make in a test")
    daemon.start()
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGSTOP)
    try:
        junk = daemon.root / "junk.part"  # ignored by name: no hashing
        for _ in range(limit):  # 3 events a round: three times what the queue holds
            junk.write_bytes(b"x")
            junk.unlink()
        rng = random.Random(11)
        for i in range(50):
            tiny_png(daemon.root / f"lost{i:02d}.png", rng)
    finally:
        daemon.process.send_signal(signal.SIGCONT)
    daemon.wait_files(50)
    assert "Inotify queue overflowed" in daemon.output()
    assert len(daemon.indexed()) == 50
    assert daemon.stop() == 0


# Lifecycle


def test_second_instance_refuses_and_sigterm_cleans_up(daemon: Daemon) -> None:
    daemon.start()
    pid = daemon.status()["pid"]
    second = subprocess.run(
        daemon.command("daemon", str(daemon.root)),
        env={**daemon.env, "DUPWATCH_SOCKET": str(daemon.base / "other.sock")},
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert second.returncode == 2
    assert f"another dupwatch service (pid {pid}) is using this index" in second.stderr
    assert daemon.status()["state"] == "ready"  # the first one is untouched

    assert daemon.stop() == 0
    assert not daemon.socket.exists()
    with pytest.raises(DaemonNotRunning, match="dupwatch daemon"):
        Client(daemon.socket).call("status")
    daemon.start()  # the lock went with the first service
    assert daemon.stop() == 0


def test_sd_notify_ready_status_and_watchdog(daemon: Daemon) -> None:
    photo("astronaut.png").save(daemon.root / "a.jpg", quality=90)
    notify_path = daemon.base / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.settimeout(TIMEOUT_S)
    try:
        daemon.start(wait=False, NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC="400000")
        messages = []
        while not any("READY=1" in m for m in messages):
            messages.append(listener.recv(4096).decode())
        ready_at = len(messages)
        assert any(m.startswith("STATUS=reconciling") for m in messages[: ready_at - 1])
        assert daemon.status()["state"] == "ready"
        assert daemon.status()["files"] == 1  # READY came after the reconciliation
        while "WATCHDOG=1" not in messages[ready_at:]:
            messages.append(listener.recv(4096).decode())
        assert daemon.stop() == 0
        while "STOPPING=1" not in messages:
            messages.append(listener.recv(4096).decode())
    finally:
        listener.close()


def test_default_socket_folder_0700_and_socket_0600(daemon: Daemon) -> None:
    runtime = daemon.base / "run"
    runtime.mkdir(mode=0o700)
    daemon.env.pop("DUPWATCH_SOCKET")
    daemon.env["XDG_RUNTIME_DIR"] = str(runtime)
    daemon.socket = runtime / "dupwatch" / "dupwatch.sock"
    daemon.start()
    assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(daemon.socket.parent.stat().st_mode) == 0o700
    assert daemon.stop() == 0


# The socket of the real service


def test_bad_clients_do_not_hurt_the_service(daemon: Daemon, tmp_path: Path) -> None:
    photo("astronaut.png").save(daemon.root / "a.jpg", quality=90)
    daemon.start()
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # subscribes, never reads
    stalled.connect(str(daemon.socket))
    stalled.sendall(protocol.encode_request("subscribe"))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as rude:
        rude.connect(str(daemon.socket))
        rude.settimeout(TIMEOUT_S)
        rude.sendall(b"garbage\n{not json\n" + b"x" * (10 << 20) + b"\n")
        answers = rude.makefile("rb")
        codes = [protocol.decode_line(answers.readline())["error"]["code"] for _ in range(3)]
    assert codes == ["bad_json", "bad_json", "line_too_long"]
    staged = tmp_path / "copies"
    staged.mkdir()
    for i in range(20):  # alerts the stalled subscriber does not read
        photo("astronaut.png").resize((300 + i, 300)).save(staged / f"c{i}.jpg", quality=85)
    subprocess.run(["cp", "-r", f"{staged}/.", str(daemon.root)], check=True)
    status = daemon.wait_files(21)
    assert status["alerts"] == 20
    assert status["state"] == "ready"
    stalled.close()
    assert daemon.stop() == 0


def test_socat_status(daemon: Daemon) -> None:
    socat = shutil.which("socat")
    if socat is None:
        pytest.skip("socat is not installed (Debian package socat)")
    daemon.start()
    result = subprocess.run(
        [socat, "-t5", "-", f"UNIX-CONNECT:{daemon.socket}"],
        input=b'{"v": 1, "op": "status"}\n',
        capture_output=True,
        timeout=TIMEOUT_S,
        check=True,
    )
    answer = protocol.decode_line(result.stdout)
    assert answer["v"] == 1 and answer["ok"] is True
    assert answer["roots"] == [str(daemon.root)] and answer["state"] == "ready"
    assert daemon.stop() == 0


def test_another_uid_cannot_use_the_service(daemon: Daemon) -> None:
    setpriv, socat = shutil.which("setpriv"), shutil.which("socat")
    if os.getuid() != 0 or setpriv is None or socat is None:
        pytest.skip("needs root, setpriv and socat")
    daemon.start()
    os.chmod(daemon.base, 0o711)
    os.chmod(daemon.socket, 0o666)  # open the file up: the peer-uid check must still refuse
    result = subprocess.run(
        [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
        + [socat, "-t5", "-", f"UNIX-CONNECT:{daemon.socket}"],
        input=b'{"v": 1, "op": "status"}\n',
        capture_output=True,
        timeout=TIMEOUT_S,
    )
    answer = protocol.decode_line(result.stdout.splitlines()[0])
    assert answer["ok"] is False and answer["error"]["code"] == "forbidden"
    assert daemon.status()["state"] == "ready"
    assert daemon.stop() == 0


# Commands that talk to the service


def test_a_groups_answer_of_megabytes_arrives_whole(daemon: Daemon) -> None:
    """300 pairs of byte copies under a path of ~2,000 bytes: the `groups` answer is ~2 MB,
    past the 1 MiB a client once read, and it arrives whole."""
    deep = daemon.root.joinpath(*(f"{level}" * 240 for level in "abcdefgh"))
    deep.mkdir(parents=True)
    rng = random.Random(9)
    for i in range(300):
        tiny_png(deep / f"{i:03d}.png", rng)
        shutil.copyfile(deep / f"{i:03d}.png", deep / f"{i:03d}-copy.png")
    daemon.start()
    daemon.wait_files(600)
    with Client(daemon.socket, timeout_s=60) as client:
        answer = client.call("groups")
    assert len(json.dumps(answer)) > 1 << 20
    assert len(answer["groups"]) == 300
    for group in answer["groups"]:
        names = sorted(Path(f["path"]).name for f in group["files"])
        assert len(names) == 2 and names[0] == names[1].replace(".png", "-copy.png")


def test_cli_watch_status_query_and_fallback(daemon: Daemon, tmp_path: Path) -> None:
    photo("coffee.png").save(daemon.root / "coffee.jpg", quality=90)
    daemon.start()
    extra = daemon.base / "extra"
    extra.mkdir()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            daemon.command(*args), env=daemon.env, capture_output=True, text=True, timeout=60
        )

    assert cli("watch", str(extra)).returncode == 0
    photo("coffee.png").resize((320, 200)).save(tmp_path / "c.png")
    shutil.copy(tmp_path / "c.png", extra / "c.png")
    daemon.wait_files(2)
    status = cli("status")
    assert status.returncode == 0 and str(extra) in status.stdout
    query = cli("query", "--json", str(extra / "c.png"))
    assert query.returncode == 0
    assert cli("query", "--json", str(extra)).stdout == query.stdout  # a folder: its images
    served = query_via_service(daemon.socket, [str(extra / "c.png")], radius=None, as_json=True)
    assert served == 0  # the service answered
    assert cli("unwatch", str(extra)).returncode == 0
    assert daemon.status()["roots"] == [str(daemon.root)]
    assert daemon.stop() == 0

    assert query_via_service(daemon.socket, ["x.jpg"], radius=None, as_json=True) is None
    direct = cli("query", "--json", str(extra / "c.png"))
    assert direct.returncode == 0 and direct.stdout == query.stdout  # same answer, no service
    down = cli("status")  # a summary of the index, and exit 1: the service is not running
    assert (
        down.returncode == 1 and "not running" in down.stdout and "dupwatch daemon" in down.stdout
    )


def test_query_with_only_the_socket_is_answered_by_the_service(
    daemon: Daemon, tmp_path: Path
) -> None:
    """`dupwatch --socket S query IMG` with no index named anywhere asks the service on S,
    whatever index it serves (it used to compare it with the default index, find them
    different, and read the default one: "no index here yet")."""
    photo("coffee.png").save(daemon.root / "coffee.jpg", quality=90)
    daemon.start()
    photo("coffee.png").resize((320, 200)).save(tmp_path / "c.png")
    env = {k: v for k, v in daemon.env.items() if k not in ("DUPWATCH_INDEX", "DUPWATCH_SOCKET")}
    env["XDG_DATA_HOME"] = str(tmp_path / "empty-data")  # no index at the default place
    copy = str(tmp_path / "c.png")
    asked = subprocess.run(
        [support.DUPWATCH, "--socket", str(daemon.socket), "query", "--json", copy],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert asked.returncode == 0, asked.stderr
    [answer] = [json.loads(line) for line in asked.stdout.splitlines()]
    assert [m["path"] for m in answer["matches"]] == [str(daemon.root / "coffee.jpg")]
    # A named index the service does not serve is still read, not the service's.
    other = subprocess.run(
        [support.DUPWATCH, "--socket", str(daemon.socket), "--index", str(tmp_path / "none"),
         "query", copy],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert other.returncode == 2 and "no index here yet" in other.stderr
    assert daemon.stop() == 0


def test_cli_alerts_follows_the_stream(daemon: Daemon, tmp_path: Path) -> None:
    photo("chelsea.png").save(daemon.root / "cat.jpg", quality=90)
    daemon.start()
    follower = subprocess.Popen(
        daemon.command("alerts", "--json"), env=daemon.env, stdout=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: daemon.status()["subscribers"] == 1, what="dupwatch alerts")
        photo("chelsea.png").resize((200, 150)).save(tmp_path / "small.png")
        shutil.copy(tmp_path / "small.png", daemon.root / "thumb.png")
        assert follower.stdout is not None
        ready, _, _ = select.select([follower.stdout], [], [], TIMEOUT_S)
        assert ready, "dupwatch alerts printed nothing"
        line = follower.stdout.readline()
        alert = protocol.decode_line(line.encode())
        assert alert["event"] == "duplicate" and alert["path"] == str(daemon.root / "thumb.png")
        assert alert["matches"][0]["path"] == str(daemon.root / "cat.jpg")
    finally:
        follower.terminate()
        follower.wait(TIMEOUT_S)
    assert daemon.stop() == 0


# Watch limit and lost roots


def test_folders_past_the_watch_limit_are_still_indexed(daemon: Daemon) -> None:
    unshare = shutil.which("unshare")
    assert unshare is not None, "unshare (util-linux) is needed to lower the watch limit"
    for i in range(40):
        (daemon.root / f"d{i:02d}").mkdir()
    photo("rocket.jpg").save(daemon.root / "d07" / "early.jpg", quality=90)
    # A user namespace of its own has its own watch limit: the machine's is left alone.
    lower = 'echo 20 > /proc/sys/user/max_inotify_watches && exec "$@"'
    daemon.start(prefix=[unshare, "--user", "--map-root-user", "sh", "-c", lower, "sh"])
    status = daemon.status()
    # root + 40 folders, 20 watches: what fits is watched (watchdog 7.1.1 and later watch
    # the root alone), the rest is rescanned; the whole tree is indexed either way.
    assert 21 <= len(status["unwatched"]) <= 40
    assert status["rescanned_folders"] == len(status["unwatched"])
    assert status["missing_roots"] == []
    assert daemon.indexed() == {str(daemon.root / "d07" / "early.jpg")}
    shown = daemon.cli("status").stdout
    assert f"rescanned {len(status['unwatched'])} folders every" in shown
    output = daemon.output()
    assert "inotify watch limit reached" in output
    assert "sudo sysctl fs.inotify.max_user_watches=" in output
    assert status["unwatched"][0] in output
    unwatched = Path(status["unwatched"][-1])
    photo("rocket.jpg").save(unwatched / "late.jpg", quality=90)
    daemon.wait_files(2, timeout_s=30)  # found by the periodic rescan
    assert str(unwatched / "late.jpg") in daemon.indexed()
    assert daemon.stop() == 0


def test_root_that_disappears_and_comes_back_is_reconciled(daemon: Daemon) -> None:
    photo("rocket.jpg").save(daemon.root / "a.jpg", quality=90)
    daemon.start()
    shutil.move(daemon.root, daemon.base / "away")
    wait_for(lambda: daemon.status()["missing_roots"] == [str(daemon.root)], what="the loss")
    photo("coffee.png").save(daemon.base / "away" / "b.jpg", quality=90)
    shutil.move(daemon.base / "away", daemon.root)
    wait_for(lambda: daemon.status()["missing_roots"] == [], what="the root to come back")
    daemon.wait_files(2)
    assert daemon.indexed() == {str(daemon.root / "a.jpg"), str(daemon.root / "b.jpg")}
    photo("camera.png").save(daemon.root / "c.jpg", quality=90)  # and it is watched again
    daemon.wait_files(3)
    assert daemon.stop() == 0


def test_query_paths_only_for_what_the_peer_could_read(tmp_path: Path) -> None:
    picture = tmp_path / "private.jpg"
    photo("camera.png").save(picture, quality=90)
    me = Peer(pid=1, uid=os.getuid(), gid=os.getgid())
    stranger = Peer(pid=1, uid=65534, gid=65534)
    os.chmod(picture, 0o600)
    assert readable_by(str(picture), me)
    assert readable_by(str(picture), stranger) is (stranger.uid == 0)
    os.chmod(picture, 0o644)
    assert readable_by(str(picture), stranger)
    with pytest.raises(MissingFile):
        readable_by(str(tmp_path / "gone.jpg"), me)


# Config


def test_config_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "dupwatch.toml"
    file.write_text('index = "idx"\nwatch = ["~/pics"]\nradius = 6\nignore = ["*.tmp"]\n')
    monkeypatch.delenv("DUPWATCH_INDEX", raising=False)
    monkeypatch.delenv("DUPWATCH_SOCKET", raising=False)
    config = load_config(file)
    assert config.index == tmp_path / "idx"
    assert config.roots == (Path.home() / "pics",)
    assert config.radius == 6 and config.ignore == ("*.tmp",)
    monkeypatch.setenv("DUPWATCH_INDEX", "/tmp/elsewhere")
    assert load_config(file).index == Path("/tmp/elsewhere")
    for text, fault in (
        ("radius = 'six'", "wrong type"),
        ("colour = 1", "unknown setting 'colour'"),
        ("radius = [", "not valid TOML"),
        ("workers = 0", "must be positive"),
    ):
        file.write_text(text)
        with pytest.raises(ConfigError, match=fault) as caught:
            load_config(file)
        assert str(file) in str(caught.value)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_socket_path_without_xdg_runtime_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DUPWATCH_SOCKET", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))  # no config file there
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/4242")
    expected = Path("/run/user/4242/dupwatch/dupwatch.sock")
    assert load_config().socket_path == expected
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    folder = runtime_dir()
    uid = os.getuid()
    assert folder in (Path(f"/run/user/{uid}/dupwatch"), Path(f"/tmp/dupwatch-{uid}"))
