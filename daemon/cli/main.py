"""The `dupwatch` command line: the argument parser, and which module runs each command.

Exit status, like grep: 0 when duplicates were found, 1 when none were, 2 on an
error (a message on stderr that names the file and the cause).

Loads no numpy, Pillow or LMDB by itself: a command's module is imported once the command is
known (HANDLERS), so `--help` and the commands that only talk to the service start quickly.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from importlib import import_module

from dupwatch.daemon.cli import options
from dupwatch.daemon.cli.helptext import EXAMPLES, HelpFormatter, VersionAction
from dupwatch.daemon.cli.settings import EXIT_ERROR
from dupwatch.daemon.config import load_config
from dupwatch.daemon.labelstudio import command as labelstudio_command
from dupwatch.daemon.render import FORMATS
from dupwatch.index.errors import DupwatchError
from dupwatch.index.groups import DEFAULT_KEEP, KEEP_POLICIES
from dupwatch.index.matches import DEFAULT_RADIUS, MAX_RADIUS

log = logging.getLogger("dupwatch")

# command -> "module:function" (in dupwatch.daemon) that runs it with the parsed arguments.
HANDLERS = {
    "scan": "cli.commands:scan",
    "query": "cli.query:query",
    "groups": "cli.commands:groups",
    "report": "cli.commands:report",
    "dedupe": "cli.commands:dedupe",
    "undo": "cli.commands:undo",
    "ignore": "cli.commands:ignore",
    "compare": "cli.commands:compare",
    "check": "cli.commands:check",
    "reindex": "cli.commands:reindex",
    "daemon": "cli.remote:daemon",
    "alerts": "cli.alerts:alerts",
    "status": "cli.status:status",
    "watch": "cli.remote:watch",
    "unwatch": "cli.remote:watch",
    "notify": "cli.remote:notify",
    "labelstudio": "cli.remote:labelstudio",
    "service": "cli.units:service_command",
}


def handler(name: str) -> Callable[[argparse.Namespace], int]:
    module, function = name.split(":")
    return getattr(import_module(f"dupwatch.daemon.{module}"), function)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):
        # A bare `dupwatch`: the help, not an error about a missing command. Exit 2 all the
        # same, as for any call that did nothing: 0 would read as "duplicates found".
        parser.print_help()
        return EXIT_ERROR
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="dupwatch: %(message)s")
    # A Python or Pillow warning never reaches the terminal: what one says about a file is in
    # that file's notes (Fingerprint.notes); any other goes nowhere.
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.ERROR)
    try:
        args.config_values = load_config(args.config)
        return handler(args.handler)(args)
    except DupwatchError as error:
        print(f"dupwatch: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`dupwatch groups | head`): not worth a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR


def common_options(default: object) -> argparse.ArgumentParser:
    """--index, --socket and --config, accepted before and after the command name."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--index", metavar="PATH", default=default, help="index folder (env DUPWATCH_INDEX)"
    )
    common.add_argument(
        "--socket", metavar="PATH", default=default, help="service socket (env DUPWATCH_SOCKET)"
    )
    common.add_argument("--config", metavar="FILE", default=default, help="config file (TOML)")
    return common


def build_parser() -> argparse.ArgumentParser:
    # After the command name the options must not reset what was given before it.
    common = common_options(argparse.SUPPRESS)
    matching = argparse.ArgumentParser(add_help=False)
    matching.add_argument(
        "--radius",
        type=options.radius,
        metavar="N",
        help=f"largest Hamming distance (of 64 bits) to match, 0 to {MAX_RADIUS} (default: "
        f"the config's radius, else {DEFAULT_RADIUS})",
    )
    matching.add_argument(
        "--transforms",
        type=options.transforms,
        metavar="LIST",
        help="also match copies turned, mirrored or cropped: any of rotate,flip,crop",
    )
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="print JSON")
    grouping = grouping_options()
    # The commands that export groups print one format: --json, --csv and --format exclude
    # each other.
    exports = argparse.ArgumentParser(add_help=False)
    one_format = exports.add_mutually_exclusive_group()
    one_format.add_argument("--json", action="store_true", help="print JSON")
    one_format.add_argument("--csv", action="store_true", help="print CSV, one row per file")
    one_format.add_argument("--format", choices=FORMATS, help="text, json, csv or imagededup")

    parser = argparse.ArgumentParser(
        prog="dupwatch",
        description="Catch duplicate and near-duplicate images the moment they land.",
        parents=[common_options(None)],
        epilog=EXAMPLES[""],
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action=VersionAction)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, *parents: argparse.ArgumentParser):
        sub = commands.add_parser(
            name,
            help=help,
            description=help,
            parents=[common, *parents],
            epilog=EXAMPLES.get(name),
            formatter_class=HelpFormatter,
        )
        sub.set_defaults(handler=HANDLERS[name])
        return sub

    scan = command(
        "scan",
        "index folders (incrementally) and print duplicate groups",
        matching,
        grouping,
        exports,
    )
    scan.add_argument("folders", nargs="+", metavar="DIR")
    scan.add_argument(
        "--workers", type=options.workers, metavar="N", help="hashing processes (default: cores)"
    )
    add_cluster_option(scan)
    add_progress_option(scan)

    query = command("query", "what in the index duplicates these images", matching, output)
    query.add_argument("images", nargs="+", metavar="IMG")

    groups = command(
        "groups",
        "every duplicate group in the index, with the copy to keep",
        matching,
        grouping,
        exports,
    )
    groups.add_argument(
        "folders", nargs="*", type=options.folder, metavar="DIR", help="only groups touching these"
    )
    add_cluster_option(groups, "find the pairs at a larger --radius")
    add_review_commands(command, matching, output, grouping)
    compare = command(
        "compare", "how two images compare under each hash; calibrate --radius",
        matching, output,
    )  # fmt: skip
    compare.add_argument("images", nargs=2, metavar="IMG")
    check = command("check", "verify the index's consistency", output)
    check.add_argument(
        "--repair", action="store_true", help="rebuild the derived tables from the file records"
    )
    add_cluster_option(check, "find the pairs again for --repair")
    reindex = command("reindex", "hash every indexed file again (new hash version)", matching)
    reindex.add_argument("--workers", type=options.workers, metavar="N", help="hashing processes")
    add_cluster_option(reindex)
    add_progress_option(reindex)
    daemon = command("daemon", "run the service in the foreground", matching)
    daemon.add_argument("folders", nargs="*", metavar="DIR", help="folders to watch (remembered)")
    command("alerts", "follow the live alert stream of the service", output)
    command("status", "the service: folders, files indexed, queue, last alerts", output)
    for name, verb in (("watch", "add"), ("unwatch", "remove")):
        change = command(name, f"{verb} a watched folder (remembered)", output)
        change.add_argument("folder", metavar="DIR")
    command("notify", "show each duplicate as a desktop notification")
    labelstudio = command("labelstudio", labelstudio_command.HELP)
    labelstudio_command.add_arguments(labelstudio)
    service = command("service", "install or remove the systemd user units")
    service.add_argument("action", choices=("install", "uninstall"))
    service.add_argument(
        "--force", action="store_true", help="replace unit files dupwatch did not write"
    )
    return parser


