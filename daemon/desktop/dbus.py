"""The desktop over the D-Bus session bus (jeepney, pure Python): the notification server
(org.freedesktop.Notifications) and the file manager (org.freedesktop.FileManager1)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from jeepney import (
    DBusAddress,
    DBusErrorResponse,
    HeaderFields,
    MatchRule,
    Message,
    MessageType,
    new_method_call,
)
from jeepney.bus_messages import message_bus
from jeepney.io.asyncio import DBusConnection, open_dbus_connection

from dupwatch.index.errors import DupwatchError

log = logging.getLogger(__name__)

APP_NAME = "dupwatch"
CALL_TIMEOUT_S = 10.0
NOTIFICATIONS = DBusAddress(
    "/org/freedesktop/Notifications",
    bus_name="org.freedesktop.Notifications",
    interface="org.freedesktop.Notifications",
)
FILE_MANAGER = DBusAddress(
    "/org/freedesktop/FileManager1",
    bus_name="org.freedesktop.FileManager1",
    interface="org.freedesktop.FileManager1",
)


class NoSessionBus(DupwatchError):
    """There is no D-Bus session bus to show notifications on."""


class BusUnavailable(DupwatchError):
    """The session bus did not answer (not running, went away, or refused us)."""

    def __init__(self, address: str, cause: str) -> None:
        self.address = address
        self.cause = cause
        super().__init__(f"the D-Bus session bus at {address} is unreachable: {cause}")


def session_bus_address() -> str:
    """$DBUS_SESSION_BUS_ADDRESS, else $XDG_RUNTIME_DIR/bus (as sd-bus and libdbus do).

    Raises NoSessionBus, saying what was looked for, when neither is there.
    """
    address = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    if address:
        return address
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime, "bus").is_socket():
        return f"unix:path={Path(runtime, 'bus')}"
    where = f"{runtime}/bus does not exist" if runtime else "XDG_RUNTIME_DIR is unset too"
    raise NoSessionBus(
        f"no D-Bus session bus: DBUS_SESSION_BUS_ADDRESS is unset and {where}; run "
        "`dupwatch notify` inside the desktop session (or under `dbus-run-session`)"
    )


def is_bus_error(error: DBusErrorResponse) -> bool:
    """An error from the bus itself, not the notification server: the name has no owner, or
    starting one failed. The notification may be shown when a server is back."""
    return error.name.startswith("org.freedesktop.DBus.Error.")


def is_server_change(message: Message) -> bool:
    """The bus's NameOwnerChanged for the notification server's name."""
    fields = message.header.fields
    return (
        fields.get(HeaderFields.interface) == message_bus.interface
        and fields.get(HeaderFields.member) == "NameOwnerChanged"
        and message.body[:1] == (NOTIFICATIONS.bus_name,)
    )


class Bus:
    """One session-bus connection: calls with replies, signals into `inbox`, `lost` at the end."""

    def __init__(self, address: str, conn: DBusConnection, inbox: asyncio.Queue) -> None:
        self.address = address
        self._conn = conn
        # Calls waiting for their reply, by serial. (jeepney's ReplyMatcher fails a call
        # waiting when the connection drops with a KeyError instead.)
        self._replies: dict[int, asyncio.Future[Message]] = {}
        self.lost = asyncio.Event()
        self._receiver = asyncio.create_task(self._receive(inbox))

    @classmethod
    async def open(cls, address: str, inbox: asyncio.Queue) -> Bus:
        """Connect and subscribe to the notification server's signals; raises BusUnavailable."""
        try:
            conn = await asyncio.wait_for(open_dbus_connection(address), CALL_TIMEOUT_S)
        except (OSError, EOFError, RuntimeError, ValueError, TimeoutError) as error:
            raise BusUnavailable(address, str(error) or type(error).__name__) from None
        bus = cls(address, conn, inbox)
        rule = MatchRule(
            type="signal", interface=NOTIFICATIONS.interface, path=NOTIFICATIONS.object_path
        )
        await bus.call(message_bus.AddMatch(rule))
        # And to the notification server coming and going.
        owner = MatchRule(
            type="signal",
            sender=message_bus.bus_name,
            interface=message_bus.interface,
            member="NameOwnerChanged",
        )
        owner.add_arg_condition(0, NOTIFICATIONS.bus_name)
        await bus.call(message_bus.AddMatch(owner))
        return bus

    async def call(self, message: Message) -> tuple[Any, ...]:
        """Send a method call, return the reply's body; raises DBusErrorResponse, BusUnavailable."""
        if self.lost.is_set():
            raise BusUnavailable(self.address, "connection closed")
        serial = next(self._conn.outgoing_serial)
        future = self._replies[serial] = asyncio.get_running_loop().create_future()
        try:
            await self._conn.send(message, serial=serial)
            reply = await asyncio.wait_for(future, CALL_TIMEOUT_S)
        except (OSError, TimeoutError) as error:
            raise BusUnavailable(self.address, str(error) or "no reply") from None
        finally:
            self._replies.pop(serial, None)
        if reply.header.message_type == MessageType.error:
            raise DBusErrorResponse(reply)
        return reply.body

    async def _receive(self, inbox: asyncio.Queue) -> None:
        try:
            while True:
                message = await self._conn.receive()
                if message.header.message_type == MessageType.signal:
                    inbox.put_nowait(("signal", message))
                else:
                    serial = message.header.fields.get(HeaderFields.reply_serial)
                    waiting = self._replies.get(serial)
                    if waiting is not None and not waiting.done():
                        waiting.set_result(message)
        except (EOFError, OSError):
            pass
        finally:
            for waiting in self._replies.values():
                if not waiting.done():
                    waiting.set_exception(BusUnavailable(self.address, "connection closed"))
            self.lost.set()
            inbox.put_nowait(("lost", self))

    async def close(self) -> None:
        self._receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await self._receiver
        with contextlib.suppress(OSError):
            await self._conn.close()


