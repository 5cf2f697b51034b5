"""Watching folders with watchdog: every event becomes a Change on a queue, nothing more.

The handler runs in watchdog's dispatch thread and only enqueues; hashing and every index
write happen elsewhere. Also here: noticing inotify overflows and folders past the watch limit.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import ObservedWatch

from dupwatch.index.folders import DEFAULT_IGNORE, is_candidate, is_ignored, may_be_candidate

log = logging.getLogger(__name__)

# Close-after-write and moves only: a file is announced once it is complete, and a burst
# of new files costs one event each in Python instead of four (DESIGN.md, measured facts).
EVENT_FILTER = [
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirMovedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
]
OVERFLOW_LOGGER = "watchdog.observers.inotify_c"
OVERFLOW_MESSAGE = "Inotify queue overflowed"
WATCHES_SYSCTL = "fs.inotify.max_user_watches"
# inotify_add_watch's answers when the per-user watch or instance limit is reached.
LIMIT_ERRNOS = (errno.ENOSPC, errno.EMFILE)


class ChangeKind(StrEnum):
    FILE = "file"  # created or rewritten, complete: hash it unless the index has this stat
    MOVE = "move"  # renamed inside the roots: `path` -> `dest`
    GONE = "gone"  # deleted, or moved out of the roots
    MOVE_DIR = "move_dir"  # a folder renamed inside the roots
    GONE_DIR = "gone_dir"  # a folder moved out of the roots
    SCAN = "scan"  # a folder appeared (created or moved in): look at everything in it
    RECONCILE = "reconcile"  # events were lost: compare `path` (b"" = every root) with the index
    ROOT_GONE = "root_gone"  # a watched root itself disappeared


@dataclass(frozen=True, slots=True)
class Change:
    """One thing that happened to the watched folders; paths are absolute bytes."""

    kind: ChangeKind
    path: bytes
    dest: bytes = b""


Sink = Callable[[Change], None]


def is_wanted(path: bytes, root: bytes, ignore: Iterable[str]) -> bool:
    """An image under `root` (by its name, or its first bytes: folders.is_candidate) whose
    name and folders are not temporary or hidden ones."""
    return not _has_ignored_part(path, root, ignore) and is_candidate(path, ignore)


def _has_ignored_part(path: bytes, root: bytes, ignore: Iterable[str]) -> bool:
    relative = os.path.relpath(path, root) if path != root else b""
    if relative.startswith(b".."):
        return True
    return any(is_ignored(part, ignore) for part in relative.split(b"/") if part)


class _Handler(FileSystemEventHandler):
    """Turns one root's watchdog events into Changes; runs in watchdog's thread."""

    def __init__(self, root: bytes, sink: Sink, ignore: tuple[str, ...]) -> None:
        self.root = root
        self.sink = sink
        self.ignore = ignore

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            change = self._change_for(event)
        except Exception:  # a handler that raises would end watchdog's dispatch thread
            log.exception("cannot handle %r", event)
            return
        if change is not None:
            self.sink(change)

    def _change_for(self, event: FileSystemEvent) -> Change | None:
        src = os.fsencode(event.src_path)
        dest = os.fsencode(event.dest_path)
        if event.is_synthetic:
            return None  # watchdog's replay of a folder move or creation; we handle the folder
        if isinstance(event, FileClosedEvent):
            return Change(ChangeKind.FILE, src) if self._wanted(src) else None
        if isinstance(event, FileMovedEvent):
            return self._file_moved(src, dest)
        if isinstance(event, FileDeletedEvent):
            return Change(ChangeKind.GONE, src) if self._maybe_indexed(src) else None
        if isinstance(event, DirMovedEvent):
            return self._dir_moved(src, dest)
        if isinstance(event, DirCreatedEvent):
            # Files written before the new folder's watch existed have no event of their own.
            return None if self._ignored_dir(src) else Change(ChangeKind.SCAN, src)
        if isinstance(event, DirDeletedEvent) and src == self.root:
            return Change(ChangeKind.ROOT_GONE, src)
        return None  # a folder can only be deleted empty: its files had their own events

    def _file_moved(self, src: bytes, dest: bytes) -> Change | None:
        if not src:  # moved in from outside the roots
            return Change(ChangeKind.FILE, dest) if self._wanted(dest) else None
        if not dest or not self._wanted(dest):  # moved out, or renamed to a temporary name
            return Change(ChangeKind.GONE, src) if self._maybe_indexed(src) else None
        return Change(ChangeKind.MOVE, src, dest)

    def _dir_moved(self, src: bytes, dest: bytes) -> Change | None:
        if not src:
            return None if self._ignored_dir(dest) else Change(ChangeKind.SCAN, dest)
        if not dest or self._ignored_dir(dest):
            return Change(ChangeKind.GONE_DIR, src)
        return Change(ChangeKind.MOVE_DIR, src, dest)

    def _wanted(self, path: bytes) -> bool:
        return is_wanted(path, self.root, self.ignore)

    def _maybe_indexed(self, path: bytes) -> bool:
        """A path gone from the disk that could have been an image (its bytes are gone, so
        only its name can say): the writer looks it up in the index."""
        return may_be_candidate(path, self.ignore)

    def _ignored_dir(self, path: bytes) -> bool:
        return _has_ignored_part(path, self.root, self.ignore)


class _OverflowHook(logging.Handler):
    """watchdog reports a kernel queue overflow only as a log warning: turn it into a Change."""

    def __init__(self, sink: Sink) -> None:
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(OVERFLOW_MESSAGE):
            self.sink(Change(ChangeKind.RECONCILE, b""))


class Watcher:
    """Recursive inotify watches on several roots, feeding Changes to `sink`.

    `watch` returns the folders under the root that inotify could not watch (the per-user
    watch limit): the caller must cover those some other way, such as periodic reconciling.
    """

    def __init__(self, sink: Sink, *, ignore: Iterable[str] = DEFAULT_IGNORE) -> None:
        self.sink = sink
        self.ignore = tuple(ignore)
        self.observer = Observer(generate_full_events=True)
        # root -> its watch; None when not even the root could be watched (the limit).
        self._watches: dict[bytes, ObservedWatch | None] = {}
        self._overflow = _OverflowHook(sink)

    def start(self) -> None:
        overflow_log = logging.getLogger(OVERFLOW_LOGGER)
        overflow_log.addHandler(self._overflow)
        if overflow_log.getEffectiveLevel() > logging.WARNING:
            overflow_log.setLevel(logging.WARNING)
        self.observer.start()

    def stop(self) -> None:
        logging.getLogger(OVERFLOW_LOGGER).removeHandler(self._overflow)
        if self.observer.is_alive():
            self.observer.stop()
            self.observer.join(10)
        self._watches.clear()

    @property
    def roots(self) -> list[bytes]:
        return sorted(self._watches)

    def watch(self, root: bytes) -> list[bytes]:
        """Watch `root` recursively; returns the folders under it left unwatched (limit).

        Past the watch limit, what fits is watched: watchdog up to 7.1.0 drops the folders
        it has no watch left for, 7.1.1 and later give up on the whole tree, and then the
        root alone is watched (or nothing, when not even that fits). Raises OSError when the
        root itself cannot be watched for another reason (missing, no permission).
        """
        if root in self._watches:
            return self.unwatched(root)
        handler = _Handler(root, self.sink, self.ignore)
        try:
            watch = self._schedule(handler, root, recursive=True)
        except OSError as error:
            if error.errno not in LIMIT_ERRNOS:
                raise
            log.debug("%s: no recursive watch (%s); watching the folder alone", root, error)
            try:
                watch = self._schedule(handler, root, recursive=False)
            except OSError as error:
                if error.errno not in LIMIT_ERRNOS:
                    raise
                watch = None
        self._watches[root] = watch
        try:
            return self.unwatched(root)
        except Exception:
            self.unwatch(root)
            raise

    def _schedule(self, handler: _Handler, root: bytes, *, recursive: bool) -> ObservedWatch:
        return self.observer.schedule(handler, root, recursive=recursive, event_filter=EVENT_FILTER)

    def unwatch(self, root: bytes) -> None:
        watch = self._watches.pop(root, None)
        if watch is not None:
            try:
                self.observer.unschedule(watch)
            except KeyError:
                pass  # its emitter already stopped (the root was deleted)

    def is_alive(self, root: bytes) -> bool:
        """False once the root's emitter stopped (the root folder was deleted or moved).
        A root that could not be watched at all (the limit) counts as alive: it is there."""
        if root not in self._watches:
            return False
        watch = self._watches[root]
        if watch is None:
            return True
        emitter = self._emitter(watch)
        return emitter is not None and emitter.is_alive()

    def unwatched(self, root: bytes) -> list[bytes]:
        """Folders under `root` that have no inotify watch (past the watch limit)."""
        folders = folders_under(root, self.ignore)
        if self._watches.get(root) is None:
            return [path for path, _identity in folders]
        watched = inotify_watched()
        if watched is None:
            return []  # no inotify here (another platform): nothing to compare
        return [path for path, identity in folders if identity not in watched]

    def _emitter(self, watch: ObservedWatch) -> object | None:
        for emitter in self.observer.emitters:
            if emitter.watch == watch:
                return emitter
        return None


def inotify_watched() -> set[tuple[int, int]] | None:
    """(device, inode) of every folder this process holds an inotify watch on; None where
    there is no inotify.

    Read from the kernel (/proc/self/fdinfo lists each watch of an inotify descriptor), not
    from watchdog, whose bookkeeping is private and changes between releases.
    """
    try:
        descriptors = os.listdir("/proc/self/fd")
    except OSError:
        return None
    watched: set[tuple[int, int]] = set()
    found_inotify = False
    for fd in descriptors:
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:inotify":
                continue
            info = Path(f"/proc/self/fdinfo/{fd}").read_text()
        except OSError:
            continue  # closed meanwhile
        found_inotify = True
        for line in info.splitlines():
            if line.startswith("inotify wd:"):
                fields = dict(part.split(":", 1) for part in line.split()[1:] if ":" in part)
                # The kernel's own dev_t: 12 bits of major above 20 bits of minor.
                sdev = int(fields["sdev"], 16)
                device = os.makedev(sdev >> 20, sdev & 0xFFFFF)
                watched.add((device, int(fields["ino"], 16)))
    return watched if found_inotify else None


def folders_under(
    root: bytes, ignore: Iterable[str] = DEFAULT_IGNORE
) -> list[tuple[bytes, tuple[int, int]]]:
    """`root` and every folder below it that dupwatch looks into (no hidden/temporary ones),
    each with its (device, inode)."""
    ignore = tuple(ignore)
    found = []
    try:
        st = os.stat(root)
    except OSError:
        return []
    pending = [(root, (st.st_dev, st.st_ino))]
    while pending:
        folder, identity = pending.pop()
        found.append((folder, identity))
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode) and not is_ignored(entry.name, ignore):
                pending.append((entry.path, (info.st_dev, info.st_ino)))
    return found


def watch_limits() -> dict[str, int]:
    """The inotify watch limits that apply: the sysctl and, in a user namespace, its own."""
    limits = {}
    for name, file in (
        (WATCHES_SYSCTL, "/proc/sys/fs/inotify/max_user_watches"),
        ("user.max_inotify_watches", "/proc/sys/user/max_inotify_watches"),
    ):
        try:
            limits[name] = int(Path(file).read_text().strip())
        except (OSError, ValueError):
            continue
    return limits


def limit_warning(unwatched: list[bytes], total_folders: int, rescan_interval_s: float) -> str:
    """The message for folders past the inotify watch limit: which, and what to raise."""
    limits = watch_limits()
    shown = ", ".join(os.fsdecode(f) for f in unwatched[:5])
    more = f" and {len(unwatched) - 5} more" if len(unwatched) > 5 else ""
    current = " ".join(f"{name}={value}" for name, value in limits.items())
    wanted = max(total_folders * 2, 2 * limits.get(WATCHES_SYSCTL, 8192))
    return (
        f"inotify watch limit reached ({current}): {len(unwatched)} folders are not watched: "
        f"{shown}{more}. Files there are still indexed, by a rescan every "
        f"{rescan_interval_s:g} s instead of at once. Raise the limit, e.g. "
        f"`sudo sysctl {WATCHES_SYSCTL}={wanted}` (persist it in /etc/sysctl.d/), "
        "then restart dupwatch."
    )
