"""`dupwatch service install|uninstall`: the systemd user units, rendered for this installation.

The unit texts live here so that an installed wheel can write them; systemd/ holds the same
units rendered for /usr/bin/dupwatch (tests/test_units.py keeps the two equal).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from dupwatch.daemon.cli.settings import settings
from dupwatch.daemon.labelstudio.settings import default_token_file
from dupwatch.index.errors import DupwatchError
from dupwatch.index.store.location import default_index_path

log = logging.getLogger(__name__)

# The first line of every unit `install` writes; `uninstall` removes only files that carry it.
MARKER = "# Written by `dupwatch service install`; `dupwatch service uninstall` removes it."
REFERENCE_COMMAND = ("/usr/bin/dupwatch",)
REFERENCE_INDEX = "%h/.local/share/dupwatch"

# Shared by the units that run dupwatch's own code on the index or the network.
SANDBOX = """\
NoNewPrivileges=yes
CapabilityBoundingSet=
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
ProtectClock=yes
ProtectHostname=yes
ProtectKernelLogs=yes
ProtectKernelModules=yes
ProtectKernelTunables=yes
ProtectControlGroups=yes
ProtectProc=invisible
"""
SYSCALLS = """\
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM
"""

SERVICE = """\
[Unit]
Description=dupwatch: catch duplicate images as they land in watched folders
After=dupwatch.socket

[Service]
Type=notify
NotifyAccess=main
ExecStart={dupwatch} daemon
Environment={index_env}
# Lines on stderr go to the journal as they are written.
Environment=PYTHONUNBUFFERED=1
Restart=on-failure
RestartSec=2
WatchdogSec=60
TimeoutStartSec=infinity
TimeoutStopSec=30
# The socket folder stays across restarts: dupwatch.socket listens in it.
RuntimeDirectory=dupwatch
RuntimeDirectoryMode=0700
RuntimeDirectoryPreserve=yes
UMask=0077

# Read everything, write only the index; no network, no privileges.
ProtectSystem=strict
ProtectHome=read-only
ReadWritePaths={index_rw}
PrivateTmp=yes
PrivateDevices=yes
PrivateNetwork=yes
PrivateIPC=yes
PrivateUsers=yes
RestrictAddressFamilies=AF_UNIX
IPAddressDeny=any
{sandbox}MemoryDenyWriteExecute=yes
PrivateMounts=yes
DevicePolicy=closed
KeyringMode=private
{syscalls}
[Install]
WantedBy=default.target
Also=dupwatch.socket
"""

SOCKET = """\
[Unit]
Description=dupwatch socket: starts the duplicate-image service on first use

[Socket]
ListenStream=%t/dupwatch/dupwatch.sock
SocketMode=0600
DirectoryMode=0700
RemoveOnStop=yes

[Install]
WantedBy=sockets.target
"""

NOTIFY_SERVICE = """\
[Unit]
Description=dupwatch desktop notifications for duplicate images
PartOf=graphical-session.target
After=graphical-session.target dupwatch.socket
Wants=dupwatch.socket

[Service]
Type=exec
ExecStart={dupwatch} notify
Environment=PYTHONUNBUFFERED=1
Restart=on-failure
RestartSec=5
CacheDirectory=dupwatch
CacheDirectoryMode=0700
# Light: an "open folder" click may start a file manager as a child of this service.
NoNewPrivileges=yes
LockPersonality=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
ProtectKernelModules=yes
ProtectKernelTunables=yes
ProtectControlGroups=yes
SystemCallArchitectures=native

[Install]
WantedBy=graphical-session.target
"""

LABELSTUDIO_SERVICE = """\
[Unit]
Description=dupwatch: flag duplicate images' tasks in Label Studio
After=dupwatch.socket network-online.target
Wants=dupwatch.socket

[Service]
Type=exec
# The server and project come from [labelstudio] in the config file, the API token from
# ~/.config/dupwatch/labelstudio-token (mode 0600): never on the command line.
ExecStart={dupwatch} labelstudio
Environment=PYTHONUNBUFFERED=1
Restart=on-failure
RestartSec=10
# Exit 2 is a setting to fix (a wrong token, no project): starting again would not help.
RestartPreventExitStatus=2

