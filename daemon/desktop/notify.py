"""`dupwatch notify`: each duplicate the service finds, shown as a desktop notification.

What to say and when: one notification per duplicate with a thumbnail, a burst folded into one
summary, reconnection when the service or the session bus comes back, alerts held while no
notification server answers (see desktop.py for D-Bus).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from jeepney import DBusErrorResponse, HeaderFields, Message

from dupwatch.daemon.desktop.bursts import (
    BURST_AFTER,
    BURST_WINDOW_S,
    Alert,
    Burst,
    Runs,
    alert_body,
    alert_summary,
)
from dupwatch.daemon.desktop.dbus import (
    CALL_TIMEOUT_S,
    NOTIFICATIONS,
    Bus,
    BusUnavailable,
    Desktop,
    is_bus_error,
    is_server_change,
    session_bus_address,
)
from dupwatch.daemon.desktop.thumbnails import default_cache_dir, thumbnail
from dupwatch.index.errors import DupwatchError

log = logging.getLogger(__name__)

AlertSource = Callable[[], Iterable[Alert]]

SUMMARY_EVERY_S = 1.0  # how often a growing burst's summary is redrawn
MAX_PENDING = 10_000  # alerts held while the bus is away; beyond it they are only counted
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0
RECHECK_S = 5.0  # while no notification server answers, how often an alert asks again


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
    from dupwatch.daemon.wire.client import Client

    with Client(socket_path, timeout_s=CALL_TIMEOUT_S) as client:
        yield from client.subscribe()