class Desktop:
    """The notification server, and the file manager for "open folder", over one Bus."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.capabilities: frozenset[str] = frozenset()
        self.present: bool | None = None  # whether a notification server answers; None: unasked

    async def load_capabilities(self) -> None:
        """Ask the notification server what it shows; raises DBusErrorResponse when the bus
        has none (nobody owns the name, or the one it started on demand failed)."""
        (capabilities,) = await self.bus.call(new_method_call(NOTIFICATIONS, "GetCapabilities"))
        self.capabilities = frozenset(capabilities)

    @property
    def markup(self) -> bool:
        return "body-markup" in self.capabilities

    async def notify(
        self, summary: str, body: str, *, image: Path | None = None, replaces: int = 0
    ) -> int:
        """Show (or, with `replaces`, redraw) a notification; returns its id."""
        hints: dict[str, tuple[str, Any]] = {"urgency": ("y", 1)}
        if image is not None:
            hints["image-path"] = ("s", image.as_uri())
        actions = ["default", "Open folder"] if "actions" in self.capabilities else []
        icon = str(image) if image is not None else ""
        args = (APP_NAME, replaces, icon, summary, body, actions, hints, -1)
        message = new_method_call(NOTIFICATIONS, "Notify", "susssasa{sv}i", args)
        (notification_id,) = await self.bus.call(message)
        return int(notification_id)

    async def close(self, notification_id: int) -> None:
        with contextlib.suppress(DBusErrorResponse):
            await self.bus.call(
                new_method_call(NOTIFICATIONS, "CloseNotification", "u", (notification_id,))
            )

    async def show(self, target: Path) -> None:
        """Show `target` in the file manager: a file selected in its folder, or a folder.

        Through org.freedesktop.FileManager1, which starts the file manager outside this
        service; `xdg-open` on the folder where no file manager offers that interface.
        """
        method = "ShowFolders" if target.is_dir() else "ShowItems"
        try:
            await self.bus.call(
                new_method_call(FILE_MANAGER, method, "ass", ([target.as_uri()], ""))
            )
            return
        except DBusErrorResponse as error:
            log.info("no FileManager1 on the session bus (%s); using xdg-open", error.name)
        folder = target if target.is_dir() else target.parent
        try:
            subprocess.Popen(
                ["xdg-open", str(folder)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as error:
            log.warning("cannot open %s: xdg-open: %s", folder, error)
