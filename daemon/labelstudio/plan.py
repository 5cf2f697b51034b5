"""Which tasks to flag, and with what: for one alert, and for the groups of a whole index.

Pure: tasks come as a TaskMap, groups and alerts as the service's JSON. A duplicate is
flagged when what it duplicates is another task of the project, or when it leaks across
splits; a copy of a file outside the project (a raw folder the tasks were taken from) is
not, or every task would be hidden.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Any

from dupwatch.daemon.labelstudio.flags import Original, flag_text
from dupwatch.daemon.labelstudio.tasks import Task, TaskMap
from dupwatch.daemon.splits import split_leaks

Alert = Mapping[str, Any]
# How two files compare, for a group whose flagged copy and kept task are both copies of a
# third file: (kind, distance), or None when the index does not say.
Relation = Callable[[str, str], tuple[str, int] | None]
KIND_ORDER = ("exact", "pixel", "near")  # strongest first


@dataclass(frozen=True, slots=True)
class Flag:
    """A flag to set: `text` in the data of `task`, whose image is `path`."""

    task: Task
    text: str
    path: str


@dataclass(frozen=True, slots=True)
class Waiting:
    """An alert whose files lie in a storage folder but have no task yet (not synced)."""

    path: str


def alert_flag(alert: Alert, tasks: TaskMap, *, wait: bool = True) -> Flag | Waiting | None:
    """The flag an alert asks for; Waiting until its tasks exist (its matches' too, while
    `wait`); None: nothing to flag."""
    if alert.get("event") != "duplicate" or not alert.get("matches"):
        return None
    path = str(alert["path"])
    task = tasks.task_of(path)
    if task is None:
        return Waiting(path) if tasks.in_storage(path) else None
    original = None
    for match in alert["matches"]:
        other = tasks.task_of(str(match["path"]))
        if other is not None and other.id != task.id:
            kind, distance = str(match.get("kind", "near")), int(match.get("distance", 0))
            original = Original(tasks.name(str(match["path"])), kind, distance, other.id)
            break
        if other is None and wait and tasks.in_storage(str(match["path"])):
            return Waiting(str(match["path"]))  # its task is on its way: name it in the flag
    leaks = shortened(list(alert.get("leaks", [])))
    if original is None and not leaks:
        return None
    return Flag(task, flag_text(original, leaks), path)


def group_flags(
    group: Mapping[str, Any],
    tasks: TaskMap,
    splits: Mapping[str, str | bytes | PathLike] | None = None,
    relation: Relation | None = None,
) -> list[Flag]:
    """The flags one group of the index asks for, leaving flagged tasks as they are.

    One task of the group is kept unflagged: an already flagged one never is (a live alert
    flagged it as the copy), an annotated one before one not yet annotated, then the oldest
    (lowest id). The others are flagged as its copies, and as leaks when the group has a file
    in another split than the kept one. The kept task is flagged as a leak only when it is
    the group's one task (its copies elsewhere are not tasks).
    """
    files = list(group["files"])
    in_project: list[tuple[dict, Task]] = []
    for file in files:
        task = tasks.task_of(str(file["path"]))
        if task is not None and all(task.id != t.id for _, t in in_project):
            in_project.append((file, task))
    if not in_project:
        return []
    kept_file, kept = min(in_project, key=lambda ft: _keep_order(ft[1]))
    flags = []
    for file, task in in_project:
        if task.flag is not None:
            continue
        if task is kept and len(in_project) > 1:
            continue
        path = str(file["path"])
        # A copy leaks when it is in another split than the task kept; the kept task, when
        # it is the group's only one, when any other file is.
        others = [f for f in files if f is not file] if task is kept else [kept_file]
        leaks = shortened(split_leaks(splits or {}, path, [{"path": f["path"]} for f in others]))
        original = None
        if task is not kept:
            kind, distance = _relation(file, kept_file, relation)
            original = Original(tasks.name(str(kept_file["path"])), kind, distance, kept.id)
        if original is not None or leaks:
            flags.append(Flag(task, flag_text(original, leaks), path))
    return flags


def flagged_tasks(group: Mapping[str, Any], tasks: TaskMap) -> set[int]:
    """The tasks of a group's files that carry a flag already."""
    found = (tasks.task_of(str(file["path"])) for file in group["files"])
    return {task.id for task in found if task is not None and task.flag is not None}


def shortened(leaks: Sequence[str]) -> list[str]:
    """The first leak, and how many more: a flag stays one readable line.

    >>> shortened(["leak: a", "leak: b", "leak: c"])
    ['leak: a', 'and 2 more leaks']
    """
    if len(leaks) <= 1:
        return list(leaks)
    more = len(leaks) - 1
    return [leaks[0], f"and {more} more {'leak' if more == 1 else 'leaks'}"]


def _keep_order(task: Task) -> tuple[bool, bool, int]:
    return (task.flag is not None, task.annotations == 0, task.id)


def _relation(file: Mapping, kept: Mapping, relation: Relation | None) -> tuple[str, int]:
    """Kind and distance between a file of a group and the kept one (both relative to the
    group's keeper in the JSON): asked of the index, else bounded through the keeper."""
    if kept["kind"] == "keep":
        return str(file["kind"]), int(file["distance"])
    if file["kind"] == "keep":
        return str(kept["kind"]), int(kept["distance"])
    found = relation(str(file["path"]), str(kept["path"])) if relation else None
    if found is not None:
        return found
    kinds = [str(file["kind"]), str(kept["kind"])]
    weakest = max(kinds, key=lambda k: KIND_ORDER.index(k) if k in KIND_ORDER else len(KIND_ORDER))
    return weakest, int(file["distance"]) + int(kept["distance"])
