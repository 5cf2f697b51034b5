"""`dupwatch notify`: each duplicate the service finds, shown as a desktop notification.

Speaks org.freedesktop.Notifications on the session bus through jeepney (pure Python), folds a
burst of alerts into one summary, and reconnects when the service or the bus comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import subprocess
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from jeepney import (
    DBusAddress,
    DBusErrorResponse,
    HeaderFields,
    MatchRule,
    Message,
    MessageType,
    new_method_call,
)
from jeepney.bus_messages import message_bus
from jeepney.io.asyncio import DBusConnection, open_dbus_connection
from jeepney.io.common import ReplyMatcher
from PIL import Image, ImageOps

from dupwatch.index.errors import DupwatchError

log = logging.getLogger(__name__)

Alert = dict[str, Any]
AlertSource = Callable[[], Iterable[Alert]]

APP_NAME = "dupwatch"
# More alerts than BURST_AFTER, each within BURST_WINDOW_S of the one before, make a burst:
# one summary notification instead of a pop-up each.
BURST_AFTER = 3
BURST_WINDOW_S = 2.0
SUMMARY_EVERY_S = 1.0  # how often a growing burst's summary is redrawn
THUMB_PIXELS = 128
THUMB_CACHE_FILES = 500
MAX_PENDING = 10_000  # alerts held while the bus is away; beyond it they are only counted
CALL_TIMEOUT_S = 10.0
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0

NOTIFICATIONS = DBusAddress(
    "/org/freedesktop/Notifications",
    bus_name="org.freedesktop.Notifications",
    interface="org.freedesktop.Notifications",
)
FILE_MANAGER = DBusAddress(
    "/org/freedesktop/FileManager1",
    bus_name="org.freedesktop.FileManager1",
    interface="org.freedesktop.FileManager1",
)
KIND_WORDS = {"exact": "exact copy of", "pixel": "same pixels as", "near": "near-duplicate of"}
KIND_NOUNS = {  # one, many
    "exact": ("exact copy", "exact copies"),
    "pixel": ("same-pixel copy", "same-pixel copies"),
    "near": ("near-duplicate", "near-duplicates"),
}


class NoSessionBus(DupwatchError):
    """There is no D-Bus session bus to show notifications on."""


class BusUnavailable(DupwatchError):
    """The session bus did not answer (not running, went away, or refused us)."""

    def __init__(self, address: str, cause: str) -> None:
        self.address = address
        self.cause = cause
        super().__init__(f"the D-Bus session bus at {address} is unreachable: {cause}")


def session_bus_address() -> str:
    """$DBUS_SESSION_BUS_ADDRESS, else $XDG_RUNTIME_DIR/bus (as sd-bus and libdbus do).

    Raises NoSessionBus, saying what was looked for, when neither is there.
    """
    address = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    if address:
        return address
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime, "bus").is_socket():
        return f"unix:path={Path(runtime, 'bus')}"
    where = f"{runtime}/bus does not exist" if runtime else "XDG_RUNTIME_DIR is unset too"
    raise NoSessionBus(
        f"no D-Bus session bus: DBUS_SESSION_BUS_ADDRESS is unset and {where}; run "
        "`dupwatch notify` inside the desktop session (or under `dbus-run-session`)"
    )


# The words on the screen


def alert_summary(alert: Alert) -> str:
    """The title of one duplicate: "Duplicate: cat_0412.jpg"."""
    return f"Duplicate: {os.path.basename(alert['path'])}"


def alert_body(alert: Alert, *, markup: bool = False) -> str:
    """What the new file duplicates: kind, the match's name, its folder, how many others."""
    matches = alert["matches"]
    best = matches[0]
    kind = str(best.get("kind", "near"))
    name, folder = os.path.basename(best["path"]), os.path.dirname(best["path"])
    distance = f" (distance {best['distance']})" if kind == "near" else ""
    words = KIND_WORDS.get(kind, f"{kind} match of")
    if markup:
        first = f"{escape(words)} <b>{escape(name)}</b>{distance}"
        folder = escape(folder)
    else:
        first = f"{words} {name}{distance}"
    lines = [first, f"in {folder}"]
    if len(matches) > 1:
        others = len(matches) - 1
        lines.append(f"and {others} more {'match' if others == 1 else 'matches'}")
    return "\n".join(lines)


