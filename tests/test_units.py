"""The systemd units: `dupwatch service install|uninstall` for real, checked by systemd-analyze."""

from __future__ import annotations

import contextlib
import doctest
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dupwatch.daemon.cli import units
from dupwatch.daemon.cli.units import UNITS, UnitConflict
from dupwatch.daemon.wire.client import Client, call
from dupwatch.index.errors import DupwatchError

from support import DUPWATCH

REPO = Path(__file__).resolve().parent.parent
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze (Debian: systemd)")
# Lower is safer; 0.6 when this was written. A rise means a hardening setting was lost.
MAX_EXPOSURE = 1.0


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """An environment whose XDG folders are private temporary ones."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    return {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_RUNTIME_DIR": str(runtime),
    }


def dupwatch(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DUPWATCH, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def unit_dir(env: dict[str, str]) -> Path:
    return Path(env["XDG_CONFIG_HOME"]) / "systemd" / "user"


def verify(paths: list[Path], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # systemd-analyze exits 0 on an unknown key and only warns: any output is a failure.
    return subprocess.run(
        [ANALYZE, "--user", "verify", *map(str, paths)],
        env=env,
        cwd=paths[0].parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_shipped_units_are_the_rendered_ones() -> None:
    for name, text in units.reference_units().items():
        shipped = (REPO / "systemd" / name).read_text()
        assert shipped == text, f"systemd/{name} differs from daemon/units.py; regenerate it"


def test_doctests_pass() -> None:
    result = doctest.testmod(units)
    assert result.attempted > 0 and result.failed == 0


def test_install_writes_units_for_the_installed_command(home: dict[str, str]) -> None:
    result = dupwatch("service", "install", env=home)
    assert result.returncode == 0, result.stderr
    written = sorted(unit_dir(home).iterdir())
    assert [p.name for p in written] == sorted(UNITS)
    assert "systemctl --user daemon-reload" in result.stdout
    enable = "systemctl --user enable --now dupwatch.socket dupwatch.service"
    assert enable in result.stdout
    service = (unit_dir(home) / "dupwatch.service").read_text()
    exec_start = re.search(r"^ExecStart=(\S+) daemon$", service, re.M)
    assert exec_start is not None
    assert os.access(exec_start.group(1), os.X_OK)
    assert Path(exec_start.group(1)).name == "dupwatch"
    index = Path(home["XDG_DATA_HOME"]) / "dupwatch"
    assert f"Environment=DUPWATCH_INDEX={index}\n" in service
    assert f"ReadWritePaths=-{index}\n" in service
    assert index.is_dir(), "install creates the index folder the sandbox lets it write"


@needs_analyze
def test_installed_units_verify_cleanly(home: dict[str, str]) -> None:
    assert dupwatch("service", "install", env=home).returncode == 0
    paths = [unit_dir(home) / name for name in UNITS]
    result = verify(paths, home)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_analyze
def test_verify_catches_a_broken_unit(home: dict[str, str]) -> None:
    """The check above is not vacuous: a misspelt key and a missing program are reported."""
    assert dupwatch("service", "install", env=home).returncode == 0
    service = unit_dir(home) / "dupwatch.service"
    text = service.read_text().replace("PrivateTmp=yes", "PrivateTmpp=yes")
    service.write_text(
        re.sub(r"^ExecStart=\S+", "ExecStart=/nonexistent/dupwatch", text, flags=re.M)
    )
    output = verify([service], home)
    assert "Unknown key 'PrivateTmpp'" in output.stderr
    assert "/nonexistent/dupwatch is not executable" in output.stderr


@needs_analyze
def test_quoting_survives_spaces_percent_and_dollar(home: dict[str, str], tmp_path: Path) -> None:
    tools = tmp_path / "my tools $HOME 100%"
    tools.mkdir()
    (tools / "dupwatch").symlink_to(os.path.realpath(DUPWATCH))
    index = tmp_path / "my index"
    target = unit_dir(home)
    units.install(target, [str(tools / "dupwatch")], index_dir=index, config=None)
    result = verify([target / name for name in UNITS], home)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    service = (target / "dupwatch.service").read_text()
    assert f'ExecStart="{tools / "dupwatch"}" daemon'.replace("%", "%%") in service
    assert f'Environment="DUPWATCH_INDEX={index}"' in service


@needs_analyze
@pytest.mark.parametrize(
    ("unit", "most"), [("dupwatch.service", MAX_EXPOSURE), ("dupwatch-labelstudio.service", 2.5)]
)
def test_service_exposure_stays_low(home: dict[str, str], unit: str, most: float) -> None:
    """The bridge needs the network (Label Studio) and so scores higher than the service."""
    assert dupwatch("service", "install", env=home).returncode == 0
    result = subprocess.run(
        [ANALYZE, "security", "--user", "--offline=true", "--no-pager", unit],
        env=home,
        cwd=unit_dir(home),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(rf"Overall exposure level for {unit}: ([\d.]+)", result.stdout)
    assert found is not None, result.stdout + result.stderr
    print(f"{unit}: exposure {found.group(1)}")
    assert float(found.group(1)) <= most, result.stdout


def test_install_passes_the_config_file_on(home: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "dupwatch.toml"
    config.write_text("radius = 6\n")
    assert dupwatch("--config", str(config), "service", "install", env=home).returncode == 0
    for name in ("dupwatch.service", "dupwatch-notify.service"):
        assert f" --config {config} " in (unit_dir(home) / name).read_text()


def test_install_leaves_a_foreign_unit_alone(home: dict[str, str]) -> None:
    target = unit_dir(home)
    target.mkdir(parents=True)
    mine = target / "dupwatch.service"
    mine.write_text("[Service]\nExecStart=/usr/local/bin/my-own-dupwatch\n")
    result = dupwatch("service", "install", env=home)
    assert result.returncode == 2
    assert f"{mine}: exists and was not written by dupwatch; --force replaces" in result.stderr
    assert mine.read_text().startswith("[Service]")
    assert not (target / "dupwatch.socket").exists()
    assert dupwatch("service", "install", "--force", env=home).returncode == 0
    assert units.is_ours(mine)


def test_reinstall_rewrites_its_own_units(home: dict[str, str]) -> None:
    target = unit_dir(home)
    assert dupwatch("service", "install", env=home).returncode == 0
    (target / "dupwatch.socket").write_text(units.MARKER + "\n[Socket]\nListenStream=/old\n")
    assert dupwatch("service", "install", env=home).returncode == 0
    assert "%t/dupwatch/dupwatch.sock" in (target / "dupwatch.socket").read_text()


def test_uninstall_removes_only_what_install_wrote(home: dict[str, str]) -> None:
    target = unit_dir(home)
    assert dupwatch("service", "install", env=home).returncode == 0
    own = target / "backup.service"
    own.write_text("[Service]\nExecStart=/bin/true\n")
    drop_in = target / "dupwatch.service.d" / "override.conf"
    drop_in.parent.mkdir()
    drop_in.write_text("[Service]\nNice=5\n")
    result = dupwatch("service", "uninstall", env=home)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in target.iterdir()) == ["backup.service", "dupwatch.service.d"]
    assert drop_in.exists() and own.exists()
    assert result.stdout.count("removed ") == len(UNITS)
    again = dupwatch("service", "uninstall", env=home)
    assert again.returncode == 0 and f"no units of dupwatch in {target}" in again.stdout


def test_uninstall_refuses_while_enabled(home: dict[str, str]) -> None:
    target = unit_dir(home)
    assert dupwatch("service", "install", env=home).returncode == 0
    wants = target / "sockets.target.wants"
    wants.mkdir()
    (wants / "dupwatch.socket").symlink_to(target / "dupwatch.socket")
    result = dupwatch("service", "uninstall", env=home)
    assert result.returncode == 2
    assert "still enabled; run `systemctl --user disable --now dupwatch.socket" in result.stderr
    assert all((target / name).exists() for name in UNITS)


def test_exec_command_prefers_the_running_script(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", [os.path.realpath(DUPWATCH), "service", "install"])
    assert units.dupwatch_command() == [os.path.realpath(DUPWATCH)]


def test_uninstall_with_no_folder_is_a_no_op(tmp_path: Path) -> None:
    done = units.uninstall(tmp_path / "absent")
    assert done.paths == [] and done.next_steps == []


def test_unit_conflict_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "dupwatch.socket").write_text("[Socket]\nListenStream=/x\n")
    with pytest.raises(UnitConflict, match="dupwatch.socket: exists and was not written"):
        units.install(tmp_path, ["/bin/true"], index_dir=tmp_path / "index")


# The units under a real systemd --user manager


MANAGER_SCRIPT = """
# A cgroup of its own in every hierarchy: two managers in one would kill each other's units.
for hierarchy in /sys/fs/cgroup/*/; do
    mkdir -p "$hierarchy$CGROUP_NAME" 2>/dev/null &&
        echo $$ > "$hierarchy$CGROUP_NAME/cgroup.procs" 2>/dev/null || true
done
set -e
mount --make-rprivate /
mount --bind /run /run
mount -t tmpfs tmpfs /run/systemd
mkdir -p /run/systemd/system /run/systemd/inaccessible
cd /run/systemd/inaccessible
mkdir dir; touch reg; mkfifo fifo; mknod chr c 0 0; mknod blk b 0 0
python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind("sock")'
chmod 0 dir reg fifo chr blk sock
cd /
exec /lib/systemd/systemd --user
"""


class UserManager:
    """A private `systemd --user`, as a desktop session has, for trying the units for real.

    It runs in a mount namespace of its own where /run/systemd/system exists (systemd --user
    will not start without it), /run is a mount point (as on a booted machine; MountAPIVFS=
    would hide it otherwise) and /run/systemd/inaccessible holds the nodes PID 1 would have
    made for masking paths. Its runtime folder is under /run: PrivateTmp= hides /tmp.
    """

    def __init__(self, config_home: Path) -> None:
        self.runtime = Path(tempfile.mkdtemp(dir="/run", prefix="dwsd"))
        self.env = {
            **os.environ,
            "XDG_RUNTIME_DIR": str(self.runtime),
            "XDG_CONFIG_HOME": str(config_home),
        }
        self.env.pop("DBUS_SESSION_BUS_ADDRESS", None)
        self.process = subprocess.Popen(
            ["unshare", "--mount", "sh", "-c", MANAGER_SCRIPT],
            env={**self.env, "CGROUP_NAME": self.runtime.name},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(lambda: self.systemctl("list-units").returncode == 0, "systemd --user")

    def systemctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["systemctl", "--user", "--no-pager", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def property(self, unit: str, name: str) -> str:
        return self.systemctl("show", "-p", name, "--value", unit).stdout.strip()

    def close(self) -> None:
        try:
            self.systemctl("stop", "dupwatch.service", "dupwatch.socket")
        finally:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
            for cgroup in Path("/sys/fs/cgroup").glob(f"*/{self.runtime.name}"):
                for folder in sorted(cgroup.glob("**/"), key=lambda p: -len(p.parts)):
                    with contextlib.suppress(OSError):
                        folder.rmdir()
            shutil.rmtree(self.runtime, ignore_errors=True)


