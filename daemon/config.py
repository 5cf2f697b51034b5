"""The service's settings: a TOML config file, the environment and XDG paths.

Precedence, highest first: command-line options, environment (DUPWATCH_INDEX, DUPWATCH_SOCKET),
the config file, built-in defaults.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dupwatch.daemon.splits import check_splits
from dupwatch.index.errors import DupwatchError
from dupwatch.index.fingerprint.transforms import TransformError, parse_transforms
from dupwatch.index.folders import DEFAULT_IGNORE
from dupwatch.index.hashing.limits import HASH_TIMEOUT_S
from dupwatch.index.matches import MAX_RADIUS

log = logging.getLogger(__name__)

SOCKET_NAME = "dupwatch.sock"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# More hashing processes than this only fight over the cores and the memory (each may use up
# to 4 GiB of address space).
MAX_WORKERS = 64
# How a Dask scheduler may be reached (distributed's comm backends that take HOST:PORT).
CLUSTER_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")


class ConfigError(DupwatchError):
    """The config file (or a setting) is wrong; the message names the file and the key."""


@dataclass(frozen=True)
class LabelStudioConfig:
    """The `[labelstudio]` table of the config file (all optional)."""

    url: str | None = None
    project: int | None = None
    token_file: Path | None = None


def check_project(project: int) -> int:
    """A Label Studio project id (ids start at 1); raises ValueError."""
    if project <= 0:
        raise ValueError(f"project must be a project id (1 or above), not {project}")
    return project


def check_server_url(url: str) -> str:
    """A Label Studio server's address by its form; raises ValueError."""
    scheme, _, rest = url.partition("://")
    if scheme not in ("http", "https") or not rest.strip("/"):
        raise ValueError(f"url: not a server address: {url!r} (e.g. http://localhost:8080)")
    return url


def check_labelstudio(file: Path | str, value: object) -> LabelStudioConfig:
    """The `[labelstudio]` table of `file` checked; raises DupwatchError naming the key."""
    if not isinstance(value, dict):
        raise DupwatchError(f"{file}: labelstudio must be a table (url, project, token_file)")
    for key, item in value.items():
        expected = LABELSTUDIO_KEYS.get(key)
        if expected is None:
            raise DupwatchError(
                f"{file}: unknown setting labelstudio.{key}; known: {', '.join(LABELSTUDIO_KEYS)}"
            )
        if not isinstance(item, expected) or isinstance(item, bool):
            raise DupwatchError(f"{file}: labelstudio.{key} has the wrong type")
    try:
        if "project" in value:
            check_project(value["project"])
        if "url" in value:
            check_server_url(value["url"])
    except ValueError as error:
        raise DupwatchError(f"{file}: labelstudio.{error}") from None
    token_file = value.get("token_file")
    return LabelStudioConfig(
        url=value.get("url"),
        project=value.get("project"),
        token_file=(Path(file).parent / os.path.expanduser(token_file)).absolute()
        if token_file
        else None,
    )


@dataclass(frozen=True)
class Config:
    """Everything the service and its commands need to know; paths are absolute."""

    index: Path | None = None  # None: dupwatch.index.default_index_path()
    socket: Path | None = None  # None: default_socket_path()
    radius: int | None = None  # None: the index's own default
    transforms: tuple[str, ...] = ()  # also match turned/mirrored/cropped copies
    roots: tuple[Path, ...] = ()  # watched in addition to the roots stored in the index
    # Named folders of a dataset split (train, val, ...): a duplicate across two is a leak.
    splits: dict[str, Path] = field(default_factory=dict)
    sidecars: tuple[str, ...] | None = None  # label files that travel with their image
    ignore: tuple[str, ...] = DEFAULT_IGNORE
    workers: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))
    subscriber_queue: int = 1000
    # Folders inotify cannot watch (watch limit reached) are reconciled this often.
    rescan_interval_s: float = 30.0
    # A file not fingerprinted within this is skipped and reported (a decoder gone astray).
    hash_timeout_s: float = HASH_TIMEOUT_S
    log_level: str = "INFO"
    # A Dask scheduler ("tcp://host:8786"): scan and reindex hash on its workers.
    cluster: str | None = None
    labelstudio: LabelStudioConfig = field(default_factory=LabelStudioConfig)  # the bridge's

    def replace(self, **changes: Any) -> Config:
        """A copy with `changes` applied, ignoring the ones that are None (paths made absolute)."""
        given = {k: v for k, v in changes.items() if v is not None}
        for key in ("index", "socket"):
            if key in given:
                given[key] = Path(given[key]).absolute()
        return dataclasses.replace(self, **given)

    @property
    def socket_path(self) -> Path:
        """The socket to serve or connect to."""
        return self.socket if self.socket is not None else default_socket_path()


