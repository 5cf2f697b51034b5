"""The commands that talk to the running service: watch, unwatch, notify, a query it
answers; and `daemon`, which runs it (alerts.py and status.py are the other two).

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
from dupwatch.daemon.render import dumps, printable, show_query
from dupwatch.daemon.wire.client import Client, DaemonNotRunning
from dupwatch.index.errors import DupwatchError, FingerprintError
from dupwatch.index.folders import absolute


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
    images: Iterable[str | bytes],
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
    client: Client, images: Iterable[str | bytes], *, radius: int | None, as_json: bool
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
