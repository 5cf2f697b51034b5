"""The commands that talk to the running service: alerts, status, watch, unwatch, notify, a
query it answers; and `daemon`, which runs it.

Light on purpose (no numpy, Pillow or LMDB unless the service is not there to ask): these
commands start quickly. Each returns the exit status of its command (0 found/done, 1 none,
2 error) and prints what the user sees.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dupwatch.daemon.cli import settings as cli_settings
from dupwatch.daemon.cli.settings import EXIT_ERROR, EXIT_FOUND, EXIT_NONE, settings
from dupwatch.daemon.render import dumps, match_line, printable, show_query
from dupwatch.daemon.wire.client import Client, DaemonNotRunning
from dupwatch.index.errors import DupwatchError, FingerprintError
from dupwatch.index.folders import absolute


def follow_alerts(socket_path: Path, *, as_json: bool) -> int:
    """`dupwatch alerts`: print each alert as it comes, until the service stops."""
    with Client(socket_path, timeout_s=10) as client:
        events = client.subscribe()
        if not as_json:
            print(f"dupwatch: following the alerts of {socket_path}", file=sys.stderr)
        for event in events:
            if as_json:
                print(dumps(event), flush=True)
            elif event.get("event") == "missed":
                print(
                    f"dupwatch: {event['count']} alerts missed (not read in time)", file=sys.stderr
                )
            else:
                print("\n".join(alert_lines(event)), flush=True)
    print("dupwatch: the service stopped", file=sys.stderr)
    return EXIT_ERROR


def alert_lines(event: dict[str, Any]) -> list[str]:
    """An alert in plain text: the time and the new file, then one line per match."""
    when = str(event.get("time", ""))[:19].replace("T", " ")
    lines = [f"{when}  {printable(event['path'])}"]
    lines += [match_line(m) for m in event.get("matches", [])]
    return lines


def show_status(socket_path: Path, *, as_json: bool) -> int:
    """`dupwatch status`: the service's folders, counts and last alerts."""
    status = Client(socket_path).call("status")
    status.pop("v", None)
    status.pop("ok", None)
    if as_json:
        print(dumps(status))
        return EXIT_FOUND
    print("\n".join(status_lines(status)))
    return EXIT_FOUND


def status_lines(status: dict[str, Any]) -> list[str]:
    lines = [
        f"dupwatch service, pid {status['pid']}: {status['state']}, up {_duration(status)}",
        f"index    {printable(status['index'])} "
        f"({status['files']} files, radius {status['radius']})",
        f"queue    {status['queue']}",
        f"files    {status['hashed']} hashed, {status['failed']} failed, "
        f"{status['moved']} moved, {status['removed']} removed, {status['alerts']} alerts",
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
    for alert in status.get("last_alerts", []):
        lines += alert_lines(alert)
    return lines


def _duration(status: dict[str, Any]) -> str:
    seconds = int(status.get("uptime_s", 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def change_roots(
    socket_path: Path, index_path: str, folder: str, *, add: bool, as_json: bool
) -> int:
    """`dupwatch watch/unwatch DIR`: through the service, else straight into the index."""
    op = "watch" if add else "unwatch"
    path = os.path.abspath(folder)
    if add and not os.path.isdir(path):
        raise DupwatchError(f"{printable(path)}: not a folder")
    try:
        answer = Client(socket_path).call(op, path=path)
        roots = answer["roots"]
        note = "" if not add else "; indexing it in the background"
    except DaemonNotRunning:
        from dupwatch.index.index import Index

        with Index.open(index_path) as index:
            changed = index.add_root(path) if add else index.remove_root(path)
            roots = [os.fsdecode(r) for r in index.roots()]
        if not add and not changed:
            print(f"dupwatch: {printable(path)}: not a watched folder", file=sys.stderr)
            return EXIT_ERROR
        note = "; the service is not running: start it with `dupwatch daemon`"
    if as_json:
        print(dumps({op: path, "roots": roots}))
    else:
        verb = "watching" if add else "no longer watching"
        print(f"{verb} {printable(path)}{note}")
    return EXIT_FOUND


def query_via_service(
    socket_path: Path,
    images: Iterable[str],
    *,
    radius: int | None,
    as_json: bool,
    index_path: str | None = None,
) -> int | None:
    """`dupwatch query` through the running service; None when there is no service (or it
    serves another index than `index_path`), so that the caller reads the index itself."""
    try:
        client = Client(socket_path)
        served = client.call("status")["index"]
    except DaemonNotRunning:
        return None
    if index_path is not None and not _same_folder(served, index_path):
        client.close()
        return None
    with client:
        return _print_queries(client, images, radius=radius, as_json=as_json)


def _print_queries(
    client: Client, images: Iterable[str], *, radius: int | None, as_json: bool
) -> int:
    found = failed = False
    for image in images:
        args: dict[str, Any] = {"path": os.fsdecode(absolute(image))}
        if radius is not None:
            args["radius"] = radius
        try:
            matches = client.call("query", **args)["matches"]
        except FingerprintError as error:
            print(f"dupwatch: {printable(error.path)}: {error.reason}", file=sys.stderr)
            failed = True
            continue
        found = show_query(image, matches, as_json=as_json) or found
    if failed:
        return EXIT_ERROR
    return EXIT_FOUND if found else EXIT_NONE


def _same_folder(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


# The commands (main.HANDLERS)


def daemon(args: argparse.Namespace) -> int:
    from dupwatch.daemon.service.service import run_daemon

    return run_daemon(settings(args), args.folders)


def alerts(args: argparse.Namespace) -> int:
    return follow_alerts(settings(args).socket_path, as_json=args.json)


def status(args: argparse.Namespace) -> int:
    return show_status(settings(args).socket_path, as_json=args.json)


def watch(args: argparse.Namespace) -> int:
    add = args.command == "watch"
    socket_path = settings(args).socket_path
    index = cli_settings.index_path(args)
    return change_roots(socket_path, index, args.folder, add=add, as_json=args.json)


def notify(args: argparse.Namespace) -> int:
    from dupwatch.daemon.desktop.notify import Bridge, alerts_from

    socket_path = settings(args).socket_path
    Bridge(lambda: alerts_from(socket_path)).run()
    return 0


def labelstudio(args: argparse.Namespace) -> int:
    from dupwatch.daemon.labelstudio.command import run

    return run(args, settings(args), cli_settings.index_path(args))