def folder_label(folder: str | None) -> str:
    """How a burst names its folder: "batch7/", or "several folders" when they share none.

    >>> folder_label("/srv/labels/batch7"), folder_label("/"), folder_label(None)
    ('batch7/', 'several folders', 'several folders')
    """
    if not folder or folder == os.sep:
        return "several folders"
    return os.path.basename(folder.rstrip(os.sep)) + "/"


@dataclass
class Burst:
    """Many alerts close together, shown as one summary notification that keeps count."""

    count: int = 0
    folders: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    image: Path | None = None  # the first thumbnail of the burst, if any
    notification_id: int = 0
    shown_count: int = 0
    shown_at: float = 0.0

    def add(self, alert: Alert) -> None:
        if alert.get("event") == "missed":
            self.count += int(alert.get("count", 0))
            return
        self.count += 1
        self.folders[os.path.dirname(alert["path"])] += 1
        self.kinds[str(alert["matches"][0].get("kind", "near"))] += 1

    @property
    def folder(self) -> str | None:
        """The deepest folder holding every new file of the burst (None if none is known)."""
        if not self.folders:
            return None
        try:
            return os.path.commonpath(list(self.folders))
        except ValueError:  # relative and absolute paths mixed: no common folder
            return None

    @property
    def summary(self) -> str:
        return f"{self.count} duplicates in {folder_label(self.folder)}"

    def body(self, *, markup: bool = False) -> str:
        """Where, and how many of each kind: "in /srv/labels/batch7\n297 near-duplicates, ..."."""
        counts = [f"{n} {kind_noun(kind, n)}" for kind, n in self.kinds.most_common()]
        unknown = self.count - sum(self.kinds.values())
        if unknown:
            counts.append(f"{unknown} not listed by the service (its queue was full)")
        folder = self.folder or "several folders"
        return f"in {escape(folder) if markup else folder}\n{', '.join(counts)}"


def kind_noun(kind: str, count: int) -> str:
    """ "near-duplicate" or "near-duplicates", and so on for each kind."""
    one, many = KIND_NOUNS.get(kind, (f"{kind} match", f"{kind} matches"))
    return one if count == 1 else many


class Runs:
    """Numbers alerts within runs: a run goes on while each comes within window_s of the last.

    >>> runs = Runs(window_s=2.0)
    >>> [runs.observe(t) for t in (0.0, 0.5, 2.4, 9.0)]
    [1, 2, 3, 1]
    >>> runs.observe(9.1, count=40)
    41
    """

    def __init__(self, *, window_s: float) -> None:
        self.window_s = window_s
        self.position = 0
        self.last: float | None = None

    def observe(self, now: float, count: int = 1) -> int:
        """Count `count` alerts at time `now`; returns the position of the last in its run."""
        if self.last is None or now - self.last > self.window_s:
            self.position = 0
        self.last = now
        self.position += count
        return self.position


