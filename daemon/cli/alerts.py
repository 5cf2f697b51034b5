"""`dupwatch alerts`: the service's alerts as they come, in plain text or JSON.

In plain text a train/val leak comes first and stands out (a LEAK line), and a burst (a
folder of copies dropped in) folds into a summary line, as `dupwatch notify` folds it into one
notification (the same rules: desktop/bursts.py). `--json` prints every event, unfolded.
"""

from __future__ import annotations

import argparse
import queue
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from dupwatch.daemon.cli.settings import EXIT_ERROR, settings
from dupwatch.daemon.desktop.bursts import BURST_AFTER, BURST_WINDOW_S, Burst, Runs
from dupwatch.daemon.render import dumps, match_line, printable
from dupwatch.daemon.wire.client import Client

Event = dict[str, Any]

# A burst that goes on is summed up this often, so that a long copy shows it is alive.
SUMMARY_EVERY_S = 10.0


def alerts(args: argparse.Namespace) -> int:
    return follow_alerts(settings(args).socket_path, as_json=args.json)


def follow_alerts(socket_path: Path, *, as_json: bool) -> int:
    """Print each alert as it comes, until the service stops."""
    with Client(socket_path, timeout_s=10) as client:
        events = client.subscribe()
        if as_json:
            for event in events:
                print(dumps(event), flush=True)
        else:
            print(f"dupwatch: following the alerts of {socket_path}", file=sys.stderr)
            printer = AlertPrinter()
            try:
                printer.follow(events)
            finally:
                printer.flush()
    print("dupwatch: the service stopped", file=sys.stderr)
    return EXIT_ERROR


def alert_lines(event: Event) -> list[str]:
    """An alert in plain text: a LEAK line for each match in another split (the alert that
    matters most when labelling), the time and the new file, then one line per match."""
    lines = leak_lines(event)
    lines.append(f"{when(event)}  {printable(event['path'])}")
    lines += [match_line(m) for m in event.get("matches", [])]
    return lines


def leak_lines(event: Event) -> list[str]:
    """ "LEAK  val/x.jpg duplicates train/y.jpg" for each leak of an alert (none unless the
    config names splits)."""
    return [f"LEAK  {leak.removeprefix('leak: ')}" for leak in event.get("leaks", [])]


def when(event: Event) -> str:
    """The event's time as "2026-11-23 00:32:50"."""
    return str(event.get("time", ""))[:19].replace("T", " ")


class AlertPrinter:
    """Prints alerts in plain text, folding bursts: past `burst_after` alerts in a run (each
    within `window_s` of the one before), the others are counted, not printed, and summed up
    in one line when the run ends (or every SUMMARY_EVERY_S while it goes on). A leak is
    never folded."""

    def __init__(
        self,
        out: IO[str] | None = None,
        *,
        burst_after: int = BURST_AFTER,
        window_s: float = BURST_WINDOW_S,
    ) -> None:
        self.out = out or sys.stdout
        self.burst_after = burst_after
        self.window_s = window_s
        self.runs = Runs(window_s=window_s)
        self.burst: Burst | None = None
        self.burst_started = 0.0
        self.last_time = ""

    def follow(self, events: Iterator[Event]) -> None:
        """Print `events` until they end; a folded burst is summed up once no alert has come
        for `window_s`, so the reading happens in a thread that can be waited on."""
        inbox: queue.Queue[Event | BaseException | None] = queue.Queue()

        def read() -> None:
            try:
                for event in events:
                    inbox.put(event)
                inbox.put(None)
            except BaseException as error:  # handed to the printing thread, raised there
                inbox.put(error)

        threading.Thread(target=read, name="dupwatch-alerts", daemon=True).start()
        while True:
            try:
                item = inbox.get(timeout=self.wait_s(time.monotonic()))
            except queue.Empty:
                self.flush()
                continue
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            self.show(item, time.monotonic())

    def show(self, event: Event, now: float) -> None:
        if event.get("event") == "missed":
            self.flush()
            count = event.get("count", 0)
            print(f"dupwatch: {count} alerts missed (not read in time)", file=sys.stderr)
            return
        if event.get("event") != "duplicate":
            return
        position = self.runs.observe(now)
        if position == 1:
            self.flush()  # a new run: the last one's summary first
        if position <= self.burst_after or event.get("leaks"):
            self._print(alert_lines(event))
            return
        if self.burst is None:
            self.burst, self.burst_started = Burst(), now
        self.burst.add(event)
        self.last_time = when(event)
        if now - self.burst_started >= SUMMARY_EVERY_S:
            self.flush()

    def wait_s(self, now: float) -> float | None:
        """How long to wait for the next alert before the folded ones are due (None: as long
        as it takes)."""
        if self.burst is None or self.runs.last is None:
            return None
        due = min(self.runs.last + self.window_s, self.burst_started + SUMMARY_EVERY_S)
        return max(0.0, due - now)

    def flush(self) -> None:
        """Print the summary of the alerts folded since the last one, if any."""
        burst, self.burst = self.burst, None
        if burst is None or not burst.count:
            return
        noun = "duplicate" if burst.count == 1 else "duplicates"
        folder = printable(burst.folder or "several folders")
        self._print([f"{self.last_time}  {burst.count} more {noun} in {folder}: {burst.counts()}"])

    def _print(self, lines: list[str]) -> None:
        print("\n".join(lines), file=self.out, flush=True)
