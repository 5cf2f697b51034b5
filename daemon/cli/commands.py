"""The commands that work on the index itself: scan, query, groups, report, dedupe, undo,
ignore, compare, check and reindex (parse in main.py, call the library, print)."""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from dupwatch.daemon.cli.settings import (
    EXIT_ERROR,
    EXIT_FOUND,
    EXIT_NONE,
    existing_index,
    index_if_any,
    index_path,
    open_index,
    output_format,
    print_failures,
    settings,
)
from dupwatch.daemon.progress import Progress
from dupwatch.daemon.render import dumps, printable
from dupwatch.daemon.review.across import PairCount, pair_counts, select_groups
from dupwatch.daemon.review.destination import check_report_path, default_report_path
from dupwatch.daemon.review.exports import (
    emit_groups,
    show_dedupe,
    show_ignored,
    show_newly_ignored,
    show_undo,
    show_unignored,
)
from dupwatch.daemon.review.report import open_in_browser, report_summary_line, write_report
from dupwatch.daemon.splits import Splits, across_splits, as_splits, split_of
from dupwatch.index.cleanup.quarantine import dedupe as dedupe_groups
from dupwatch.index.cleanup.quarantine import plan_dedupe
from dupwatch.index.cleanup.quarantine import undo as undo_moves
from dupwatch.index.cleanup.sidecars import DEFAULT_SIDECARS, find_sidecars
from dupwatch.index.compare import compare as compare_images
from dupwatch.index.errors import DupwatchError, NotAnImage, StoreError
from dupwatch.index.folders import absolute, is_under
from dupwatch.index.groups import Group, Labelled
from dupwatch.index.ignore import group_paths, unignore
from dupwatch.index.ignore import ignore as ignore_pairs
from dupwatch.index.ignore import listed as ignored_pairs
from dupwatch.index.index import Index
from dupwatch.index.matches import DEFAULT_RADIUS

if TYPE_CHECKING:
    from dupwatch.index.hashing.engine import Engine


def chosen_groups(
    index: Index, args: argparse.Namespace, folders: list[bytes]
) -> tuple[list[Group], list[PairCount]]:
    """The groups --across/--keep/--prefer/--radius and the folders select, with the
    across-folders pair counts (empty without --across)."""
    config_splits = args.config_values.splits
    splits = across_splits(args.across, folders, config_splits)
    groups = select_groups(
        index,
        folders,
        across=splits,
        radius=args.radius,
        keep=args.keep,
        prefer=args.prefer,
        labelled=labelled_by(sidecar_patterns(args), as_splits(config_splits or {})),
    )
    return groups, pair_counts(groups, splits) if splits else []


def hashing_progress(args: argparse.Namespace, engine: Engine | None = None) -> Progress:
    progress = Progress("hashing", enabled=args.progress)
    if engine is not None:
        progress.set_workers(engine.workers)  # a cluster's worker threads, when it hashes
    return progress


@contextlib.contextmanager
def hashing_engine(args: argparse.Namespace) -> Iterator[Engine | None]:
    """The Dask cluster's engine when --cluster (or `cluster` in the config) names one, else
    None: worker processes on this machine."""
    config = settings(args)
    address = args.cluster or config.cluster
    if not address:
        yield None
        return
    from dupwatch.index.hashing.cluster import DaskEngine  # imports distributed

    with DaskEngine(address, timeout_s=config.hash_timeout_s) as engine:
        yield engine


def sidecar_patterns(args: argparse.Namespace) -> tuple[str, ...]:
    configured = args.config_values.sidecars
    return tuple(getattr(args, "sidecar", None) or configured or DEFAULT_SIDECARS)


def labelled_by(patterns: tuple[str, ...], splits: Splits) -> Labelled:
    """Whether a copy carries labels: a label file beside it (`patterns`), or a place in
    one of the configured splits. Asked once per file."""

    @functools.cache
    def labelled(path: bytes) -> bool:
        return split_of(path, splits) is not None or bool(find_sidecars(path, patterns))

    return lambda record: labelled(record.path)


def scan(args: argparse.Namespace) -> int:
    folders = [absolute(folder) for folder in args.folders]
    for folder in folders:
        if not os.path.isdir(folder):
            raise DupwatchError(f"{printable(folder)}: not a folder")
    with open_index(args) as index, hashing_engine(args) as engine:
        progress = hashing_progress(args, engine)
        report = index.update(folders, workers=args.workers, progress=progress, engine=engine)
        progress.finish()
        groups, pairs = chosen_groups(index, args, folders)
        low = low_information_under(index, folders)
    # A file that is not an image at all (a text file named x.jpg) is not a damaged image.
    not_images = [e for e in report.failed if isinstance(e, NotAnImage)]
    failed = [e for e in report.failed if not isinstance(e, NotAnImage)]
    summary = {
        "seen": report.seen,
        "hashed": report.hashed,
        "unchanged": report.unchanged,
        "removed": report.removed,
        "failed": [{"path": e.path, "error": e.reason} for e in failed],
        "not_images": [{"path": e.path, "error": e.reason} for e in not_images],
        "notes": [{"path": os.fsdecode(path), "note": note} for path, note in report.notes],
        "groups": len(groups),
        "low_information": len(low),
    }
    # Blank frames and near-blank scans are a data-quality list of their own.
    extra = {"summary": summary, "low_information": low}
    emit_groups(groups, output_format(args), pairs=pairs, extra=extra)
    print_failures(report.failed)
    for path, note in report.notes:
        print(f"dupwatch: {printable(path)}: note: {note}", file=sys.stderr)
    print(
        f"dupwatch: {report.seen} images: {report.hashed} hashed, {report.unchanged} unchanged, "
        f"{report.removed} gone, {len(failed)} unreadable, {len(not_images)} not images; "
        f"{counted(len(groups), 'duplicate group')}; "
        f"{counted(len(low), 'blank or near-blank image')}",
        file=sys.stderr,
    )
    return EXIT_FOUND if groups else EXIT_NONE