# Reads its config and token, talks to the service's socket and to Label Studio; writes nothing.
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
PrivateDevices=yes
PrivateIPC=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
{sandbox}{syscalls}UMask=0077

[Install]
WantedBy=default.target
"""

UNITS = {
    "dupwatch.service": SERVICE,
    "dupwatch.socket": SOCKET,
    "dupwatch-notify.service": NOTIFY_SERVICE,
    "dupwatch-labelstudio.service": LABELSTUDIO_SERVICE,
}
ENABLE_ORDER = ("dupwatch.socket", "dupwatch.service", "dupwatch-notify.service")
DISABLE_ORDER = (*ENABLE_ORDER, "dupwatch-labelstudio.service")


class UnitConflict(DupwatchError):
    """A unit file exists that `dupwatch service install` did not write; it is left alone."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class Installed:
    """What install or uninstall did, and the systemctl lines the user runs next."""

    unit_dir: Path
    paths: list[Path]
    next_steps: list[str]


def user_unit_dir() -> Path:
    """$XDG_CONFIG_HOME/systemd/user, where systemd --user looks for the user's own units."""
    config_home = os.environ.get("XDG_CONFIG_HOME") or os.path.join(Path.home(), ".config")
    return Path(config_home) / "systemd" / "user"


def dupwatch_command() -> list[str]:
    """The command that runs this installation of dupwatch, absolute, for ExecStart=.

    The `dupwatch` script being run wins (a venv's, not the first on PATH); then the script
    installed beside this Python; then PATH; then `python -m dupwatch.daemon.cli.main`.
    """
    running = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    candidates = [
        running if running is not None and running.name == "dupwatch" else None,
        Path(sys.executable).parent / "dupwatch",
        Path(found) if (found := shutil.which("dupwatch")) else None,
    ]
    for candidate in candidates:
        if candidate is not None and os.access(candidate, os.X_OK) and candidate.is_file():
            return [os.path.abspath(candidate)]
    return [sys.executable, "-m", "dupwatch.daemon.cli.main"]


def exec_line(command: list[str]) -> str:
    """`command` as an ExecStart= value: specifiers (%) escaped, words quoted if need be.

    systemd expands $VARIABLES in the arguments but not in the program's path, so only the
    arguments get their $ doubled.

    >>> exec_line(["/opt/my tools/dupwatch", "--config", "/home/a%b/$x.toml"])
    '"/opt/my tools/dupwatch" --config /home/a%%b/$$x.toml'
    """
    program, *arguments = command
    words = [program.replace("%", "%%")]
    words += [arg.replace("%", "%%").replace("$", "$$") for arg in arguments]
    return " ".join(unit_word(word) for word in words)


