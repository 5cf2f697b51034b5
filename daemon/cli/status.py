"""`dupwatch status`: what the running service says about itself, or, when it is not
running, a summary read from the index (files, groups, folders, the files that failed).

Exit status: 0 when the service answers, 1 when it is not running (the index's summary is
printed all the same), 2 on an error.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from dupwatch.daemon.cli.alerts import alert_lines, leak_lines, when
from dupwatch.daemon.cli.settings import EXIT_FOUND, EXIT_NONE, index_path, settings
from dupwatch.daemon.render import dumps, printable
from dupwatch.daemon.wire.client import Client, DaemonNotRunning

SHOWN_FAILURES = 5  # the last files that failed, with their reason
# Past this many stored pairs the groups are not counted for `status` (it would take seconds:
# 3,000 copies of one blank frame are 4.5 million pairs); `dupwatch groups` lists them.
COUNT_GROUPS_UP_TO = 200_000


def status(args: argparse.Namespace) -> int:
    return show_status(settings(args).socket_path, index_path(args), as_json=args.json)


def show_status(socket_path: Path, index_path: str, *, as_json: bool) -> int:
    try:
        status = Client(socket_path).call("status")
    except DaemonNotRunning as error:
        summary = offline_status(index_path, error)
        print(dumps(summary) if as_json else "\n".join(offline_lines(summary)))
        return EXIT_NONE
    status.pop("v", None)
    status.pop("ok", None)
    print(dumps(status) if as_json else "\n".join(status_lines(status)))
    return EXIT_FOUND


def status_lines(status: dict[str, Any]) -> list[str]:
    """The running service: leaks first, then its index, counts, folders, failures and the
    last alerts."""
    lines = [f"dupwatch service, pid {status['pid']}: {status['state']}, up {_duration(status)}"]
    lines += status_leak_lines(status)
    leaks = status.get("leaks", 0)
    lines += [
        f"index    {printable(status['index'])} "
        f"({status['files']} files, radius {status['radius']})",
        f"queue    {status['queue']}",
        f"files    {status['hashed']} hashed, {status['failed']} failed, "
        f"{status['moved']} moved, {status['removed']} removed, {status['alerts']} alerts"
        + (f" ({leaks} {'leak' if leaks == 1 else 'leaks'})" if leaks else ""),
    ]
    lines += [f"watching {printable(root)}" for root in status["roots"]] or ["watching nothing"]
    lines += [f"missing  {printable(root)}" for root in status.get("missing_roots", [])]
    rescanned = status.get("rescanned_folders", len(status.get("unwatched", [])))
    if rescanned:
        every = status.get("rescan_interval_s", 30)
        lines.append(
            f"rescanned {rescanned} folders every {every:g} s instead of watched "
            "(past the inotify watch limit)"
        )
    lines += failure_lines(status.get("last_failures", []), status["failed"])
    for alert in status.get("last_alerts", []):
        lines += alert_lines(alert)
    return lines


def status_leak_lines(status: dict[str, Any]) -> list[str]:
    """First in `status`: how many new files duplicate a file of another split (a train/val
    leak), and the last of them."""
    count = status.get("leaks", 0)
    if not count:
        return []
    files = "file duplicates" if count == 1 else "files duplicate"
    lines = [f"LEAKS    {count} new {files} a file in another split; the last:"]
    for event in status.get("last_leaks", []):
        lines += [f"{line}  ({when(event)})" for line in leak_lines(event)]
    return lines


def failure_lines(last: list[str], count: int) -> list[str]:
    """ "failed   PATH: reason" for the last files that failed, and how many more did."""
    lines = [f"failed   {printable(failure)}" for failure in last]
    if count > len(last):
        lines.append(f"failed   ... {count - len(last)} more before these")
    return lines


def offline_status(index_path: str, error: DaemonNotRunning) -> dict[str, Any]:
    """The index's summary, read while the service is not running: `status --json` then."""
    from dupwatch.index.index import Index

    summary: dict[str, Any] = {
        "state": "not_running",
        "socket": error.socket_path,
        "why": error.cause,
        "index": index_path,
    }
    if not os.path.exists(os.path.join(index_path, "data.mdb")):
        return {**summary, "files": 0, "groups": 0, "roots": [], "failed": 0, "last_failures": []}
    with Index.open(index_path, readonly=True) as index:
        failures = sorted(index.failures(), key=lambda f: f.mtime_ns)
        return {
            **summary,
            "files": len(index),
            "groups": len(index.groups()) if index.pair_count() <= COUNT_GROUPS_UP_TO else None,
            "roots": [os.fsdecode(root) for root in index.roots()],
            "failed": len(failures),
            "last_failures": [
                f"{os.fsdecode(f.path)}: {f.reason}" for f in failures[-SHOWN_FAILURES:]
            ],
        }


def offline_lines(summary: dict[str, Any]) -> list[str]:
    lines = [
        f"dupwatch service: not running ({summary['socket']}: {summary['why']}); "
        "start it with `dupwatch daemon` or `systemctl --user start dupwatch`"
    ]
    index = printable(summary["index"])
    if not os.path.exists(os.path.join(summary["index"], "data.mdb")):
        return [
            *lines,
            f"index    {index}: none yet (run `dupwatch scan DIR` or `dupwatch daemon DIR`)",
        ]
    groups = summary["groups"]
    counted = "not counted here (many pairs): see `dupwatch groups`" if groups is None else groups
    lines.append(f"index    {index} ({summary['files']} files, duplicate groups: {counted})")
    lines += [f"folders  {printable(root)}" for root in summary["roots"]] or [
        "folders  none watched"
    ]
    return lines + failure_lines(summary["last_failures"], summary["failed"])


def _duration(status: dict[str, Any]) -> str:
    seconds = int(status.get("uptime_s", 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
