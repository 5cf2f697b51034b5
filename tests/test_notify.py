"""The notification bridge against the real programs: Xvfb, dbus-daemon and dunst, the real
service socket (Server, Client) and the real `dupwatch notify` command."""

from __future__ import annotations

import asyncio
import doctest
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from jeepney import DBusAddress, HeaderFields, MessageType, new_method_return, new_signal
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import open_dbus_connection
from PIL import Image

from dupwatch.daemon.desktop import bursts, thumbnails
from dupwatch.daemon.desktop.bursts import Burst, alert_body, alert_summary
from dupwatch.daemon.desktop.thumbnails import thumbnail
from dupwatch.daemon.service.server import Server
from dupwatch.daemon.wire import protocol
from dupwatch.daemon.wire.client import DaemonNotRunning, call

from support import DUPWATCH, wait_for

DESKTOP_TOOLS = ("xvfb-run", "dbus-daemon", "dunst", "stdbuf")
needs_desktop = pytest.mark.skipif(
    not all(map(shutil.which, DESKTOP_TOOLS)),
    reason="needs Debian's xvfb, dbus, dunst and coreutils",
)


def short_dir() -> Path:
    return Path(tempfile.mkdtemp(dir="/tmp", prefix="dwn"))


# The words


def alert(path: str, *matches: tuple[str, str, int]) -> dict[str, Any]:
    found = [{"path": p, "kind": kind, "distance": d} for p, kind, d in matches]
    return protocol.duplicate_event(path, found)


def test_doctests_pass() -> None:
    result = doctest.testmod(bursts)
    assert result.attempted > 0 and result.failed == 0


def test_alert_texts_name_file_match_folder_and_kind() -> None:
    event = alert("/l/batch7/cat_0412.jpg", ("/l/old/cat_0001.jpg", "near", 4))
    assert alert_summary(event) == "Duplicate: cat_0412.jpg"
    assert alert_body(event) == "near-duplicate of cat_0001.jpg (distance 4)\nin /l/old"
    exact = alert("/l/a.jpg", ("/l/b/a copy.jpg", "exact", 0), ("/l/c.jpg", "near", 2))
    assert alert_body(exact) == "exact copy of a copy.jpg\nin /l/b\nand 1 more match"


def test_alert_body_escapes_markup() -> None:
    event = alert("/l/x.jpg", ("/l/R&D <old>/a&b.jpg", "pixel", 0))
    body = alert_body(event, markup=True)
    assert body == "same pixels as <b>a&amp;b.jpg</b>\nin /l/R&amp;D &lt;old&gt;"


def test_burst_texts_count_kinds_and_folder() -> None:
    burst = Burst()
    for i in range(5):
        burst.add(alert(f"/l/batch7/{i}.jpg", ("/l/o.jpg", "near" if i else "exact", 1)))
    burst.add({"event": "missed", "count": 7})
    assert burst.summary == "12 duplicates in batch7/"
    assert burst.body() == (
        "in /l/batch7\n4 near-duplicates, 1 exact copy, "
        "7 not listed by the service (its queue was full)"
    )
    burst.add(alert("/m/z.jpg", ("/l/o.jpg", "near", 1)))
    assert burst.summary == "13 duplicates in several folders"


# Thumbnails


def test_thumbnail_is_small_upright_and_cached(photo: Any, tmp_path: Path) -> None:
    wide = photo.image("chelsea.png")  # 451 x 300
    source = photo.save(wide, "cat.jpg", exif_orientation=6)
    cache = tmp_path / "thumbs"
    thumb = thumbnail(str(source), cache)
    assert thumb is not None and thumb.parent == cache
    with Image.open(thumb) as img:
        assert img.format == "PNG"
        assert max(img.size) == thumbnails.THUMB_PIXELS
        assert img.width > img.height, "EXIF orientation applied: the cat is upright"
    written = thumb.stat().st_mtime_ns
    assert thumbnail(str(source), cache) == thumb
    assert thumb.stat().st_mtime_ns == written, "a cached thumbnail is not made again"
    os.utime(source, ns=(written, written + 10**9))
    assert thumbnail(str(source), cache) != thumb, "a changed file gets a new thumbnail"