def unit_word(text: str) -> str:
    """`text` as one word of a unit setting: double-quoted when it has blanks or quotes.

    >>> unit_word("DUPWATCH_INDEX=%h/my labels")
    '"DUPWATCH_INDEX=%h/my labels"'
    """
    if not any(c.isspace() or c in "'\"\\;" for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unit_path_value(path: str) -> str:
    """A path for Environment=/ReadWritePaths=: under the home folder as %h/..., % escaped."""
    home = str(Path.home())
    absolute = os.path.abspath(path)
    if absolute == home or absolute.startswith(home.rstrip("/") + "/"):
        return "%h" + absolute[len(home.rstrip("/")) :].replace("%", "%%")
    return absolute.replace("%", "%%")


def render(name: str, command: list[str], index: str, *, marker: bool = True) -> str:
    """The text of unit `name` running `command` on the index folder `index` (a unit value)."""
    body = UNITS[name].format(
        dupwatch=exec_line(command),
        index_env=unit_word(f"DUPWATCH_INDEX={index}"),
        # "-": a missing folder is no reason to refuse to start; the index reports it clearly.
        index_rw=unit_word(f"-{index}"),
        sandbox=SANDBOX,
        syscalls=SYSCALLS,
    )
    return f"{MARKER}\n{body}" if marker else body


def reference_units() -> dict[str, str]:
    """The units as systemd/ ships them: for /usr/bin/dupwatch and the default index folder."""
    return {
        name: render(name, list(REFERENCE_COMMAND), REFERENCE_INDEX, marker=False) for name in UNITS
    }


def install(
    unit_dir: Path | None = None,
    command: list[str] | None = None,
    *,
    index_dir: Path | None = None,
    config: str | None = None,
    force: bool = False,
) -> Installed:
    """Write the units into `unit_dir` (default: user_unit_dir()) for this installation.

    The units run `command` (default: dupwatch_command()), with `--config FILE` when given, on
    `index_dir` (default: default_index_path()), which is created: the service may write
    there and nowhere else in the home folder. Rewrites units an earlier install wrote;
    raises UnitConflict on any other file of the same name unless `force`.
    """
    unit_dir = unit_dir or user_unit_dir()
    command = list(command or dupwatch_command()) + (["--config", config] if config else [])
    index_dir = Path(index_dir or default_index_path()).absolute()
    targets = {name: unit_dir / name for name in UNITS}
    if not force:
        for path in targets.values():
            if path.exists() and not is_ours(path):
                raise UnitConflict(path, "exists and was not written by dupwatch; --force replaces")
    index_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    unit_dir.mkdir(parents=True, exist_ok=True)
    for name, path in targets.items():
        write_atomically(path, render(name, command, unit_path_value(str(index_dir))))
        log.info("wrote %s", path)
    return Installed(
        unit_dir=unit_dir,
        paths=list(targets.values()),
        next_steps=[
            "systemctl --user daemon-reload",
            "systemctl --user enable --now " + " ".join(ENABLE_ORDER),
            "# for Label Studio: [labelstudio] url and project in the config file, the token",
            f"# in {default_token_file()}, then:",
            "systemctl --user enable --now dupwatch-labelstudio.service",
        ],
    )


def uninstall(unit_dir: Path | None = None) -> Installed:
    """Remove the units an earlier install wrote from `unit_dir`; leave every other file.

    Raises UnitConflict while a unit is still enabled (its symlink would dangle), naming the
    systemctl line that disables it.
    """
    unit_dir = unit_dir or user_unit_dir()
    ours = [unit_dir / name for name in UNITS if is_ours(unit_dir / name)]
    enabled = [link for link in enablement_links(unit_dir) if link.name in UNITS]
    if enabled:
        names = {link.name for link in enabled}
        raise UnitConflict(
            enabled[0],
            "still enabled; run `systemctl --user disable --now "
            + " ".join(name for name in DISABLE_ORDER if name in names)
            + "` first",
        )
    for path in ours:
        path.unlink()
        log.info("removed %s", path)
    steps = ["systemctl --user daemon-reload"] if ours else []
    return Installed(unit_dir=unit_dir, paths=ours, next_steps=steps)


def is_ours(path: Path) -> bool:
    """True when `path` is a unit file install wrote (its first line is MARKER)."""
    try:
        with path.open(encoding="utf-8", errors="replace") as unit:
            return unit.readline().rstrip("\n") == MARKER
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return False


def enablement_links(unit_dir: Path) -> list[Path]:
    """The symlinks `systemctl --user enable` made in unit_dir's *.wants/ and *.requires/."""
    if not unit_dir.is_dir():
        return []
    links = []
    for folder in sorted(unit_dir.iterdir()):
        if folder.is_dir() and folder.suffix in (".wants", ".requires", ".upholds"):
            links.extend(p for p in sorted(folder.iterdir()) if p.is_symlink())
    return links


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` in one rename, so systemd never reads half a unit."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def service_command(args: argparse.Namespace) -> int:
    if args.action == "install":
        config = os.path.abspath(args.config) if args.config else None
        done = install(index_dir=settings(args).index, config=config, force=args.force)
    else:
        done = uninstall()
    verb = "wrote" if args.action == "install" else "removed"
    for path in done.paths:
        print(f"{verb} {path}")
    if not done.paths:
        print(f"no units of dupwatch in {done.unit_dir}")
    if done.next_steps:
        print("now run:\n" + "\n".join(f"  {line}" for line in done.next_steps))
    return 0
