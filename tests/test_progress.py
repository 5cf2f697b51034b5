"""Progress of `dupwatch scan` (tqdm): a bar on a terminal, plain lines on request, never on
stdout. Run as the real command, its stderr a pseudo-terminal or a pipe."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import shutil
import struct
import subprocess
import termios
from pathlib import Path

import pytest

from dupwatch.daemon.progress import Progress

from support import DUPWATCH, photo

LINE = re.compile(r"^hashing: (\d+)/(\d+) files \((\d+)%\), [\d.]+ files/s, [\d:?]+ left$")


@pytest.fixture
def pictures(tmp_path: Path) -> Path:
    folder = tmp_path / "pics"
    folder.mkdir()
    for n, name in enumerate(("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg")):
        picture = photo(name)
        for size in (96, 128, 160, 192, 224, 256):
            picture.resize((size, size)).save(folder / f"{n}_{size}.jpg", quality=85)
    shutil.copy(folder / "0_256.jpg", folder / "copy.jpg")
    return folder


def scan(*args: str | Path, index: Path, env: dict[str, str] | None = None):
    command = [DUPWATCH, "--index", str(index), "scan", "--json", "--workers", "1", *map(str, args)]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )


def test_without_a_terminal_nothing_unless_asked(pictures: Path, tmp_path: Path) -> None:
    quiet = scan(pictures, index=tmp_path / "a")
    assert quiet.returncode == 0, quiet.stderr
    assert "hashing" not in quiet.stderr
    assert json.loads(quiet.stdout)["summary"]["hashed"] == 25


def test_asked_without_a_terminal_plain_lines_on_stderr_only(pictures: Path, tmp_path: Path):
    every = {"DUPWATCH_PROGRESS_EVERY_S": "0.02"}
    result = scan(pictures, "--progress", index=tmp_path / "b", env=every)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["summary"]["hashed"] == 25  # stdout is the JSON alone
    lines = [line for line in result.stderr.splitlines() if line.startswith("hashing")]
    assert "\r" not in result.stderr and "\x1b" not in result.stderr
    assert len(lines) >= 2, result.stderr  # 25 files at one worker take well over 0.02 s
    assert all(LINE.match(line) for line in lines), lines
    done = [tuple(map(int, LINE.match(line).groups())) for line in lines]
    assert done[-1] == (25, 25, 100)
    assert [d for d, _, _ in done] == sorted(d for d, _, _ in done)


def run_on_a_terminal(*args: str | Path, index: Path, columns: int = 100) -> tuple[int, str, str]:
    """The scan with its stderr on a pseudo-terminal of `columns` (0: a terminal that does
    not say its size): (exit status, stdout, what the terminal showed)."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 30, columns, 0, 0))
    command = [DUPWATCH, "--index", str(index), "scan", "--workers", "1", *map(str, args)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=terminal, text=True)
    os.close(terminal)
    stdout, _ = process.communicate(timeout=120)
    screen = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the terminal's other side is closed and drained
            break
        if not chunk:
            break
        screen += chunk
    os.close(controller)
    return process.returncode, stdout, screen.decode(errors="replace")


@pytest.mark.parametrize("columns", [100, 0])
def test_on_a_terminal_a_bar_with_rate_and_time_left(
    pictures: Path, tmp_path: Path, columns: int
) -> None:
    status, stdout, screen = run_on_a_terminal(pictures, index=tmp_path / "c", columns=columns)
    assert status == 0
    assert "hashing" not in stdout
    drawn = [line for line in re.split(r"[\r\n]+", screen) if line.startswith("hashing")]
    final = r"hashing: 100%\|.+\| 25/25 \[\d\d:\d\d<00:00, +[\d.]+ files/s\]"
    assert re.fullmatch(final, drawn[-1].rstrip()), drawn
    assert all(len(line) <= (columns or 80) for line in drawn)


def test_no_progress_on_a_terminal_draws_nothing(pictures: Path, tmp_path: Path) -> None:
    status, _, screen = run_on_a_terminal(pictures, "--no-progress", index=tmp_path / "d")
    assert status == 0
    assert "hashing:" not in screen and "%|" not in screen


def test_a_cluster_engine_shows_its_workers() -> None:
    """The hook a cluster engine calls on the progress callback it was given."""
    log = io.StringIO()
    progress = Progress("hashing", enabled=True, stream=log, every_s=0.0)
    progress(10, 40)
    progress.set_workers(6)
    progress(20, 40)
    progress.finish()
    lines = log.getvalue().splitlines()
    assert lines[-1].startswith("hashing: 20/40 files (50%), ")
    assert lines[-1].endswith(" left, 6 workers")
