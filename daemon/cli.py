"""The `dupwatch` command: parse, call the library or the service, print.

Exit status, like grep: 0 when duplicates were found, 1 when none were, 2 on an
error (a message on stderr that names the file and the cause).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from dupwatch.daemon.config import Config, load_config
from dupwatch.daemon.exports import (
    FORMATS,
    emit_groups,
    show_dedupe,
    show_ignored,
    show_newly_ignored,
    show_undo,
    show_unignored,
)
from dupwatch.daemon.render import ProgressBar, dumps, printable, show_query
from dupwatch.daemon.report import open_in_browser, report_summary_line, write_report
from dupwatch.daemon.splits import PairCount, across_splits, pair_counts, select_groups
from dupwatch.index import (
    DupwatchError,
    FingerprintError,
    Group,
    Index,
    StoreError,
    default_index_path,
)
from dupwatch.index.compare import compare
from dupwatch.index.folders import absolute
from dupwatch.index.groups import KEEP_POLICIES
from dupwatch.index.ignore import group_paths, ignore, unignore
from dupwatch.index.ignore import listed as ignored_pairs
from dupwatch.index.index import DEFAULT_RADIUS
from dupwatch.index.limits import bounded
from dupwatch.index.quarantine import dedupe, plan_dedupe, undo
from dupwatch.index.sidecars import DEFAULT_SIDECARS
from dupwatch.index.transforms import parse_transforms

EXIT_FOUND = 0
EXIT_NONE = 1
EXIT_ERROR = 2

log = logging.getLogger("dupwatch")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="dupwatch: %(message)s")
    try:
        args.config_values = load_config(args.config)
        return args.run(args)
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
        "--radius", type=int, metavar="N", help="largest Hamming distance (of 64 bits) to match"
    )
    matching.add_argument(
        "--transforms",
        metavar="LIST",
        help="also match copies turned, mirrored or cropped: any of rotate,flip,crop",
    )
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="print JSON")
    grouping = grouping_options()
    exports = argparse.ArgumentParser(add_help=False)
    exports.add_argument("--csv", action="store_true", help="print CSV, one row per file")
    exports.add_argument("--format", choices=FORMATS, help="text, json, csv or imagededup")

    parser = argparse.ArgumentParser(
        prog="dupwatch",
        description="Catch duplicate and near-duplicate images the moment they land.",
        parents=[common_options(None)],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: Callable[[argparse.Namespace], int], help: str, *parents):
        sub = commands.add_parser(name, help=help, description=help, parents=[common, *parents])
        sub.set_defaults(run=run)
        return sub

    scan = command(
        "scan",
        cmd_scan,
        "index folders (incrementally) and print duplicate groups",
        matching,
        output,
        grouping,
        exports,
    )
    scan.add_argument("folders", nargs="+", metavar="DIR")
    scan.add_argument("--workers", type=int, metavar="N", help="hashing processes (default: cores)")

    query = command(
        "query", cmd_query, "what in the index duplicates these images", matching, output
    )
    query.add_argument("images", nargs="+", metavar="IMG")

    groups = command(
        "groups",
        cmd_groups,
        "every duplicate group in the index, with the copy to keep",
        matching,
        output,
        grouping,
        exports,
    )
    groups.add_argument("folders", nargs="*", metavar="DIR", help="only groups touching these")
    add_review_commands(command, matching, output, grouping)
    compare = command(
        "compare", cmd_compare, "how two images compare under each hash; calibrate --radius",
        matching, output,
    )  # fmt: skip
    compare.add_argument("images", nargs=2, metavar="IMG")
    check = command("check", cmd_check, "verify the index's consistency", output)
    check.add_argument(
        "--repair", action="store_true", help="rebuild the derived tables from the file records"
    )
    reindex = command("reindex", cmd_reindex, "hash every indexed file again (new hash version)")
    reindex.add_argument("--workers", type=int, metavar="N", help="hashing processes")
    daemon = command("daemon", cmd_daemon, "run the service in the foreground", matching)
    daemon.add_argument("folders", nargs="*", metavar="DIR", help="folders to watch (remembered)")
    command("alerts", cmd_alerts, "follow the live alert stream of the service", output)
    command("status", cmd_status, "the service: folders, files indexed, queue, last alerts", output)
    for name, verb in (("watch", "add"), ("unwatch", "remove")):
        change = command(name, cmd_watch, f"{verb} a watched folder (remembered)", output)
        change.add_argument("folder", metavar="DIR")
    command("notify", cmd_notify, "show each duplicate as a desktop notification")
    service = command("service", cmd_service, "install or remove the systemd user units")
    service.add_argument("action", choices=("install", "uninstall"))
    service.add_argument(
        "--force", action="store_true", help="replace unit files dupwatch did not write"
    )
    return parser


def grouping_options() -> argparse.ArgumentParser:
    """--across, --keep and --prefer: which groups, and which copy each one keeps."""
    grouping = argparse.ArgumentParser(add_help=False)
    grouping.add_argument(
        "--across",
        action="store_true",
        help="only duplicates between different DIRs (or the config's splits): leakage",
    )
    grouping.add_argument(
        "--keep", choices=KEEP_POLICIES, default="largest", help="which copy to keep"
    )
    grouping.add_argument(
        "--prefer", action="append", default=[], metavar="DIR", help="keep the copy in DIR"
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
        metavar="PATTERN",
        help="label file of an image, e.g. '{stem}.txt' (repeatable; default: "
        ".txt, .xml, .json beside it and the YOLO labels/ folder)",
    )
    report = command(
        "report",
        cmd_report,
        "write one HTML page showing every duplicate group",
        matching,
        grouping,
        sidecar,
    )
    report.add_argument("folders", nargs="*", metavar="DIR", help="only groups touching these")
    report.add_argument("--out", metavar="FILE", default="dupwatch-report.html")
    report.add_argument("--open", action="store_true", help="open it in the web browser")
    dedupe = command(
        "dedupe",
        cmd_dedupe,
        "move every copy but the keeper to a quarantine folder",
        matching,
        output,
        grouping,
        sidecar,
    )
    dedupe.add_argument("folders", nargs="*", metavar="DIR", help="only groups touching these")
    dedupe.add_argument("--to", required=True, metavar="QUARANTINE", help="where copies go")
    dedupe.add_argument("--dry-run", action="store_true", help="print the moves, move nothing")
    undo = command("undo", cmd_undo, "put back what a dedupe moved", output)
    undo.add_argument("manifest", metavar="MANIFEST")
    ignore = command("ignore", cmd_ignore, "remember that images are not duplicates", output)
    ignore.add_argument("images", nargs="*", metavar="IMG")
    ignore.add_argument("--group", metavar="IMG", help="every image of the group holding IMG")
    ignore.add_argument("--list", action="store_true", help="list the ignored pairs")
    ignore.add_argument("--remove", action="store_true", help="forget the pairs among IMG...")


# Settings shared by the commands


def settings(args: argparse.Namespace) -> Config:
    radius = getattr(args, "radius", None)
    given = getattr(args, "transforms", None)
    transforms = tuple(parse_transforms(given)) if given is not None else None
    return args.config_values.replace(
        index=args.index, socket=args.socket, radius=radius, transforms=transforms
    )


def index_path(args: argparse.Namespace) -> str:
    config = settings(args)
    return os.fspath(config.index) if config.index is not None else default_index_path()


def open_index(args: argparse.Namespace, *, readonly: bool = False) -> Index:
    config = settings(args)
    return Index.open(
        index_path(args), radius=config.radius, readonly=readonly, transforms=config.transforms
    )


def existing_index(args: argparse.Namespace) -> Index:
    """The index, which must exist already; writable when the folder allows it."""
    path = index_path(args)
    if not os.path.exists(os.path.join(path, "data.mdb")):
        raise StoreError(f"{path}: no index here yet (run `dupwatch scan DIR` first)")
    return open_index(args, readonly=not os.access(path, os.W_OK))


def print_failures(failures: list[FingerprintError]) -> None:
    for error in failures:
        print(f"dupwatch: {printable(error.path)}: {error.reason}", file=sys.stderr)


def output_format(args: argparse.Namespace) -> str:
    if getattr(args, "format", None):
        return args.format
    return "json" if args.json else "csv" if getattr(args, "csv", False) else "text"


def chosen_groups(
    index: Index, args: argparse.Namespace, folders: list[bytes]
) -> tuple[list[Group], list[PairCount]]:
    """The groups --across/--keep/--prefer/--radius and the folders select, with the
    across-folders pair counts (empty without --across)."""
    config_splits = args.config_values.splits
    splits = across_splits(args.across, folders, config_splits)
    groups = select_groups(
        index, folders, across=splits, radius=args.radius, keep=args.keep, prefer=args.prefer
    )
    return groups, pair_counts(groups, splits) if splits else []


def sidecar_patterns(args: argparse.Namespace) -> tuple[str, ...]:
    configured = args.config_values.sidecars
    return tuple(args.sidecar or configured or DEFAULT_SIDECARS)


def index_if_any(args: argparse.Namespace) -> Index | None:
    """The index when one exists (undo still works without it)."""
    if not os.path.exists(os.path.join(index_path(args), "data.mdb")):
        return None
    return open_index(args)


# Commands


def cmd_scan(args: argparse.Namespace) -> int:
    folders = [absolute(folder) for folder in args.folders]
    for folder in folders:
        if not os.path.isdir(folder):
            raise DupwatchError(f"{printable(folder)}: not a folder")
    with open_index(args) as index:
        bar = ProgressBar("hashing")
        report = index.update(folders, workers=args.workers, progress=bar)
        bar.finish()
        groups, pairs = chosen_groups(index, args, folders)
    summary = {
        "seen": report.seen,
        "hashed": report.hashed,
        "unchanged": report.unchanged,
        "removed": report.removed,
        "failed": [{"path": e.path, "error": e.reason} for e in report.failed],
        "groups": len(groups),
    }
    emit_groups(groups, output_format(args), pairs=pairs, extra={"summary": summary})
    print_failures(report.failed)
    print(
        f"dupwatch: {report.seen} images: {report.hashed} hashed, {report.unchanged} unchanged, "
        f"{report.removed} gone, {len(report.failed)} unreadable; {len(groups)} duplicate groups",
        file=sys.stderr,
    )
    return EXIT_FOUND if groups else EXIT_NONE


def cmd_query(args: argparse.Namespace) -> int:
    from dupwatch.daemon.remote import query_via_service

    config = settings(args)
    served = query_via_service(
        config.socket_path,
        args.images,
        radius=args.radius,
        as_json=args.json,
        index_path=index_path(args),
    )
    if served is not None:
        return served
    found = False
    failed = False
    with existing_index(args) as index:
        for image in args.images:
            try:
                with bounded(image, config.hash_timeout_s):  # as in the hashing processes
                    matches = index.query(image, args.radius)
            except FingerprintError as error:
                print(f"dupwatch: {printable(error.path)}: {error.reason}", file=sys.stderr)
                failed = True
                continue
            shown = [m.to_json() for m in matches]
            found = show_query(image, shown, as_json=args.json) or found
    if failed:
        return EXIT_ERROR
    return EXIT_FOUND if found else EXIT_NONE


def cmd_compare(args: argparse.Namespace) -> int:
    config = settings(args)
    radius = DEFAULT_RADIUS if config.radius is None else config.radius
    result = compare(*args.images, radius=radius, transforms=config.transforms)
    print(dumps(result.to_json()) if args.json else "\n".join(result.lines()))
    return EXIT_FOUND if result.matches else EXIT_NONE


def cmd_daemon(args: argparse.Namespace) -> int:
    from dupwatch.daemon.service import run_daemon

    return run_daemon(settings(args), args.folders)


def cmd_alerts(args: argparse.Namespace) -> int:
    from dupwatch.daemon.remote import follow_alerts

    return follow_alerts(settings(args).socket_path, as_json=args.json)


def cmd_status(args: argparse.Namespace) -> int:
    from dupwatch.daemon.remote import show_status

    return show_status(settings(args).socket_path, as_json=args.json)


def cmd_watch(args: argparse.Namespace) -> int:
    from dupwatch.daemon.remote import change_roots

    add = args.command == "watch"
    socket_path = settings(args).socket_path
    return change_roots(socket_path, index_path(args), args.folder, add=add, as_json=args.json)


def cmd_groups(args: argparse.Namespace) -> int:
    with existing_index(args) as index:
        groups, pairs = chosen_groups(index, args, [absolute(f) for f in args.folders])
    emit_groups(groups, output_format(args), pairs=pairs)
    return EXIT_FOUND if groups else EXIT_NONE


def cmd_report(args: argparse.Namespace) -> int:
    with existing_index(args) as index:
        groups, pairs = chosen_groups(index, args, [absolute(f) for f in args.folders])
    summary = write_report(groups, args.out, pairs=pairs, sidecars=sidecar_patterns(args))
    print(summary.out)
    print(report_summary_line(summary), file=sys.stderr)
    if args.open and not open_in_browser(summary.out):
        print(f"dupwatch: no web browser found; open {summary.out} yourself", file=sys.stderr)
    return EXIT_FOUND if groups else EXIT_NONE


def cmd_dedupe(args: argparse.Namespace) -> int:
    folders = [absolute(f) for f in args.folders]
    with existing_index(args) as index:
        groups, _ = chosen_groups(index, args, folders)
        roots = [*index.roots(), *folders]
        plan = plan_dedupe(groups, args.to, roots=roots, sidecars=sidecar_patterns(args))
        result = None if args.dry_run else dedupe(index, plan)
    show_dedupe(plan, result, as_json=args.json)
    if result is not None and result.failed:
        return EXIT_ERROR
    return EXIT_FOUND if plan.moves else EXIT_NONE


def cmd_undo(args: argparse.Namespace) -> int:
    index = index_if_any(args)
    try:
        result = undo(args.manifest, index)
    finally:
        if index is not None:
            index.close()
    show_undo(result, as_json=args.json)
    return EXIT_ERROR if result.refused else EXIT_FOUND


def cmd_ignore(args: argparse.Namespace) -> int:
    with existing_index(args) as index:
        if args.list:
            return show_ignored(ignored_pairs(index), as_json=args.json)
        if args.remove:
            return show_unignored(unignore(index, args.images), as_json=args.json)
        images = group_paths(index, args.group) if args.group else args.images
        return show_newly_ignored(ignore(index, images), as_json=args.json)


def cmd_check(args: argparse.Namespace) -> int:
    with existing_index(args) as index:
        problems = index.check()
        if problems and args.repair:
            index.repair()
            for problem in problems:
                print(f"repaired: {problem}", file=sys.stderr)
            problems = index.check()
        files = len(index)
    if args.json:
        print(dumps({"ok": not problems, "files": files, "problems": problems}))
    else:
        for problem in problems:
            print(problem)
        print(f"{index_path(args)}: {files} files, {len(problems)} problems", file=sys.stderr)
    return 0 if not problems else 1


def cmd_notify(args: argparse.Namespace) -> int:
    from dupwatch.daemon.notify import Bridge, alerts_from

    socket_path = settings(args).socket_path
    Bridge(lambda: alerts_from(socket_path)).run()
    return 0


def cmd_service(args: argparse.Namespace) -> int:
    from dupwatch.daemon import units

    if args.action == "install":
        config = os.path.abspath(args.config) if args.config else None
        done = units.install(index_dir=settings(args).index, config=config, force=args.force)
    else:
        done = units.uninstall()
    verb = "wrote" if args.action == "install" else "removed"
    for path in done.paths:
        print(f"{verb} {path}")
    if not done.paths:
        print(f"no units of dupwatch in {done.unit_dir}")
    if done.next_steps:
        print("now run:\n" + "\n".join(f"  {line}" for line in done.next_steps))
    return 0


def cmd_reindex(args: argparse.Namespace) -> int:
    path = index_path(args)
    if not os.path.exists(os.path.join(path, "data.mdb")):
        raise StoreError(f"{path}: no index here yet (run `dupwatch scan DIR` first)")
    with Index.open(path, radius=settings(args).radius, check_params=False) as index:
        bar = ProgressBar("hashing")
        report = index.reindex(workers=args.workers, progress=bar)
        bar.finish()
    print_failures(report.failed)
    print(
        f"dupwatch: {report.hashed} images hashed again, {len(report.failed)} unreadable",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