def counted(count: int, noun: str) -> str:
    """The count with its noun, plural unless one: 1 duplicate group, 2 duplicate groups."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def low_information_under(index: Index, folders: list[bytes]) -> list[dict]:
    """The blank or near-blank pictures under `folders` (fingerprint/detail.py), by path (not
    in the order the hashing processes finished): they match only as exact or pixel copies,
    and a labelling person wants to see them."""
    low = [
        r
        for r in index.files()
        if r.low_information and any(r.path == f or is_under(r.path, f) for f in folders)
    ]
    return [
        {"path": r.fspath, "width": r.width, "height": r.height}
        for r in sorted(low, key=lambda r: r.path)
    ]


def compare(args: argparse.Namespace) -> int:
    config = settings(args)
    radius = DEFAULT_RADIUS if config.radius is None else config.radius
    result = compare_images(*args.images, radius=radius, transforms=config.transforms)
    print(dumps(result.to_json()) if args.json else "\n".join(result.lines()))
    return EXIT_FOUND if result.matches else EXIT_NONE


def groups(args: argparse.Namespace) -> int:
    with existing_index(args) as index:
        groups, pairs = chosen_groups(index, args, [absolute(f) for f in args.folders])
    emit_groups(groups, output_format(args), pairs=pairs)
    return EXIT_FOUND if groups else EXIT_NONE


def report(args: argparse.Namespace) -> int:
    out = check_report_path(args.out or _default_report_path())  # before any work
    with existing_index(args) as index:
        groups, pairs = chosen_groups(index, args, [absolute(f) for f in args.folders])
    bar = Progress("thumbnails", enabled=args.progress)
    summary = write_report(groups, out, pairs=pairs, sidecars=sidecar_patterns(args), progress=bar)
    bar.finish()
    print(summary.out)
    print(report_summary_line(summary), file=sys.stderr)
    if args.open and not open_in_browser(summary.out):
        print(f"dupwatch: no web browser found; open {summary.out} yourself", file=sys.stderr)
    return EXIT_FOUND if groups else EXIT_NONE


def _default_report_path() -> Path:
    out = default_report_path()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DupwatchError(f"{out.parent}: cannot make the folder: {error.strerror}") from None
    return out


def dedupe(args: argparse.Namespace) -> int:
    folders = [absolute(f) for f in args.folders]
    with existing_index(args) as index:
        groups, _ = chosen_groups(index, args, folders)
        # A moved file keeps its place under the watched or scanned folder it lies in.
        scanned = [folder for folder in index.scanned() if os.path.isdir(folder)]
        roots = [*index.roots(), *scanned, *folders]
        plan = plan_dedupe(groups, args.to, roots=roots, sidecars=sidecar_patterns(args))
        result = None if args.dry_run else dedupe_groups(index, plan)
    show_dedupe(plan, result, as_json=args.json)
    if result is not None and result.failed:
        return EXIT_ERROR
    return EXIT_FOUND if plan.moves else EXIT_NONE


def undo(args: argparse.Namespace) -> int:
    index = index_if_any(args)
    try:
        result = undo_moves(args.manifest, index)
    finally:
        if index is not None:
            index.close()
    show_undo(result, as_json=args.json)
    return EXIT_ERROR if result.refused else EXIT_FOUND


def ignore(args: argparse.Namespace) -> int:
    if args.list and (args.images or args.group or args.remove):
        raise DupwatchError("ignore --list takes no IMG, --group or --remove")
    if args.group and args.images:
        raise DupwatchError("ignore --group IMG takes no other IMG")
    with existing_index(args) as index:
        if args.list:
            return show_ignored(ignored_pairs(index), as_json=args.json)
        images = group_paths(index, args.group) if args.group else args.images
        if args.remove:
            return show_unignored(unignore(index, images), as_json=args.json)
        return show_newly_ignored(ignore_pairs(index, images), as_json=args.json)


def check(args: argparse.Namespace) -> int:
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


def reindex(args: argparse.Namespace) -> int:
    path = index_path(args)
    if not os.path.exists(os.path.join(path, "data.mdb")):
        raise StoreError(f"{path}: no index here yet (run `dupwatch scan DIR` first)")
    config = settings(args)
    with (
        Index.open(
            path, radius=config.radius, check_params=False, transforms=config.transforms
        ) as index,
        hashing_engine(args) as engine,
    ):
        progress = hashing_progress(args, engine)
        report = index.reindex(workers=args.workers, progress=progress, engine=engine)
        progress.finish()
    print_failures(report.failed)
    print(
        f"dupwatch: {report.hashed} images hashed again, {len(report.failed)} unreadable",
        file=sys.stderr,
    )
    return 0