def default_config_path() -> Path:
    """$XDG_CONFIG_HOME/dupwatch/config.toml (~/.config when unset)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(Path.home(), ".config")
    return Path(base) / "dupwatch" / "config.toml"


def runtime_dir() -> Path:
    """The per-user folder for the socket: $XDG_RUNTIME_DIR/dupwatch, else a private /tmp one.

    Without XDG_RUNTIME_DIR (cron, su, containers) /run/user/UID is used when it exists and is
    ours, else /tmp/dupwatch-UID, which `ensure_private_dir` checks is ours and 0700.
    """
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "dupwatch"
    uid = os.getuid()
    run_user = Path(f"/run/user/{uid}")
    try:
        if run_user.stat().st_uid == uid:
            return run_user / "dupwatch"
    except OSError:
        pass
    return Path(f"/tmp/dupwatch-{uid}")


def default_socket_path() -> Path:
    """$DUPWATCH_SOCKET, else runtime_dir()/dupwatch.sock."""
    env = os.environ.get("DUPWATCH_SOCKET")
    return Path(env).absolute() if env else runtime_dir() / SOCKET_NAME


def ensure_private_dir(folder: Path) -> None:
    """Create `folder` 0700 if needed; refuse one owned by another user or a symlink.

    Raises ConfigError naming the folder and the problem.
    """
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(folder)
    except OSError as exc:
        raise ConfigError(f"{folder}: cannot create the socket folder: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{folder}: not a folder (a symlink or file is in the way)")
    if st.st_uid != os.getuid():
        raise ConfigError(f"{folder}: owned by uid {st.st_uid}, not by you (uid {os.getuid()})")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(folder, 0o700)


SETTINGS: dict[str, type | tuple[type, ...]] = {
    "index": str,
    "socket": str,
    "radius": int,
    "transforms": list,
    "watch": list,
    "splits": dict,
    "sidecars": list,
    "ignore": list,
    "workers": int,
    "subscriber_queue": int,
    "rescan_interval_s": (int, float),
    "hash_timeout_s": (int, float),
    "log_level": str,
    "cluster": str,
    "labelstudio": dict,  # [labelstudio]: url, project, token_file
}
LABELSTUDIO_KEYS = {"url": str, "project": int, "token_file": str}


def load_config(path: Path | str | None = None) -> Config:
    """Read the config file (`path`, else the default one when it exists) over the defaults.

    Raises ConfigError naming the file and the key for a missing explicit file, bad TOML, an
    unknown key or a value of the wrong type. Environment variables override the file.
    """
    explicit = path is not None
    file = Path(path) if path is not None else default_config_path()
    data: dict[str, Any] = {}
    if explicit or file.exists():
        data = _read_toml(file)
    values = _check(file, data)
    config = Config(**values)
    return config.replace(
        index=_env_path("DUPWATCH_INDEX"),
        socket=_env_path("DUPWATCH_SOCKET"),
    )


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        with open(file, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{file}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None


def _check(file: Path, data: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in data.items():
        expected = SETTINGS.get(key)
        if expected is None:
            raise ConfigError(f"{file}: unknown setting {key!r}; known: {', '.join(SETTINGS)}")
        if not isinstance(value, expected) or isinstance(value, bool):
            raise ConfigError(f"{file}: {key} has the wrong type ({type(value).__name__})")
        values[key] = value
    return _convert(file, values)


def _convert(file: Path, values: dict[str, Any]) -> dict[str, Any]:
    base = file.parent
    for key in ("watch", "ignore", "sidecars", "transforms"):
        if key in values:
            _check_strings(file, key, values[key])
    for key in ("index", "socket"):
        if key in values:
            if not values[key]:
                raise ConfigError(f"{file}: {key} is empty; leave it out for the default")
            values[key] = _resolve(base, values[key])
    if "watch" in values:
        values["roots"] = tuple(_resolve(base, p) for p in values.pop("watch"))
    if "ignore" in values:
        values["ignore"] = tuple(values["ignore"])
    if "splits" in values:
        try:
            values["splits"] = check_splits(file, values["splits"])
        except DupwatchError as error:
            raise ConfigError(str(error)) from None
    if "labelstudio" in values:
        try:
            values["labelstudio"] = check_labelstudio(file, values["labelstudio"])
        except DupwatchError as error:
            raise ConfigError(str(error)) from None
    if "sidecars" in values:
        values["sidecars"] = _check_sidecars(file, values["sidecars"])
    if "transforms" in values:
        try:
            values["transforms"] = tuple(sorted(parse_transforms(values["transforms"])))
        except TransformError as error:
            raise ConfigError(f"{file}: transforms: {error}") from None
    for key in ("workers", "subscriber_queue", "rescan_interval_s", "hash_timeout_s"):
        if key in values and values[key] <= 0:
            raise ConfigError(f"{file}: {key} must be positive, not {values[key]}")
    if values.get("workers", 1) > MAX_WORKERS:
        workers = values["workers"]
        raise ConfigError(f"{file}: workers must be from 1 to {MAX_WORKERS}, not {workers}")
    if "radius" in values and not 0 <= values["radius"] <= MAX_RADIUS:
        raise ConfigError(f"{file}: radius must be from 0 to {MAX_RADIUS}, not {values['radius']}")
    if "cluster" in values:
        try:
            check_cluster(values["cluster"])
        except ValueError as error:
            raise ConfigError(f"{file}: cluster: {error}") from None
    if "log_level" in values:
        level = values["log_level"].upper()
        if level not in LOG_LEVELS:
            choices = ", ".join(LOG_LEVELS)
            raise ConfigError(f"{file}: log_level must be one of {choices}, not {level!r}")
        values["log_level"] = level
    return values


def check_cluster(address: str) -> str:
    """A Dask scheduler's address, [SCHEME://]HOST:PORT (tcp when the scheme is left out),
    checked by its form only (nothing is imported or reached); raises ValueError."""
    scheme, separator, location = address.rpartition("://")
    host, colon, port = location.rpartition(":")
    if (
        (separator and scheme not in CLUSTER_SCHEMES)
        or not colon
        or not host.strip("[]")
        or not port.isdigit()
        or not 0 < int(port) < 65536
    ):
        raise ValueError(
            f"not a Dask scheduler address (SCHEME://HOST:PORT, e.g. tcp://scheduler:8786): "
            f"{address!r}"
        )
    return address


def _check_strings(file: Path, key: str, items: list[Any]) -> None:
    for item in items:
        if not isinstance(item, str) or not item:
            raise ConfigError(f"{file}: {key} must hold names (strings), not {item!r}")


def _check_sidecars(file: Path, patterns: list[str]) -> tuple[str, ...]:
    from dupwatch.index.cleanup.sidecars import check_pattern  # reads XML: loaded when used

    try:
        return tuple(check_pattern(p) for p in patterns)
    except ValueError as error:
        raise ConfigError(f"{file}: sidecars: {error}") from None


def _resolve(base: Path, value: str) -> Path:
    """A config path: ~ expanded, relative to the config file's folder."""
    return (base / os.path.expanduser(value)).absolute()


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).absolute() if value else None