def test_thumbnail_of_a_non_image_is_none(tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    assert thumbnail(str(text), tmp_path / "thumbs") is None
    assert thumbnail(str(tmp_path / "gone.jpg"), tmp_path / "thumbs") is None


def test_cache_keeps_the_newest(tmp_path: Path) -> None:
    for i in range(6):
        picture = tmp_path / f"{i}.png"
        picture.write_bytes(b"png")
        os.utime(picture, ns=(i * 10**9, i * 10**9))
    thumbnails.prune_cache(tmp_path, keep=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2.png", "3.png", "4.png", "5.png"]


# No session bus


def test_without_a_session_bus_it_says_so(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DBUS_SESSION_BUS_ADDRESS"}
    env["XDG_RUNTIME_DIR"] = str(tmp_path)
    result = subprocess.run(
        [DUPWATCH, "notify", "--socket", str(tmp_path / "none.sock")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "no D-Bus session bus: DBUS_SESSION_BUS_ADDRESS is unset" in result.stderr
    assert f"{tmp_path}/bus does not exist" in result.stderr


# The real desktop: Xvfb, a session bus, dunst


@dataclass(frozen=True)
class Shown:
    """One notification as dunst printed it."""

    id: int
    appname: str
    summary: str
    body: str
    icon: str
    actions: dict[str, str]


def parse_dunst_block(block: str) -> Shown:
    def field(name: str) -> str:
        found = re.search(rf"^\t{name}: '(.*?)'$", block, re.M | re.S)
        return found.group(1) if found else ""

    body = re.search(r"^\tbody: '(.*?)'\n\ticon: ", block, re.M | re.S)
    actions_block = re.search(r"^\tactions: \{(.*?)^\t\}", block, re.M | re.S)
    actions = dict(
        re.findall(r'"([^"]*)": "([^"]*)"', actions_block.group(1) if actions_block else "")
    )
    return Shown(
        id=int(re.search(r"^\tid: (\d+)$", block, re.M).group(1)),
        appname=field("appname"),
        summary=re.search(r"^\tsummary: '(.*)'$", block, re.M).group(1),
        body=body.group(1) if body else "",
        icon=re.search(r"^\ticon: '(.*)'$", block, re.M).group(1),
        actions=actions,
    )


class Display:
    """A private X display from xvfb-run, for dunst to draw on."""

    def __init__(self) -> None:
        script = 'echo "$DISPLAY $XAUTHORITY"; exec sleep 3600'
        self.process = subprocess.Popen(
            ["xvfb-run", "-a", "sh", "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        display, xauthority = self.process.stdout.readline().split()
        self.env = {"DISPLAY": display, "XAUTHORITY": xauthority}

    def close(self) -> None:
        stop_group(self.process)


class Session:
    """A session bus at a fixed address with dunst on it; what dunst shows lands in `shown`.

    `services`: a folder of D-Bus service files the bus may start on demand (none: the
    bus's own config, which lists Debian's, dunst's among them).
    """

    def __init__(
        self, folder: Path, display: Display, *, server: bool = True, services: Path | None = None
    ) -> None:
        self.address = f"unix:path={folder / 'bus'}"
        self.folder = folder
        self.display = display
        self.services = services
        self.shown: list[Shown] = []
        self.processes: list[subprocess.Popen[str]] = []
        self.start(server=server)

    def start(self, *, server: bool = True) -> None:
        config = ["--session"]
        if self.services is not None:
            config = [f"--config-file={self.bus_config(self.services)}"]
        bus = subprocess.Popen(
            ["dbus-daemon", *config, "--nofork", f"--address={self.address}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.processes.append(bus)
        wait_for(lambda: (self.folder / "bus").exists(), 20.0, "the session bus")
        if server:
            self.start_server()

    def bus_config(self, services: Path) -> Path:
        config = self.folder / "session.conf"
        config.write_text(
            "<!DOCTYPE busconfig PUBLIC '-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN'"
            " 'http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd'>\n"
            "<busconfig><type>session</type><listen>unix:tmpdir=/tmp</listen>"
            f"<servicedir>{services}</servicedir>"
            "<policy context='default'><allow send_destination='*' eavesdrop='true'/>"
            "<allow eavesdrop='true'/><allow own='*'/></policy></busconfig>\n"
        )
        return config

    def start_server(self) -> None:
        dunst = subprocess.Popen(
            ["stdbuf", "-oL", "dunst", "-print"],
            env={**os.environ, **self.display.env, "DBUS_SESSION_BUS_ADDRESS": self.address},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self.processes.append(dunst)
        threading.Thread(target=self._collect, args=(dunst,), daemon=True).start()
        wait_for(self.has_notification_server, 20.0, "dunst on the session bus")

    def stop(self) -> None:
        for process in reversed(self.processes):
            stop_group(process)
        self.processes.clear()
        (self.folder / "bus").unlink(missing_ok=True)

    def has_notification_server(self) -> bool:
        with open_dbus_connection(self.address) as conn:
            reply = conn.send_and_get_reply(
                message_bus.NameHasOwner("org.freedesktop.Notifications"), timeout=5
            )
        return bool(reply.body[0])

    def _collect(self, dunst: subprocess.Popen[str]) -> None:
        assert dunst.stdout is not None
        block: list[str] = []
        for line in dunst.stdout:
            if line == "{\n":
                block = []
            elif line == "}\n" and block:
                self.shown.append(parse_dunst_block("".join(block)))
            else:
                block.append(line)

    def wait_for(self, summary: str, *, after: int = 0) -> Shown:
        def find() -> Shown | None:
            return next((s for s in self.shown[after:] if s.summary == summary), None)

        return wait_for(find, 20.0, f"dunst to show {summary!r}")


def stop_group(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


class AlertService:
    """The service's real socket Server in a thread of its own, publishing alerts we make."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: Server | None = None
        self.start()

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=15)

    def start(self) -> None:
        self.server = Server({})
        self._run(self.server.start(self.path))

    def stop(self) -> None:
        assert self.server is not None
        self._run(self.server.close())

    def has_subscriber(self) -> bool:
        return bool(self.server and self.server.subscribers)

    def wait_for_subscriber(self) -> None:
        wait_for(self.has_subscriber, 20.0, "the bridge to subscribe")

    def publish(self, event: dict[str, Any]) -> None:
        assert self.server is not None
        self.server.publish(event)

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def display() -> Iterator[Display]:
    if not all(map(shutil.which, DESKTOP_TOOLS)):
        pytest.skip("needs Debian's xvfb, dbus, dunst and coreutils")
    screen = Display()
    yield screen
    screen.close()


@pytest.fixture(scope="module")
def session(display: Display) -> Iterator[Session]:
    folder = short_dir()
    desktop = Session(folder, display)
    yield desktop
    desktop.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def service() -> Iterator[AlertService]:
    folder = short_dir()
    alerts = AlertService(folder / "dupwatch.sock")
    yield alerts
    alerts.close()
    shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Photos:
    folder: Path
    original: Path
    copy: Path


@pytest.fixture
def photos(photo: Any) -> Photos:
    (photo.folder / "old").mkdir()
    (photo.folder / "batch7").mkdir()
    picture = photo.image("chelsea.png")
    original = photo.save(picture, "old/cat_0001.jpg")
    copy = photo.save(picture.resize((225, 150)), "batch7/cat_0412.jpg")
    return Photos(photo.folder, Path(original), Path(copy))


@contextmanager
def running_bridge(
    socket_path: Path, subscribed: Callable[[], Any], address: str, folder: Path
) -> Iterator[Bridge]:
    """The real `dupwatch notify` on the session bus at `address`, subscribed to the service."""
    env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": address, "XDG_CACHE_HOME": str(folder)}
    folder.mkdir(exist_ok=True)
    log = (folder / "bridge.log").open("w")
    process = subprocess.Popen(
        [DUPWATCH, "notify", "--socket", str(socket_path)], env=env, stderr=log, text=True
    )

    def ready() -> Any:
        if process.poll() is not None:
            log.flush()
            raise AssertionError(f"dupwatch notify ended: {(folder / 'bridge.log').read_text()}")
        return subscribed()

    try:
        wait_for(ready, 20.0, "the bridge to subscribe")
        yield Bridge(process, folder / "bridge.log")
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@dataclass(frozen=True)
class Bridge:
    process: subprocess.Popen[str]
    log: Path


@pytest.fixture
def bridge(service: AlertService, session: Session, tmp_path: Path) -> Iterator[Bridge]:
    cache = tmp_path / "cache"
    with running_bridge(service.path, service.has_subscriber, session.address, cache) as running:
        yield running


def near(original: Path, distance: int = 3) -> tuple[str, str, int]:
    return (str(original), "near", distance)


@needs_desktop
def test_a_duplicate_pops_up_with_its_thumbnail(
    session: Session, service: AlertService, bridge: Any, photos: Photos, tmp_path: Path
) -> None:
    before = len(session.shown)
    service.publish(alert(str(photos.copy), near(photos.original)))
    shown = session.wait_for("Duplicate: cat_0412.jpg", after=before)
    assert shown.appname == "dupwatch"
    assert (
        shown.body
        == f"near-duplicate of <b>cat_0001.jpg</b> (distance 3)\nin {photos.original.parent}"
    )
    assert shown.actions == {"default": "Open folder"}, "dunst lists the actions capability"
    assert shown.icon.startswith("file://")
    thumb = Path(shown.icon.removeprefix("file://"))
    assert thumb.parent == tmp_path / "cache" / "dupwatch" / "thumbs"
    with Image.open(thumb) as img:
        assert img.format == "PNG" and max(img.size) <= thumbnails.THUMB_PIXELS


@needs_desktop
def test_a_burst_of_300_is_one_summary(
    session: Session, service: AlertService, bridge: Any, photos: Photos
) -> None:
    before = len(session.shown)
    for i in range(300):
        service.publish(alert(str(photos.copy.parent / f"copy_{i:03}.jpg"), near(photos.original)))
    final = session.wait_for("300 duplicates in batch7/", after=before)
    assert final.body == f"in {photos.copy.parent}\n300 near-duplicates"
    shown = session.shown[before:]
    summaries = {s.id for s in shown if s.summary.endswith("duplicates in batch7/")}
    assert summaries == {final.id}, "one summary, redrawn in place"
    alone = {s.id for s in shown if s.summary.startswith("Duplicate: ")}
    assert len(alone) <= bursts.BURST_AFTER, "at most the first few before the burst showed"
    assert len(shown) < 12, [s.summary for s in shown]


@needs_desktop
def test_it_follows_the_service_through_a_restart(
    session: Session, service: AlertService, bridge: Any, photos: Photos
) -> None:
    service.stop()
    service.start()
    service.wait_for_subscriber()
    before = len(session.shown)
    service.publish(alert(str(photos.copy), near(photos.original)))
    session.wait_for("Duplicate: cat_0412.jpg", after=before)


@needs_desktop
def test_open_folder_action_asks_the_file_manager(
    session: Session, service: AlertService, bridge: Any, photos: Photos
) -> None:
    """Clicking "Open folder" (ActionInvoked) shows the file in org.freedesktop.FileManager1."""
    with open_dbus_connection(session.address) as file_manager:
        reply = file_manager.send_and_get_reply(
            message_bus.RequestName("org.freedesktop.FileManager1"), timeout=5
        )
        assert reply.body == (1,)  # primary owner
        before = len(session.shown)
        service.publish(alert(str(photos.copy), near(photos.original)))
        shown = session.wait_for("Duplicate: cat_0412.jpg", after=before)
        emitter = DBusAddress(
            "/org/freedesktop/Notifications", interface="org.freedesktop.Notifications"
        )
        file_manager.send(new_signal(emitter, "ActionInvoked", "us", (shown.id, "default")))
        deadline = time.monotonic() + 20
        while True:
            message = file_manager.receive(timeout=max(0.1, deadline - time.monotonic()))
            if message.header.message_type == MessageType.method_call:
                break
        file_manager.send(new_method_return(message))
    assert message.header.fields[HeaderFields.member] == "ShowItems"
    assert message.body == ([photos.copy.as_uri()], "")


@needs_desktop
def test_it_comes_back_with_the_session_bus(
    display: Display, service: AlertService, photos: Photos, tmp_path: Path
) -> None:
    folder = short_dir()
    desktop = Session(folder, display)
    try:
        subscribed = service.has_subscriber
        with running_bridge(
            service.path, subscribed, desktop.address, tmp_path / "cache"
        ) as bridge:
            desktop.stop()
            wait_for(lambda: "unreachable" in bridge.log.read_text(), 20.0, "the bridge to notice")
            desktop.start()
            service.publish(alert(str(photos.copy), near(photos.original)))
            desktop.wait_for("Duplicate: cat_0412.jpg")
            assert bridge.process.poll() is None
    finally:
        desktop.stop()
        shutil.rmtree(folder, ignore_errors=True)


@needs_desktop
def test_a_copy_dropped_into_a_watched_folder_pops_up(
    session: Session, photo: Any, tmp_path: Path
) -> None:
    """The whole path: `dupwatch daemon` sees the file, `dupwatch notify` shows it in dunst."""
    labels = Path(photo.folder) / "labels"
    labels.mkdir()
    picture = photo.image("chelsea.png")
    photo.save(picture, "labels/cat_0001.jpg")
    folder = short_dir()
    socket_path = folder / "dupwatch.sock"
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    command = [DUPWATCH, "daemon", "--index", str(tmp_path / "index")]
    command += ["--socket", str(socket_path), str(labels)]
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen(command, env=env, stderr=log)
    try:

        def subscribers() -> int:
            try:
                return call("status", socket_path)["subscribers"]
            except DaemonNotRunning:
                return 0

        cache = tmp_path / "cache"
        with running_bridge(socket_path, subscribers, session.address, cache):
            before = len(session.shown)
            photo.save(picture.resize((300, 200)), "labels/cat_0412.jpg", quality=80)
            shown = session.wait_for("Duplicate: cat_0412.jpg", after=before)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)
    assert re.fullmatch(
        rf"near-duplicate of <b>cat_0001.jpg</b> \(distance \d+\)\nin {labels}", shown.body
    )
    assert shown.icon.startswith(f"file://{cache}/dupwatch/thumbs/")


@needs_desktop
def test_alerts_wait_for_a_notification_server(
    display: Display, service: AlertService, photos: Photos, tmp_path: Path
) -> None:
    """At login the bridge may start before the notification server, or the one the bus
    starts on demand may fail: the alert waits, and shows when a server takes the name."""
    services = tmp_path / "services"
    services.mkdir()
    (services / "notifications.service").write_text(
        "[D-BUS Service]\nName=org.freedesktop.Notifications\nExec=/bin/false\n"
    )
    folder = short_dir()
    desktop = Session(folder, display, server=False, services=services)
    try:
        with running_bridge(
            service.path, service.has_subscriber, desktop.address, tmp_path / "cache"
        ) as bridge:
            wait_for(lambda: "alerts wait" in bridge.log.read_text(), 20.0, "the bridge to wait")
            service.publish(alert(str(photos.copy), near(photos.original)))
            time.sleep(1.0)  # long enough for it to be lost, were it not held
            assert bridge.process.poll() is None, bridge.log.read_text()
            desktop.start_server()
            desktop.wait_for("Duplicate: cat_0412.jpg")
            log = bridge.log.read_text()
            assert "Spawn.ChildExited" in log, log  # the bus tried to start one, and it failed
    finally:
        desktop.stop()
        shutil.rmtree(folder, ignore_errors=True)
