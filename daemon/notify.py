"""`dupwatch notify`: each duplicate the service finds, shown as a desktop notification.

What to say and when: one notification per duplicate with a thumbnail, a burst folded into one
summary, reconnection when the service or the session bus comes back, alerts held while no
notification server answers (see desktop.py for D-Bus).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from jeepney import DBusErrorResponse, HeaderFields, Message
from PIL import Image, ImageOps

from dupwatch.daemon.desktop import (
    CALL_TIMEOUT_S,
    NOTIFICATIONS,
    Bus,
    BusUnavailable,
    Desktop,
    is_bus_error,
    is_server_change,
    session_bus_address,
)
from dupwatch.index.errors import DupwatchError

log = logging.getLogger(__name__)

Alert = dict[str, Any]
AlertSource = Callable[[], Iterable[Alert]]

# More alerts than BURST_AFTER, each within BURST_WINDOW_S of the one before, make a burst:
# one summary notification instead of a pop-up each.
BURST_AFTER = 3
BURST_WINDOW_S = 2.0
SUMMARY_EVERY_S = 1.0  # how often a growing burst's summary is redrawn
THUMB_PIXELS = 128
THUMB_CACHE_FILES = 500
MAX_PENDING = 10_000  # alerts held while the bus is away; beyond it they are only counted
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0
RECHECK_S = 5.0  # while no notification server answers, how often an alert asks again

KIND_WORDS = {"exact": "exact copy of", "pixel": "same pixels as", "near": "near-duplicate of"}
KIND_NOUNS = {  # one, many
    "exact": ("exact copy", "exact copies"),
    "pixel": ("same-pixel copy", "same-pixel copies"),
    "near": ("near-duplicate", "near-duplicates"),
}


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
    >>> runs.forget(); runs.observe(9.2)
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

    def forget(self, count: int = 1) -> None:
        """Take back the last `count` observed (not shown after all: they come again)."""
        self.position = max(0, self.position - count)


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
        # Alerts not shown yet, oldest first: they wait while the bus or its notification
        # server is away, and are shown in order when it is back.
        self.held: deque[Alert] = deque()
        self.server_asked_at = 0.0
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
        await self._find_server(desktop)
        while True:
            await self._show_held(desktop)
            try:
                kind, payload = await asyncio.wait_for(self.inbox.get(), self._redraw_in(desktop))
            except TimeoutError:
                await self._drawing(desktop, self._redraw_burst(desktop))
                continue
            if kind == "lost" and payload is desktop.bus:
                raise BusUnavailable(desktop.bus.address, "connection closed")
            if kind == "signal" and is_server_change(payload):
                await self._find_server(desktop)
            elif kind == "signal":
                await self._on_signal(desktop, payload)
            elif kind == "alert":
                self._hold(payload)
                if not desktop.present and time.monotonic() - self.server_asked_at > RECHECK_S:
                    await self._find_server(desktop)  # a server started on demand, perhaps
            if self.unlisted and self.inbox.empty():
                missed, self.unlisted = self.unlisted, 0
                self._hold({"event": "missed", "count": missed})

    async def _find_server(self, desktop: Desktop) -> None:
        """Ask for the notification server (the bus may start one); say when it comes or goes."""
        self.server_asked_at = time.monotonic()
        was_present = desktop.present
        try:
            await desktop.load_capabilities()
        except DBusErrorResponse as error:
            desktop.present = False
            if was_present is not False:
                log.warning("no notification server on the session bus (%s); alerts wait", error)
            return
        desktop.present = True
        if was_present is False:
            log.info("a notification server is on the session bus: showing %d", len(self.held))

    def _hold(self, alert: Alert) -> None:
        if len(self.held) >= MAX_PENDING:
            self.unlisted += int(alert.get("count", 1)) if alert.get("event") == "missed" else 1
        else:
            self.held.append(alert)

    async def _show_held(self, desktop: Desktop) -> None:
        """Show the held alerts in order while the notification server takes them."""
        while self.held and desktop.present:
            alert = self.held.popleft()
            burst, count = self.burst, self.burst.count if self.burst else 0
            shown = False
            try:
                shown = await self._drawing(desktop, self.on_alert(desktop, alert))
            finally:  # the bus going away raises
                folded = self.burst is not None and (self.burst, self.burst.count) != (burst, count)
                if not shown and not folded:  # not in a summary either: first when it can be
                    self.runs.forget()
                    self.held.appendleft(alert)

    async def _drawing(self, desktop: Desktop, drawing: Awaitable[None]) -> bool:
        """Await `drawing`; False when the notification server went away meanwhile (the bus
        going away raises). One the server refuses is logged and counts as done."""
        try:
            await drawing
        except DBusErrorResponse as error:
            if not is_bus_error(error):
                log.warning("the notification server refused a notification: %s", error)
                return True
            if desktop.present:
                log.warning("the notification server left the session bus (%s)", error)
            desktop.present = False
            return False
        return True

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

    def _redraw_in(self, desktop: Desktop) -> float | None:
        """Seconds until a growing burst's summary is due for a redraw; None: nothing due."""
        burst = self.burst
        if burst is None or burst.count == burst.shown_count or not desktop.present:
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