def wait_until(condition: Callable[[], Any], what: str, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)
    return value


can_run_a_user_manager = pytest.mark.skipif(
    os.geteuid() != 0
    or not os.path.exists("/lib/systemd/systemd")
    or not shutil.which("unshare")
    or not shutil.which("systemctl"),
    reason="needs root (for a private mount namespace), systemd and util-linux",
)


@pytest.fixture
def user_manager(tmp_path: Path) -> Iterator[UserManager]:
    manager = UserManager(tmp_path / "config")
    yield manager
    manager.close()


@can_run_a_user_manager
def test_hardened_service_runs_under_systemd(user_manager: UserManager, photo: Any) -> None:
    """Socket activation, READY, the watchdog and an alert, inside the unit's sandbox."""
    env = user_manager.env
    root = user_manager.runtime  # readable inside the sandbox, unlike /tmp
    index = root / "index"
    result = dupwatch("service", "install", env={**env, "DUPWATCH_INDEX": str(index)})
    assert result.returncode == 0, result.stderr
    # There is no journal here: keep the service's log in a file, and fail instead of retrying.
    drop_in = unit_dir(env) / "dupwatch.service.d" / "test.conf"
    drop_in.parent.mkdir()
    test_settings = f"[Service]\nStandardError=append:{root}/daemon.log\nRestart=no\n"
    if Path(DUPWATCH).resolve().is_relative_to("/tmp"):
        # A checkout under /tmp (as in CI) is invisible behind the unit's PrivateTmp=yes: use
        # the real /tmp, writable as the private one is (the forkserver puts its socket there).
        test_settings += "PrivateTmp=no\nReadWritePaths=/tmp\n"
    drop_in.write_text(test_settings)
    labels = root / "labels"
    labels.mkdir()
    picture = photo.image("chelsea.png")
    picture.save(labels / "cat_0001.jpg", quality=90)
    assert user_manager.systemctl("daemon-reload").returncode == 0
    assert user_manager.systemctl("start", "dupwatch.socket").returncode == 0
    assert user_manager.property("dupwatch.service", "ActiveState") == "inactive"

    # The first connection starts the service (socket activation).
    watch = dupwatch("watch", str(labels), env=env)
    log = root / "daemon.log"
    assert watch.returncode == 0, watch.stderr + (log.read_text() if log.exists() else "")
    state = user_manager.property("dupwatch.service", "ActiveState")
    assert state in ("activating", "active"), log.read_text() if log.exists() else "no log"
    wait_until(
        lambda: user_manager.property("dupwatch.service", "ActiveState") == "active",
        "READY=1",
    )
    assert user_manager.property("dupwatch.service", "StatusText").startswith("watching ")
    assert user_manager.property("dupwatch.service", "WatchdogUSec") == "1min"
    assert user_manager.property("dupwatch.service", "WatchdogTimestampMonotonic") != "0"
    pid = user_manager.property("dupwatch.service", "MainPID")
    status = Path(f"/proc/{pid}/status").read_text()
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M)
    assert re.search(r"^Seccomp:\s+2$", status, re.M), "SystemCallFilter= is in force"

    alerts: queue.Queue[dict[str, Any]] = queue.Queue()
    socket_path = root / "dupwatch" / "dupwatch.sock"

    def follow() -> None:
        with contextlib.suppress(OSError, DupwatchError):
            for event in Client(socket_path).subscribe():
                alerts.put(event)

    threading.Thread(target=follow, daemon=True).start()
    wait_until(lambda: call("status", socket_path)["subscribers"] == 1, "the subscription")
    wait_until(lambda: call("status", socket_path)["files"] == 1, "the original to be indexed")
    picture.resize((300, 200)).save(labels / "cat_0412.jpg", quality=80)
    try:
        event = alerts.get(timeout=60)
    except queue.Empty:
        state = call("status", socket_path)
        raise AssertionError(f"no alert; status {state}; log:\n{log.read_text()}") from None
    assert event["event"] == "duplicate" and event["path"] == str(labels / "cat_0412.jpg")
    assert event["matches"][0]["path"] == str(labels / "cat_0001.jpg")
    assert (index / "data.mdb").exists(), "the index is written where ReadWritePaths= allows"
