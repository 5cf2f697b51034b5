"""The alert-stream loop of `dupwatch labelstudio`, and `--sync`.

Nothing is kept on disk: the flag on a task is the record of what was sent, so sending it
again changes nothing, and a (re)start catches up by flagging every group of the index
whose tasks carry no flag yet. Alerts wait, in order, while the server is away; an alert
whose file has no task yet (the storage not synced) waits for it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

from dupwatch.daemon.labelstudio.api import Server, TaskGone, Unreachable
from dupwatch.daemon.labelstudio.plan import (
    Flag,
    Waiting,
    alert_flag,
    flagged_tasks,
    group_flags,
)
from dupwatch.daemon.labelstudio.source import Source
from dupwatch.daemon.labelstudio.tasks import TaskMap
from dupwatch.daemon.wire.client import Client
from dupwatch.index.errors import DupwatchError

log = logging.getLogger(__name__)

Alert = dict[str, Any]

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0  # a local server restarting: worth asking often
REFRESH_MIN_S = 1.0  # the task list is read again on a miss at most this often
WAIT_FIRST_S = 2.0  # alerts waiting for their tasks look again after this, doubling...
WAIT_MAX_S = 30.0  # ...up to this
WAIT_FOR_MATCHES_S = 3600.0  # past this an alert no longer waits for its matches' tasks
SUBSCRIBE_TIMEOUT_S = 30.0
MAX_HELD = 10_000  # alerts held while the server is away; beyond it a catch-up covers them
CATCH_UP = {"event": "catch-up"}  # a marker in the queue: flag every group


@dataclass
class Tally:
    flagged: int = 0  # flags sent
    already: int = 0  # tasks that carried the flag already
    gone: int = 0  # tasks deleted meanwhile


class Backoff:
    def __init__(self, first_s: float, max_s: float) -> None:
        self.first_s, self.max_s, self.delay_s = first_s, max_s, first_s

    def next(self) -> float:
        delay, self.delay_s = self.delay_s, min(self.delay_s * 2, self.max_s)
        return delay

    def reset(self) -> None:
        self.delay_s = self.first_s


class Bridge:
    """Flags the tasks of one project for the alerts of `subscribe()` and the groups of
    `source`, until stopped."""

    def __init__(
        self,
        server: Server,
        source: Source,
        socket_path: Path | None = None,
        splits: Mapping[str, str | bytes | PathLike] | None = None,
    ) -> None:
        self.server = server
        self.source = source
        self.socket_path = socket_path
        self.splits = splits or {}
        self.inbox: queue.Queue[Alert] = queue.Queue()
        self.held: deque[Alert] = deque()  # to do, in order
        # Alerts whose tasks are not imported yet: path -> (alert, since when).
        self.waiting: OrderedDict[str, tuple[Alert, float]] = OrderedDict()
        self.wait_backoff = Backoff(WAIT_FIRST_S, WAIT_MAX_S)
        self.wait_until = 0.0
        self.tasks: TaskMap | None = None
        self.tasks_read_at = 0.0
        self.tally = Tally()

    # Starting

    def connect(self) -> None:
        """Check the token and the project, waiting for a server that does not answer yet;
        raises Refused at once for a wrong token or project."""
        backoff = Backoff(RETRY_FIRST_S, RETRY_MAX_S)
        while True:
            try:
                who = self.server.check()
                break
            except Unreachable as error:
                delay = backoff.next()
                log.warning("%s; trying again in %.1f s", error, delay)
                time.sleep(delay)
        log.info("flagging duplicates in Label Studio as %s", who)

    # One pass: --sync

    def catch_up(self) -> Tally:
        """Flag every group of the index whose tasks are not flagged yet; returns what it did
        (`already`: tasks of the groups that carried a flag before)."""
        flagged_before, gone_before = self.tally.flagged, self.tally.gone
        tasks = self.read_tasks()
        already = 0
        for group in self.source.groups():
            already += len(flagged_tasks(group, tasks))
            for flag in group_flags(group, tasks, self.splits, self.source.relation):
                self.send(flag)
        return Tally(self.tally.flagged - flagged_before, already, self.tally.gone - gone_before)

    # Following the alert stream

    def run(self) -> None:
        """Follow the alerts forever (catching up at each (re)connection to the service)."""
        assert self.socket_path is not None
        threading.Thread(target=self._follow, name="dupwatch-alerts", daemon=True).start()
        backoff = Backoff(RETRY_FIRST_S, RETRY_MAX_S)
        while True:
            # Held alerts (the server was away) are tried again at once, after the pause.
            self._take(timeout_s=0 if self.held else self._next_wake())
            try:
                self._work()
            except Unreachable as error:
                delay = backoff.next()
                waiting = len(self.held) + len(self.waiting)
                log.warning("%s; %d alerts wait; trying again in %.1f s", error, waiting, delay)
                self._take(timeout_s=delay)
                continue
            backoff.reset()

    def _take(self, timeout_s: float | None) -> None:
        """Move what arrived into `held`, waiting up to `timeout_s` for the first."""
        try:
            self._hold(self.inbox.get(timeout=timeout_s))
            while True:
                self._hold(self.inbox.get_nowait())
        except queue.Empty:
            pass

    def _hold(self, alert: Alert) -> None:
        if alert is CATCH_UP or alert.get("event") == "missed":
            if CATCH_UP not in self.held:
                self.held.append(CATCH_UP)
        elif len(self.held) >= MAX_HELD:
            if CATCH_UP not in self.held:
                log.warning("more than %d alerts wait: a catch-up will cover them", MAX_HELD)
                self.held.append(CATCH_UP)
        else:
            self.held.append(alert)

    def _work(self) -> None:
        """Everything held, in order, then the waiting alerts when due; an Unreachable
        leaves the one in hand at the head of `held`."""
        while self.held:
            alert = self.held[0]
            if alert is CATCH_UP:
                try:
                    done = self.catch_up()
                    log.info("caught up: %d tasks flagged, %d before", done.flagged, done.already)
                except Unreachable:
                    raise
                except DupwatchError as error:  # the service went away: it catches up again
                    log.warning("could not catch up: %s", error)
            else:
                self._on_alert(alert)
            self.held.popleft()
        if self.waiting and time.monotonic() >= self.wait_until:
            self._retry_waiting()

    def _on_alert(self, alert: Alert, *, since: float | None = None) -> None:
        now = time.monotonic()
        wait = since is None or now - since < WAIT_FOR_MATCHES_S
        tasks = self.read_tasks(fresh=False)
        found = alert_flag(alert, tasks, wait=wait)
        if isinstance(found, Waiting) and now - self.tasks_read_at >= REFRESH_MIN_S:
            found = alert_flag(alert, self.read_tasks(), wait=wait)  # imported meanwhile?
        path = str(alert.get("path"))
        if isinstance(found, Waiting):
            if since is None and path not in self.waiting:
                log.info("%s: no task yet (storage not synced?); waiting for it", found.path)
                self.wait_backoff.reset()
                self.wait_until = now + self.wait_backoff.next()
            self.waiting[path] = (alert, since if since is not None else now)
            return
        self.waiting.pop(path, None)
        if found is not None:
            self.send(found)

    def _retry_waiting(self) -> None:
        self.read_tasks()
        for alert, since in list(self.waiting.values()):
            self._on_alert(alert, since=since)
        self.wait_until = time.monotonic() + self.wait_backoff.next()

    def _next_wake(self) -> float | None:
        if not self.waiting:
            return None
        return max(0.0, self.wait_until - time.monotonic())

    def _follow(self) -> None:
        """Thread: the alert stream into the inbox, a catch-up first at each connection."""
        assert self.socket_path is not None
        backoff = Backoff(RETRY_FIRST_S, RETRY_MAX_S)
        last_problem = None
        while True:
            try:
                with Client(self.socket_path, timeout_s=SUBSCRIBE_TIMEOUT_S) as client:
                    alerts = client.subscribe()
                    # Subscribed: what the stream missed meanwhile is in the index's groups.
                    self.inbox.put(CATCH_UP)
                    if last_problem is not None:
                        log.info("following the alerts of %s again", self.socket_path)
                    last_problem = None
                    backoff.reset()
                    for alert in alerts:
                        self.inbox.put(alert)
                problem = "the service closed the alert stream"
            except (DupwatchError, OSError) as error:
                problem = str(error)
            if problem != last_problem:
                log.warning("%s; reconnecting", problem)
                last_problem = problem
            time.sleep(backoff.next())

    # The server

    def read_tasks(self, *, fresh: bool = True) -> TaskMap:
        if fresh or self.tasks is None:
            folders = self.server.storage_folders()
            self.tasks = TaskMap(self.server.tasks(), folders)
            self.tasks_read_at = time.monotonic()
        return self.tasks

    def send(self, flag: Flag) -> None:
        try:
            sent = self.server.set_flag(flag.task.id, flag.text)
        except TaskGone:
            self.tally.gone += 1
            return
        if sent:
            self.tally.flagged += 1
            log.info("flagged task %d (%s): %s", flag.task.id, flag.path, flag.text)
        else:
            self.tally.already += 1
