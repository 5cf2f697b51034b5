"""What many tests share: the real `dupwatch` command and a private service running it,
waiting for a condition, and scikit-image's photographs.

Importable from any test module (pytest puts tests/ on the path: pyproject.toml).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import skimage.data
from PIL import Image

from dupwatch.daemon.wire.client import Client, DaemonNotRunning

# The command this Python installed (its venv's bin/ need not be on PATH).
DUPWATCH = (
    shutil.which("dupwatch", path=os.path.dirname(sys.executable))
    or shutil.which("dupwatch")
    or "dupwatch"
)
SKIMAGE_DATA = Path(skimage.data.__file__).parent
TIMEOUT_S = 60.0


def dupwatch(
    *args: str | bytes | os.PathLike,
    index: str | os.PathLike | None = None,
    env: dict[str, str] | None = None,
    text: bool = True,
    check: bool = False,
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    """Run `dupwatch ARGS` as a user would: file names pass as their bytes, `--index` goes
    first when given, `env` is added to this environment. `text=False` keeps the output as
    bytes (names that are not UTF-8); `check` asserts it ran (exit 0 or 1)."""
    chosen = ["--index", os.fspath(index)] if index is not None else []
    result = subprocess.run(
        [DUPWATCH, *chosen, *map(os.fsencode, args)],
        capture_output=True,
        text=text,
        timeout=timeout,
        env=None if env is None else {**os.environ, **env},
    )
    if check:
        assert result.returncode in (0, 1), result.stderr
    return result


def bench_module(name: str) -> Any:
    """A script of tests/bench (not a package) imported by its file, once."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, Path(__file__).parent / "bench" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def photo(name: str) -> Image.Image:
    """One of scikit-image's photographs, as RGB."""
    return Image.open(SKIMAGE_DATA / name).convert("RGB")


def wait_for(condition: Callable[[], Any], timeout_s: float = TIMEOUT_S, what: str = "") -> Any:
    """Poll `condition` until it returns something true (returned); fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (a service's forkserver and hashing processes)."""
    found, pending = [], [pid]
    while pending:
        parent = str(pending.pop())
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", parent], capture_output=True)
        children = [int(p) for p in out.stdout.split()]
        found += children
        pending += children
    return found


class Daemon:
    """A private `dupwatch daemon` in `base`: its index (`base`/idx unless given), socket,
    config file and one watched folder (`root`), with no systemd in its environment."""

    def __init__(self, base: Path, *, index: Path | None = None, config: str = "workers = 2\n"):
        self.base = base
        self.root = base / "w"
        self.root.mkdir(exist_ok=True)
        self.index = index if index is not None else base / "idx"
        self.socket = base / "s.sock"
        self.config = base / "config.toml"
        self.config.write_text(config)
        self.log = base / "daemon.log"
        self.env = {
            **os.environ,
            "DUPWATCH_INDEX": str(self.index),
            "DUPWATCH_SOCKET": str(self.socket),
            "XDG_CONFIG_HOME": str(base / "xdg-config"),
        }
        self.env.pop("NOTIFY_SOCKET", None)
        self.env.pop("WATCHDOG_USEC", None)
        self.process: subprocess.Popen[bytes] | None = None

    def command(self, *args: str) -> list[str]:
        return [DUPWATCH, "--config", str(self.config), *args]

    def start(self, *, prefix: list[str] | None = None, wait: bool = True, **env: str) -> None:
        """Start it (under `prefix`, with `env` added); `wait` until it is READY."""
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [*(prefix or []), *self.command("daemon", str(self.root))],
                env={**self.env, **env},
                stdout=log,
                stderr=log,
            )
        if wait:
            wait_for(self.is_ready, TIMEOUT_S, "the service to be ready")

    def status(self) -> dict[str, Any]:
        """Raises DaemonNotRunning (or OSError) while it does not answer."""
        with Client(self.socket, timeout_s=30) as client:
            return client.call("status")

    def is_ready(self) -> bool:
        """Whether it answers as READY; fails at once when it has exited."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the service exited {self.process.returncode}: {self.output()}")
        try:
            return self.status()["state"] == "ready"
        except (DaemonNotRunning, OSError):
            return False

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Another `dupwatch` command with the same index, socket and config."""
        return subprocess.run(
            self.command(*args), env=self.env, capture_output=True, text=True, timeout=TIMEOUT_S
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM and wait: the service finishes its file in hand and removes the socket."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(TIMEOUT_S)
        self.process = None
        return code

    def kill(self) -> list[int]:
        """SIGKILL; returns its forkserver and hashing processes, which must end with it."""
        assert self.process is not None
        helpers = descendants(self.process.pid)
        self.process.kill()
        self.process.wait(TIMEOUT_S)
        self.process = None
        return helpers
