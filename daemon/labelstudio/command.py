"""`dupwatch labelstudio`: its options, and running the bridge or `--sync` with them.

Kept apart from the CLI's parser so that the command is wired in with two lines; the SDK is
imported only when the command runs (it is the optional extra dupwatch[labelstudio]).
"""

from __future__ import annotations

import argparse
import logging
import sys

from dupwatch.daemon.config import Config, check_project, check_server_url
from dupwatch.daemon.labelstudio.settings import read_token
from dupwatch.index.errors import DupwatchError

HELP = "flag each duplicate's task in a Label Studio project"
EXTRA_HINT = "pip install 'dupwatch[labelstudio]'"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", type=_url, help="the Label Studio server, e.g. http://localhost:8080"
    )
    parser.add_argument("--project", type=_project, metavar="ID", help="the project's id")
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        help="a file holding the API token (else env DUPWATCH_LABELSTUDIO_TOKEN or "
        "LABEL_STUDIO_API_KEY, or token_file in the config)",
    )
    parser.add_argument(
        "--token", help="the API token itself, for trying by hand (other users see it in ps)"
    )
    parser.add_argument(
        "--sync", action="store_true", help="flag every duplicate group once, then exit"
    )


def _url(text: str) -> str:
    try:
        return check_server_url(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("url: ")) from None


def _project(text: str) -> int:
    try:
        return check_project(int(text))
    except ValueError as error:
        message = str(error) if text.lstrip("-").isdigit() else f"not a whole number: {text!r}"
        raise argparse.ArgumentTypeError(message.removeprefix("project must be ")) from None


def run(args: argparse.Namespace, config: Config, index_path: str) -> int:
    """The bridge until stopped, or with --sync one pass (exit 0 when a task is flagged)."""
    settings = config.labelstudio
    url = args.url or settings.url
    project = args.project or settings.project
    if not url or not project:
        raise DupwatchError(
            "which Label Studio? give --url and --project (or url and project under "
            "[labelstudio] in the config file)"
        )
    token = read_token(token=args.token, token_file=args.token_file, config=settings)
    try:
        from dupwatch.daemon.labelstudio.api import Server
        from dupwatch.daemon.labelstudio.bridge import Bridge
        from dupwatch.daemon.labelstudio.source import ServiceSource, open_source
    except ImportError as error:
        raise DupwatchError(
            f"the Label Studio bridge needs its extra: {EXTRA_HINT} ({error})"
        ) from None
    logging.getLogger("dupwatch.daemon.labelstudio").setLevel(config.log_level)
    server = Server(url, token, project)
    splits = config.splits
    if args.sync:
        print(f"dupwatch: {server.check()}", file=sys.stderr)
        source = open_source(config.socket_path, index_path, config.radius)
        done = Bridge(server, source, splits=splits).catch_up()
        print(
            f"dupwatch: {done.flagged} tasks flagged, {done.already} flagged already"
            + (f", {done.gone} deleted meanwhile" if done.gone else ""),
            file=sys.stderr,
        )
        return 0 if done.flagged or done.already else 1
    source = ServiceSource(config.socket_path, config.radius)
    bridge = Bridge(server, source, socket_path=config.socket_path, splits=splits)
    bridge.connect()
    bridge.run()
    return 0
