"""The service: the index, the watcher, hashing processes, the writer thread and the socket.

`Service(config).run()` reconciles the roots, tells systemd it is ready, serves until stop().
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import multiprocessing
import os
import signal
import struct
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from dupwatch.daemon.config import Config, ensure_private_dir, runtime_dir
from dupwatch.daemon.render import printable
from dupwatch.daemon.service import systemd
from dupwatch.daemon.service.ops import Ops
from dupwatch.daemon.service.server import Server
from dupwatch.daemon.service.watcher import (
    Change,
    ChangeKind,
    Watcher,
    folders_under,
    limit_warning,
)
from dupwatch.daemon.service.worker import init_worker
from dupwatch.daemon.service.writer import Reconcile, Writer
from dupwatch.daemon.splits import split_leaks
from dupwatch.daemon.wire.protocol import duplicate_event
from dupwatch.index import AddResult, Index, IndexLocked, StoreError, default_index_path
from dupwatch.index.folders import absolute, is_under
from dupwatch.index.hashing.limits import HASHING_MODULES, WORKER_MEMORY_BYTES

log = logging.getLogger(__name__)

LOCK_NAME = "daemon.lock"
REPAIR_FAILED = (
    "the index is damaged beyond a repair; `dupwatch check` lists what is wrong. To start "
    "over, move the index folder aside and start the service again on the folders"
)
STATUS_EVERY_S = 1.0


class IndexLock:
    """An fcntl lock file in the index folder: one service per index.

    Raises IndexLocked naming the index and the pid of the service that holds it.
    """

    def __init__(self, index_path: str) -> None:
        os.makedirs(index_path, mode=0o700, exist_ok=True)
        self.path = os.path.join(index_path, LOCK_NAME)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            raise IndexLocked(
                f"{index_path}: another dupwatch service (pid {holder}) is using this index; "
                "stop it first (`systemctl --user stop dupwatch`) or choose another --index"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing drops the lock; the file stays for the next holder
            self._fd = -1


def effective_roots(roots: Iterable[bytes]) -> list[bytes]:
    """The roots not inside another root: a recursive watch on the outer one covers both."""
    roots = sorted(set(roots))
    return [r for r in roots if not any(o != r and is_under(r, o) for o in roots)]


class Service:
    """One running dupwatch service; construct, then `await run()` on an event loop."""

    def __init__(self, config: Config, roots: Iterable[str | os.PathLike | bytes] = ()) -> None:
        self.config = config
        self.new_roots = [absolute(r) for r in [*config.roots, *roots]]
        self.index_path = os.fspath(config.index) if config.index else default_index_path()
        self.state = "starting"
        self.started = time.monotonic()
        self.recent_alerts: deque[dict[str, Any]] = deque(maxlen=10)
        # Alerts across splits (train/val leaks), kept apart so that ordinary alerts after
        # them do not push them out of `status`.
        self.recent_leaks: deque[dict[str, Any]] = deque(maxlen=10)
        self.leaks = 0
        self.unwatched: dict[bytes, list[bytes]] = {}  # root -> folders past the watch limit
        self.lost_roots: set[bytes] = set()  # roots that are missing or were deleted
        self._root_identity: dict[bytes, tuple[int, int]] = {}  # root -> (device, inode)
        self._stop = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.index: Index
        self.writer: Writer
        self.watcher: Watcher
        self.server: Server

    def stop(self) -> None:
        """Ask the service to finish; safe from any thread and from signal handlers."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._stop.set)

    async def run(self, *, handle_signals: bool = False) -> None:
        """Start everything, reconcile, report READY, serve until stop(), then shut down."""
        self._loop = asyncio.get_running_loop()
        if handle_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(signum, self._stop.set)
        lock = IndexLock(self.index_path)
        try:
            self.index = Index.open(
                self.index_path, radius=self.config.radius, transforms=self.config.transforms
            )
            try:
                await asyncio.to_thread(self._check_index)
                await self._serve()
            finally:
                self.index.close()
        finally:
            lock.release()

    def _check_index(self) -> None:
        """The cheap check at start. A damaged index is repaired, not refused: the derived
        tables are rebuilt from the file records (nothing hashed, nothing lost), where a
        refusal would only restart-loop under systemd until someone ran that same repair.

        Raises StoreError when the index is still inconsistent after the repair.
        """
        problems = self.index.quick_check()
        if not problems:
            return
        log.warning(
            "%s: the index is inconsistent (%s); rebuilding its tables from the file records",
            self.index_path,
            "; ".join(problems),
        )
        systemd.notify("STATUS=repairing the index")
        try:
            self.index.repair()
        except (struct.error, ValueError) as exc:  # a file record itself: nothing to rebuild from
            raise StoreError(f"{self.index_path}: {REPAIR_FAILED} (a file record: {exc})") from None
        left = self.index.quick_check()
        if left:
            raise StoreError(f"{self.index_path}: {REPAIR_FAILED} ({'; '.join(left)})")
        log.warning("%s: the index is repaired", self.index_path)

    async def _serve(self) -> None:
        known = set(self.index.roots())
        for root in self.new_roots:
            if root not in known:  # no write when nothing is new: the disk may be full
                self.index.add_root(root)  # before the writer starts: still the only writer
        self.writer = Writer(
            self.index,
            self._new_pool,
            workers=self.config.workers,
            ignore=self.config.ignore,
            on_duplicate=self._announce,
            hash_timeout_s=self.config.hash_timeout_s,
            roots=self.live_roots,
        )
        self.index.pixels.decode = self.writer.pixel_digest  # no full decode in this process
        self.watcher = Watcher(self._on_change, ignore=self.config.ignore)
        self.server = Server(Ops(self).table(), subscriber_queue=self.config.subscriber_queue)
        tasks: list[asyncio.Task[Any]] = []
        try:
            await self._start_server()
            self.writer.start()
            self.watcher.start()
            await asyncio.to_thread(self._watch_all)
            await self._reconcile_before_ready()
            tasks = self._background_tasks()
            await self._stop.wait()
        finally:
            self.state = "stopping"
            systemd.notify("STOPPING=1")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.to_thread(self._shut_down)
            await self.server.close()

    def _shut_down(self) -> None:
        self.watcher.stop()
        if self.writer.is_alive():
            self.writer.stop()  # finishes the files in hand, then ends the pool
        else:
            self.writer.pool.shutdown(wait=True, cancel_futures=True)

    def _new_pool(self) -> ProcessPoolExecutor:
        """Hashing processes, forked from a clean server process: never from this one, which
        has the LMDB environment open."""
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([*HASHING_MODULES, "dupwatch.daemon.service.worker"])
        pool = ProcessPoolExecutor(
            self.config.workers,
            mp_context=context,
            initializer=init_worker,
            initargs=(os.getpid(), WORKER_MEMORY_BYTES),
        )
        for _ in range(self.config.workers):
            pool.submit(os.getpid)  # start the workers now, not on the first photo
        return pool

    async def _start_server(self) -> None:
        sockets = systemd.listen_fds()
        if sockets:
            log.info("serving the socket systemd passed (socket activation)")
            await self.server.start(sock=sockets[0])
            return
        path = self.config.socket_path
        if path.parent == runtime_dir():
            ensure_private_dir(path.parent)
        await self.server.start(path)
        log.info("listening on %s", path)

    # Roots and watching

    def _watch_all(self) -> None:
        if not self.index.roots():
            log.warning("no folders to watch yet: add one with `dupwatch watch DIR`")
        self.sync_watches()

    def live_roots(self) -> list[bytes]:
        """The folders to reconcile: the outermost roots, less those missing from disk."""
        return [r for r in effective_roots(self.index.roots()) if r not in self.lost_roots]

    def sync_watches(self) -> None:
        """Watch exactly the outermost roots stored in the index (after watch/unwatch)."""
        wanted = effective_roots(self.index.roots())
        for root in self.watcher.roots:
            if root not in wanted:
                self.watcher.unwatch(root)
                self.unwatched.pop(root, None)
        self.lost_roots.intersection_update(wanted)
        for root in wanted:
            if root not in self.watcher.roots:
                self.watch_root(root)

    def watch_root(self, root: bytes) -> bool:
        """Watch one root (in a worker thread: it walks the folder); False when it is missing."""
        try:
            identity = _identity(root)
            unwatched = self.watcher.watch(root)
        except OSError as exc:
            log.warning("%s: cannot watch: %s", printable(root), exc.strerror or exc)
            self.lost_roots.add(root)
            return False
        self._root_identity[root] = identity
        self.lost_roots.discard(root)
        self._note_unwatched(root, unwatched)
        return True

    def _note_unwatched(self, root: bytes, unwatched: list[bytes]) -> None:
        before = set(self.unwatched.get(root, ()))
        if unwatched:
            self.unwatched[root] = unwatched
        else:
            self.unwatched.pop(root, None)
        if set(unwatched) - before:
            folders = len(folders_under(root, self.config.ignore))
            log.warning(limit_warning(unwatched, folders, self.config.rescan_interval_s))

    def _on_change(self, change: Change) -> None:
        """The watcher's sink (watchdog's thread): only enqueue."""
        if change.kind == ChangeKind.RECONCILE:
            log.warning("inotify queue overflow: events were lost; reconciling every folder")
            self.writer.submit(Reconcile(effective_roots(self.index.roots())))
        elif change.kind == ChangeKind.ROOT_GONE:
            log.warning("%s: the watched folder disappeared", printable(change.path))
            self.lost_roots.add(change.path)
        else:
            self.writer.submit(change)

    # Start-up reconciliation

    async def _reconcile_before_ready(self) -> None:
        self.state = "reconciling"
        roots = effective_roots(self.index.roots())
        systemd.notify(f"STATUS=reconciling {len(roots)} folders with the index")
        job = Reconcile([r for r in roots if r not in self.lost_roots])
        self.writer.submit(job)
        done = asyncio.wrap_future(job.done)
        while not done.done():
            await asyncio.wait({done}, timeout=STATUS_EVERY_S)
            if job.total:
                progress = job.total - len(job.left)
                systemd.notify(f"STATUS=reconciling: hashed {progress} of {job.total} files")
        self.state = "ready"
        files = await asyncio.to_thread(len, self.index)
        log.info(
            "ready: %d folders, %d files indexed (%d hashed, %d gone, %d unchanged)",
            len(roots),
            files,
            job.total,
            job.removed,
            job.unchanged,
        )
        systemd.notify(f"READY=1\nSTATUS=watching {len(roots)} folders, {files} files indexed")

    # Running

    def _background_tasks(self) -> list[asyncio.Task[Any]]:
        tasks = [asyncio.create_task(self._maintain(), name="dupwatch-maintain")]
        watchdog = systemd.Watchdog.from_environment()
        if watchdog is not None:
            tasks.append(asyncio.create_task(watchdog.run(self.writer.is_alive)))
        return tasks

    async def _maintain(self) -> None:
        """Every rescan_interval_s: bring back lost roots, rescan folders inotify cannot watch."""
        while True:
            await asyncio.sleep(self.config.rescan_interval_s)
            try:
                await asyncio.to_thread(self._maintain_once)
            except Exception:
                log.exception("periodic maintenance failed")

    def _maintain_once(self) -> None:
        self._notice_lost_roots()
        for root in sorted(self.lost_roots):
            if os.path.isdir(root):
                self.watcher.unwatch(root)
                if self.watch_root(root):
                    log.info("%s: the folder is back; reconciling it", printable(root))
                    self.writer.submit(Reconcile([root]))
        for root in self.watcher.roots:  # folders made since may be past the limit too
            self._note_unwatched(root, self.watcher.unwatched(root))
        folders = [f for folders in self.unwatched.values() for f in folders]
        if folders:
            self.writer.submit(Reconcile(folders))

    def _notice_lost_roots(self) -> None:
        """inotify says nothing when a watched root itself is moved away or unmounted."""
        for root in self.watcher.roots:
            try:
                same = _identity(root) == self._root_identity.get(root)
            except OSError:
                same = False
            if not same or not self.watcher.is_alive(root):
                if root not in self.lost_roots:
                    log.warning("%s: the watched folder disappeared", printable(root))
                self.watcher.unwatch(root)
                self.unwatched.pop(root, None)
                self.lost_roots.add(root)

    def _announce(self, result: AddResult) -> None:
        """Called by the writer for each stored file that duplicates something."""
        event = duplicate_event(result.record.fspath, [m.to_json() for m in result.matches])
        leaks = split_leaks(self.config.splits, result.record.path, result.matches)
        if leaks:
            event["leaks"] = leaks  # "leak: val/x.jpg duplicates train/y.jpg"
            log.warning("%s", "; ".join(leaks))
            self.leaks += 1
            self.recent_leaks.append(event)
        self.recent_alerts.append(event)
        self.server.publish(event)
        best = result.matches[0]
        others = f" and {len(result.matches) - 1} more" if len(result.matches) > 1 else ""
        log.info(
            "duplicate: %s ~ %s (%s, distance %d)%s",
            printable(result.record.path),
            printable(best.record.path),
            best.kind,
            best.distance,
            others,
        )

    def uptime_s(self) -> float:
        return time.monotonic() - self.started


def _identity(folder: bytes) -> tuple[int, int]:
    st = os.stat(folder)
    return (st.st_dev, st.st_ino)


def run_daemon(config: Config, roots: Iterable[str | os.PathLike]) -> int:
    """`dupwatch daemon DIR...`: run in the foreground until SIGTERM or SIGINT; exit status."""
    level = getattr(logging, config.log_level.upper(), logging.INFO)
    logging.getLogger("dupwatch").setLevel(level)
    folders = [Path(r).absolute() for r in roots]
    for folder in folders:
        if not folder.is_dir():
            log.error("%s: not a folder", folder)
            return 2
    service = Service(config, folders)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(service.run(handle_signals=True))
    return 0