# Thumbnails


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/dupwatch/thumbs (the unit's CacheDirectory=dupwatch)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "dupwatch" / "thumbs"


def thumbnail(path: str, cache_dir: Path) -> Path | None:
    """A PNG of `path` at most THUMB_PIXELS wide and high, upright, cached; None if unreadable.

    The cache key is the path with its size and mtime, so a changed file gets a new picture.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = f"{path}\0{st.st_size}\0{st.st_mtime_ns}".encode("utf-8", "surrogateescape")
    target = cache_dir / f"{hashlib.blake2b(key, digest_size=16).hexdigest()}.png"
    if target.exists():
        return target
    try:
        with Image.open(path) as img:
            img.draft("RGB", (THUMB_PIXELS * 2, THUMB_PIXELS * 2))
            small = ImageOps.exif_transpose(img)
            small.thumbnail((THUMB_PIXELS, THUMB_PIXELS))
            small = small.convert("RGBA" if "A" in small.getbands() else "RGB")
        cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}")
        small.save(partial, "PNG")
        os.replace(partial, target)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        log.info("no thumbnail for %s: %s", path, error)
        return None
    prune_cache(cache_dir)
    return target


def prune_cache(cache_dir: Path, keep: int = THUMB_CACHE_FILES) -> None:
    """Drop the oldest thumbnails beyond `keep` (they are ours and cheap to remake)."""
    pictures = list(cache_dir.glob("*.png"))
    if len(pictures) <= keep:
        return
    pictures.sort(key=lambda p: p.stat().st_mtime_ns if p.exists() else 0)
    for old in pictures[: len(pictures) - keep]:
        with contextlib.suppress(FileNotFoundError):
            old.unlink()


# The session bus


class Bus:
    """One session-bus connection: calls with replies, signals into `inbox`, `lost` at the end."""

    def __init__(self, address: str, conn: DBusConnection, inbox: asyncio.Queue) -> None:
        self.address = address
        self._conn = conn
        self._replies = ReplyMatcher()
        self.lost = asyncio.Event()
        self._receiver = asyncio.create_task(self._receive(inbox))

    @classmethod
    async def open(cls, address: str, inbox: asyncio.Queue) -> Bus:
        """Connect and subscribe to the notification server's signals; raises BusUnavailable."""
        try:
            conn = await asyncio.wait_for(open_dbus_connection(address), CALL_TIMEOUT_S)
        except (OSError, EOFError, RuntimeError, ValueError, TimeoutError) as error:
            raise BusUnavailable(address, str(error) or type(error).__name__) from None
        bus = cls(address, conn, inbox)
        rule = MatchRule(
            type="signal", interface=NOTIFICATIONS.interface, path=NOTIFICATIONS.object_path
        )
        await bus.call(message_bus.AddMatch(rule))
        return bus

    async def call(self, message: Message) -> tuple[Any, ...]:
        """Send a method call, return the reply's body; raises DBusErrorResponse, BusUnavailable."""
        if self.lost.is_set():
            raise BusUnavailable(self.address, "connection closed")
        serial = next(self._conn.outgoing_serial)
        future = asyncio.get_running_loop().create_future()
        with self._replies.catch(serial, future):
            try:
                await self._conn.send(message, serial=serial)
                reply = await asyncio.wait_for(future, CALL_TIMEOUT_S)
            except (OSError, TimeoutError) as error:
                raise BusUnavailable(self.address, str(error) or "no reply") from None
        if reply.header.message_type == MessageType.error:
            raise DBusErrorResponse(reply)
        return reply.body

    async def _receive(self, inbox: asyncio.Queue) -> None:
        try:
            while True:
                message = await self._conn.receive()
                if message.header.message_type == MessageType.signal:
                    inbox.put_nowait(("signal", message))
                else:
                    self._replies.dispatch(message)
        except (EOFError, OSError):
            pass
        finally:
            self._replies.drop_all(BusUnavailable(self.address, "connection closed"))
            self.lost.set()
            inbox.put_nowait(("lost", self))

    async def close(self) -> None:
        self._receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await self._receiver
        with contextlib.suppress(OSError):
            await self._conn.close()


class Desktop:
    """The notification server, and the file manager for "open folder", over one Bus."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.capabilities: frozenset[str] = frozenset()

    async def load_capabilities(self) -> None:
        (capabilities,) = await self.bus.call(new_method_call(NOTIFICATIONS, "GetCapabilities"))
        self.capabilities = frozenset(capabilities)

    @property
    def markup(self) -> bool:
        return "body-markup" in self.capabilities

    async def notify(
        self, summary: str, body: str, *, image: Path | None = None, replaces: int = 0
    ) -> int:
        """Show (or, with `replaces`, redraw) a notification; returns its id."""
        hints: dict[str, tuple[str, Any]] = {"urgency": ("y", 1)}
        if image is not None:
            hints["image-path"] = ("s", image.as_uri())
        actions = ["default", "Open folder"] if "actions" in self.capabilities else []
        icon = str(image) if image is not None else ""
        args = (APP_NAME, replaces, icon, summary, body, actions, hints, -1)
        message = new_method_call(NOTIFICATIONS, "Notify", "susssasa{sv}i", args)
        (notification_id,) = await self.bus.call(message)
        return int(notification_id)

    async def close(self, notification_id: int) -> None:
        with contextlib.suppress(DBusErrorResponse):
            await self.bus.call(
                new_method_call(NOTIFICATIONS, "CloseNotification", "u", (notification_id,))
            )

    async def show(self, target: Path) -> None:
        """Show `target` in the file manager: a file selected in its folder, or a folder.

        Through org.freedesktop.FileManager1, which starts the file manager outside this
        service; `xdg-open` on the folder where no file manager offers that interface.
        """
        method = "ShowFolders" if target.is_dir() else "ShowItems"
        try:
            await self.bus.call(
                new_method_call(FILE_MANAGER, method, "ass", ([target.as_uri()], ""))
            )
            return
        except DBusErrorResponse as error:
            log.info("no FileManager1 on the session bus (%s); using xdg-open", error.name)
        folder = target if target.is_dir() else target.parent
        try:
            subprocess.Popen(
                ["xdg-open", str(folder)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as error:
            log.warning("cannot open %s: xdg-open: %s", folder, error)


# The bridge


class Backoff:
    """Waits between reconnection tries: RETRY_FIRST_S, doubling up to RETRY_MAX_S."""

    def __init__(self) -> None:
        self.delay_s = RETRY_FIRST_S

    def next(self) -> float:
        delay, self.delay_s = self.delay_s, min(self.delay_s * 2, RETRY_MAX_S)
        return delay

    def reset(self) -> None:
        self.delay_s = RETRY_FIRST_S


class Bridge:
    """Shows the alerts of `subscribe()` on the desktop until cancelled.

    `subscribe` opens a fresh alert stream each time it is called (an iterable of alert
    dicts that ends, or raises a DupwatchError or OSError, when the service goes away).
    """

    def __init__(
        self,
        subscribe: AlertSource,
        *,
        cache_dir: Path | None = None,
        bus_address: str | None = None,
        burst_after: int = BURST_AFTER,
        window_s: float = BURST_WINDOW_S,
    ) -> None:
        self.subscribe = subscribe
        self.cache_dir = cache_dir or default_cache_dir()
        self.bus_address = bus_address
        self.burst_after = burst_after
        self.runs = Runs(window_s=window_s)
        self.run_alerts: list[tuple[Alert, int]] = []  # shown alone in this run: (alert, id)
        self.burst: Burst | None = None
        self.targets: OrderedDict[int, Path] = OrderedDict()  # notification id -> what to open
        self.unlisted = 0  # alerts dropped while too many waited
        self.interrupted: Alert | None = None  # the alert being shown when the bus went away
        self.inbox: asyncio.Queue[tuple[str, Any]] | None = None

    def run(self) -> None:
        """Serve forever; raises NoSessionBus when there is no session bus to talk to."""
        asyncio.run(self.serve())

    async def serve(self) -> None:
        address = self.bus_address or session_bus_address()
        self.inbox = asyncio.Queue()
        loop = asyncio.get_running_loop()
        threading.Thread(
            target=self._follow_alerts, args=(loop,), name="dupwatch-alerts", daemon=True
        ).start()
        backoff = Backoff()
        while True:
            try:
                bus = await Bus.open(address, self.inbox)
            except BusUnavailable as error:
                delay = backoff.next()
                log.warning("%s; trying again in %.1f s", error, delay)
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            log.info("showing duplicates on the session bus at %s", address)
            try:
                await self._show_until_lost(Desktop(bus))
            except BusUnavailable as error:
                log.warning("%s; reconnecting", error)
            finally:
                await bus.close()

    async def _show_until_lost(self, desktop: Desktop) -> None:
        assert self.inbox is not None
        await desktop.load_capabilities()
        if self.interrupted is not None:
            interrupted, self.interrupted = self.interrupted, None
            await self._on_alert_shown(desktop, interrupted)
        while True:
            try:
                kind, payload = await asyncio.wait_for(self.inbox.get(), self._redraw_in())
            except TimeoutError:
                await self._redraw_burst(desktop)
                continue
            if kind == "lost" and payload is desktop.bus:
                raise BusUnavailable(desktop.bus.address, "connection closed")
            if kind == "signal":
                await self._on_signal(desktop, payload)
            elif kind == "alert":
                await self._on_alert_shown(desktop, payload)
            if self.unlisted and self.inbox.empty():
                missed, self.unlisted = self.unlisted, 0
                await self._on_alert_shown(desktop, {"event": "missed", "count": missed})

    async def _on_alert_shown(self, desktop: Desktop, alert: Alert) -> None:
        try:
            await self.on_alert(desktop, alert)
        except BusUnavailable:
            self.interrupted = alert  # shown first once the bus is back
            raise
        except DBusErrorResponse as error:
            # No notification server (yet): say so, drop this one, keep following.
            log.warning("the notification server refused %s: %s", alert.get("path"), error)

    async def on_alert(self, desktop: Desktop, alert: Alert) -> None:
        """Show one alert alone, or fold it into the burst it belongs to."""
        event = alert.get("event")
        missed = event == "missed"
        if not missed and (event != "duplicate" or not alert.get("matches")):
            log.debug("ignoring event %r", event)
            return
        count = int(alert.get("count", 0)) if missed else 1
        position = self.runs.observe(time.monotonic(), count)
        if position == count:  # the first of a new run
            self.run_alerts, self.burst = [], None
        if self.burst is not None:
            self.burst.add(alert)
            if time.monotonic() - self.burst.shown_at >= SUMMARY_EVERY_S:
                await self._redraw_burst(desktop)
        elif position <= self.burst_after and not missed:
            self.run_alerts.append((alert, await self._show_alone(desktop, alert)))
        else:
            await self._start_burst(desktop, alert)

    async def _show_alone(self, desktop: Desktop, alert: Alert) -> int:
        image = await asyncio.to_thread(thumbnail, alert["path"], self.cache_dir)
        markup = desktop.markup
        nid = await desktop.notify(
            alert_summary(alert), alert_body(alert, markup=markup), image=image
        )
        self._remember(nid, Path(alert["path"]))
        return nid

    async def _start_burst(self, desktop: Desktop, alert: Alert) -> None:
        """Fold the alerts shown alone in this run and `alert` into one summary."""
        burst = Burst()
        for earlier, _nid in self.run_alerts:
            burst.add(earlier)
        burst.add(alert)
        if self.run_alerts:
            first = self.run_alerts[0][0]["path"]
            burst.image = await asyncio.to_thread(thumbnail, first, self.cache_dir)
        ids = [nid for _alert, nid in self.run_alerts]
        burst.notification_id = ids[0] if ids else 0  # the summary takes the first one's place
        for nid in ids[1:]:
            await desktop.close(nid)
        self.burst, self.run_alerts = burst, []
        await self._redraw_burst(desktop)

    async def _redraw_burst(self, desktop: Desktop) -> None:
        burst = self.burst
        if burst is None or burst.count == burst.shown_count:
            return
        burst.notification_id = await desktop.notify(
            burst.summary,
            burst.body(markup=desktop.markup),
            image=burst.image,
            replaces=burst.notification_id,
        )
        burst.shown_count, burst.shown_at = burst.count, time.monotonic()
        if burst.folder:
            self._remember(burst.notification_id, Path(burst.folder))

    def _redraw_in(self) -> float | None:
        """Seconds until a growing burst's summary is due for a redraw; None: nothing due."""
        burst = self.burst
        if burst is None or burst.count == burst.shown_count:
            return None
        return max(0.0, burst.shown_at + SUMMARY_EVERY_S - time.monotonic())

    def _remember(self, notification_id: int, target: Path) -> None:
        self.targets[notification_id] = target
        self.targets.move_to_end(notification_id)
        while len(self.targets) > 256:
            self.targets.popitem(last=False)

    async def _on_signal(self, desktop: Desktop, message: Message) -> None:
        member = message.header.fields.get(HeaderFields.member)
        interface = message.header.fields.get(HeaderFields.interface)
        if interface != NOTIFICATIONS.interface:
            return
        if member == "ActionInvoked":
            notification_id, _action = message.body
            target = self.targets.get(notification_id)
            if target is not None:
                await desktop.show(target)
        elif member == "NotificationClosed":
            self.targets.pop(message.body[0], None)

    def _follow_alerts(self, loop: asyncio.AbstractEventLoop) -> None:
        """Thread: read the alert stream into the inbox, reconnecting with backoff."""
        backoff = Backoff()
        last_problem = None
        while True:
            started = time.monotonic()
            try:
                for alert in self.subscribe():
                    loop.call_soon_threadsafe(self._enqueue, alert)
                    backoff.reset()
                problem = "the service closed the alert stream"
            except (DupwatchError, OSError) as error:
                problem = str(error)
            if time.monotonic() - started > RETRY_MAX_S:
                backoff.reset()
            if problem != last_problem:
                log.warning("%s; reconnecting", problem)
                last_problem = problem
            time.sleep(backoff.next())
            if loop.is_closed():
                return

    def _enqueue(self, alert: Alert) -> None:
        assert self.inbox is not None
        if self.inbox.qsize() >= MAX_PENDING:
            self.unlisted += int(alert.get("count", 1)) if alert.get("event") == "missed" else 1
            return
        self.inbox.put_nowait(("alert", alert))


def alerts_from(socket_path: Path) -> Iterator[Alert]:
    """One subscription to the service at `socket_path` (a fresh connection each call)."""
    from dupwatch.daemon.client import Client

    with Client(socket_path, timeout_s=CALL_TIMEOUT_S) as client:
        yield from client.subscribe()