def add_cluster_option(parser: argparse.ArgumentParser, work: str | None = None) -> None:
    """--cluster: hash (or do `work`) on the workers of a Dask cluster."""
    if work is None:
        what = (
            "hash on the workers of this Dask cluster, e.g. tcp://scheduler:8786 (default: "
            "the config's cluster, else processes here; needs dupwatch[dask] and the folders "
            "at the same path on every worker; a larger --radius finds its pairs there too)"
        )
    else:
        what = (
            f"{work} on the workers of this Dask cluster, e.g. tcp://scheduler:8786 "
            "(default: the config's cluster, else here; needs dupwatch[dask])"
        )
    parser.add_argument("--cluster", type=options.cluster, metavar="ADDRESS", help=what)


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="show progress on stderr (default: on a terminal only; without one, a line "
        "every few seconds)",
    )


def grouping_options() -> argparse.ArgumentParser:
    """--across, --keep and --prefer: which groups, and which copy each one keeps."""
    grouping = argparse.ArgumentParser(add_help=False)
    grouping.add_argument(
        "--across",
        action="store_true",
        help="only duplicates between different DIRs (or the config's splits): leakage",
    )
    grouping.add_argument(
        "--keep",
        choices=KEEP_POLICIES,
        default=DEFAULT_KEEP,
        help="which copy to keep: a labelled one (a label file, or in a split), then the "
        "largest; or the largest, newest, oldest, or shortest path (default: %(default)s)",
    )
    grouping.add_argument(
        "--prefer",
        action="append",
        default=[],
        type=options.existing,
        metavar="DIR",
        help="keep the copy in DIR (repeatable)",
    )
    return grouping


def add_review_commands(
    command: Callable[..., argparse.ArgumentParser],
    matching: argparse.ArgumentParser,
    output: argparse.ArgumentParser,
    grouping: argparse.ArgumentParser,
) -> None:
    """report, dedupe, undo and ignore."""
    sidecar = argparse.ArgumentParser(add_help=False)
    sidecar.add_argument(
        "--sidecar",
        action="append",
        type=options.sidecar,
        metavar="PATTERN",
        help="label file of an image, e.g. '{stem}.txt' (repeatable; default: "
        ".txt, .xml, .json beside it and the YOLO labels/ folder)",
    )
    report = command(
        "report",
        "write one HTML page showing every duplicate group",
        matching,
        grouping,
        sidecar,
    )
    report.add_argument(
        "folders", nargs="*", type=options.folder, metavar="DIR", help="only groups touching these"
    )
    report.add_argument(
        "--out",
        metavar="FILE",
        help="where the page goes (default: $XDG_CACHE_HOME/dupwatch/report.html)",
    )
    add_progress_option(report)
    report.add_argument("--open", action="store_true", help="open it in the web browser")
    dedupe = command(
        "dedupe",
        "move every copy but the keeper to a quarantine folder",
        matching,
        output,
        grouping,
        sidecar,
    )
    dedupe.add_argument(
        "folders", nargs="*", type=options.folder, metavar="DIR", help="only groups touching these"
    )
    dedupe.add_argument("--to", required=True, metavar="QUARANTINE", help="where copies go")
    dedupe.add_argument("--dry-run", action="store_true", help="print the moves, move nothing")
    undo = command("undo", "put back what a dedupe moved", output)
    undo.add_argument("manifest", metavar="MANIFEST")
    ignore = command("ignore", "remember that images are not duplicates", output)
    ignore.add_argument("images", nargs="*", metavar="IMG")
    ignore.add_argument("--group", metavar="IMG", help="every image of the group holding IMG")
    ignore.add_argument("--list", action="store_true", help="list the ignored pairs")
    ignore.add_argument("--remove", action="store_true", help="forget the pairs among IMG...")


if __name__ == "__main__":
    sys.exit(main())
