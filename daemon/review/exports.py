"""Groups written for other tools (CSV, imagededup's mapping), and the text of the review
commands: dedupe, undo, ignore and the across-splits pair table."""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Iterable, Sequence
from typing import IO

from dupwatch.daemon.render import dumps, group_lines, group_to_json, human_size, printable
from dupwatch.daemon.review.across import PairCount
from dupwatch.index import Group
from dupwatch.index.cleanup.quarantine import DedupePlan, DedupeResult, Move, UndoResult
from dupwatch.index.ignore import IgnoredPair

CSV_FIELDS = (
    "group", "path", "kind", "distance", "keep", "width", "height", "bytes", "transform", "via",
)  # fmt: skip


def emit_groups(
    groups: Sequence[Group],
    fmt: str,
    *,
    pairs: Sequence[PairCount] = (),
    extra: dict | None = None,
) -> None:
    """Print groups to stdout as text, JSON (DESIGN.md's shape, plus "across" with the pair
    counts and any `extra` keys), CSV or imagededup's mapping."""
    if fmt == "json":
        out: dict = {"groups": [group_to_json(g) for g in groups]}
        if pairs:
            out["across"] = [p.to_json() for p in pairs]
        print(dumps(out | (extra or {})))
    elif fmt == "csv":
        sys.stdout.flush()
        write_csv(groups, binary_stdout())
    elif fmt == "imagededup":
        print(dumps(imagededup_mapping(groups)))
    else:
        for group in groups:
            print("\n".join(group_lines(group)))
        if pairs:
            print("\n".join(pair_table_lines(pairs)))


def write_csv(groups: Sequence[Group], out: IO[str]) -> None:
    """One row per file: group number (1-based, as listed), path, kind ("keep" for the
    keeper), distance to the keeper, keep (true/false), width, height, bytes, and how the
    file is the keeper transformed (empty unless matched through --transforms), and the
    member it is a copy of when not of the keeper (then kind, distance and transform are
    relative to that member)."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for number, group in enumerate(groups, 1):
        keep = group.keep
        row = [number, keep.fspath, "keep", 0, "true", keep.width, keep.height, keep.size, "", ""]
        writer.writerow(row)
        for m in group.members:
            r = m.record
            fields = [str(m.kind), m.distance, "false", r.width, r.height, r.size]
            via = m.via.fspath if m.via is not None else ""
            writer.writerow([number, r.fspath, *fields, m.transform or "", via])


def binary_stdout() -> IO[str]:
    """stdout that writes file names back as their own bytes (not valid UTF-8 included)."""
    stdout = sys.stdout.buffer
    return io.TextIOWrapper(stdout, "utf-8", "surrogateescape", newline="", write_through=True)


def imagededup_mapping(groups: Iterable[Group]) -> dict[str, list[str]]:
    """imagededup's {filename: [duplicates]}: the keeper lists its copies, each copy its
    keeper. Keepers come first, so imagededup's get_files_to_remove() keeps them."""
    keepers = {}
    copies = {}
    for group in groups:
        keepers[group.keep.fspath] = [m.record.fspath for m in group.members if m.via is None]
        for m in group.members:
            copies[m.record.fspath] = [(m.via or group.keep).fspath]
    return {**keepers, **copies}


def pair_table_lines(counts: Sequence[PairCount]) -> list[str]:
    """The across-splits table: one line per pair of splits."""
    width = max([len(f"{c.a}-{c.b}") for c in counts] + [4])
    lines = [f"{'pair':<{width}}  groups  files"]
    for c in counts:
        files = f"{c.files_a} {c.a} + {c.files_b} {c.b}"
        lines.append(f"{c.a + '-' + c.b:<{width}}  {c.groups:>6}  {files}")
    return lines


def plan_lines(plan: DedupePlan, *, dry_run: bool) -> list[str]:
    """Each group's keeper, with why it is kept, then the moves of its copies."""
    verb = "would move" if dry_run else "move"
    lines = []
    for number, (keep, why) in plan.keepers.items():
        moves = [m for m in plan.moves if m.group == number]
        if moves:
            lines.append(f"keep {printable(keep)}" + (f"  ({why})" if why else ""))
            lines += [f"  {_move_line(verb, m)}" for m in moves]
    return lines


def _move_line(verb: str, move: Move) -> str:
    label = " (label)" if move.role == "sidecar" else ""
    return f"{verb} {printable(move.source)} -> {printable(move.dest)}{label}"


def dedupe_summary(plan: DedupePlan, result: DedupeResult | None) -> str:
    moves = plan.moves if result is None else result.moved
    images = [m for m in moves if m.role == "image"]
    freed = human_size(sum(m.size for m in images))
    labels = len(moves) - len(images)
    verb = "would move" if result is None else "moved"
    copies = f"{len(images)} copy" if len(images) == 1 else f"{len(images)} copies"
    label_files = f"{labels} label file" if labels == 1 else f"{labels} label files"
    return f"{verb} {copies} ({freed}) and {label_files}"


def plan_to_json(plan: DedupePlan, result: DedupeResult | None) -> dict:
    moves = plan.moves if result is None else result.moved
    out: dict = {
        "dry_run": result is None,
        "moves": [_without_time(m.to_json("")) for m in moves],
        "keepers": [
            {"group": number, "keep": os.fsdecode(keep), "why": why}
            for number, (keep, why) in plan.keepers.items()
        ],
        "left_alone": plan.notes,
    }
    if result is not None:
        out["manifest"] = os.fsdecode(result.manifest)
        out["failed"] = result.failed
    return out


def undo_to_json(result: UndoResult) -> dict:
    return {
        "restored": [os.fsdecode(m.source) for m in result.restored],
        "already_back": result.already_back,
        "refused": result.refused,
    }


def undo_lines(result: UndoResult) -> list[str]:
    return [f"restored {printable(m.source)}" for m in result.restored]


def ignored_lines(pairs: Sequence[IgnoredPair]) -> list[str]:
    lines = []
    for pair in pairs:
        a, b = (_where(now, was) for now, was in zip(pair.current, pair.noted_paths, strict=True))
        lines.append(f"{a}  !=  {b}  (since {pair.time})")
    return lines


def _where(now: list[str], was: str) -> str:
    """The paths a picture has today, or the one it had when it was ignored."""
    return ", ".join(map(printable, now)) or f"(gone; was {printable(was)})"


def _without_time(entry: dict) -> dict:
    return {key: value for key, value in entry.items() if key != "time"}


def show_dedupe(plan: DedupePlan, result: DedupeResult | None, *, as_json: bool) -> None:
    """Print the moves (done, or that would be done), what was left alone, and the manifest."""
    if as_json:
        print(dumps(plan_to_json(plan, result)))
    else:
        if result is None:
            lines = plan_lines(plan, dry_run=True)
        else:
            lines = [_move_line("moved", m) for m in result.moved]
        if lines:
            print("\n".join(lines))
        if result is not None:
            print(f"manifest {printable(result.manifest)}")
    for note in plan.notes:
        print(f"dupwatch: {note}", file=sys.stderr)
    for failure in [] if result is None else result.failed:
        print(f"dupwatch: {failure}", file=sys.stderr)
    print(f"dupwatch: {dedupe_summary(plan, result)}", file=sys.stderr)
    if result is not None and result.moved:
        undo = f"dupwatch undo {printable(result.manifest)}"
        print(f"dupwatch: to put them back: {undo}", file=sys.stderr)


def show_undo(result: UndoResult, *, as_json: bool) -> None:
    if as_json:
        print(dumps(undo_to_json(result)))
    elif result.restored:
        print("\n".join(undo_lines(result)))
    for refusal in result.refused:
        print(f"dupwatch: {refusal}", file=sys.stderr)
    print(
        f"dupwatch: {len(result.restored)} files restored, {result.already_back} already back, "
        f"{len(result.refused)} refused",
        file=sys.stderr,
    )


def show_ignored(pairs: Sequence[IgnoredPair], *, as_json: bool) -> int:
    """Print the ignored pairs; the exit status is 1 when there are none."""
    if as_json:
        print(dumps({"ignored": [p.to_json() for p in pairs]}))
    elif pairs:
        print("\n".join(ignored_lines(pairs)))
    return 0 if pairs else 1


def show_newly_ignored(added: Sequence[tuple[str, str]], *, as_json: bool) -> int:
    if as_json:
        print(dumps({"ignored": [list(pair) for pair in added]}))
    for a, b in added:
        if not as_json:
            print(f"not duplicates: {printable(a)}  !=  {printable(b)}")
    if not added:
        print("dupwatch: those pairs were already ignored", file=sys.stderr)
    return 0


def show_unignored(count: int, *, as_json: bool) -> int:
    if as_json:
        print(dumps({"removed": count}))
    else:
        print(f"dupwatch: {count} ignored pairs forgotten", file=sys.stderr)
    return 0 if count else 1
