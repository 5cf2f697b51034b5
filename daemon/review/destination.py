"""Where the HTML report goes: by default a cache folder, never the current one (often the
dataset itself); a path it cannot go to is refused before any work; the file is written
whole or not at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from dupwatch.index.errors import DupwatchError


def default_report_path() -> Path:
    """Where a report goes unless told: $XDG_CACHE_HOME/dupwatch/report.html (~/.cache when
    unset), never into the current folder, which is often the dataset itself."""
    base = os.environ.get("XDG_CACHE_HOME")
    cache = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return cache / "dupwatch" / "report.html"


def check_report_path(out: str | os.PathLike) -> Path:
    """The absolute path the report will be written to; raises DupwatchError, before any
    work, when it cannot be (its folder missing or not writable, or `out` a folder)."""
    target = Path(out).absolute()
    if target.is_dir():
        raise DupwatchError(f"{target}: a folder; name the report file, e.g. {target}/report.html")
    folder = target.parent
    if not folder.is_dir():
        raise DupwatchError(f"{folder}: no such folder for the report")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DupwatchError(f"{folder}: not writable, the report cannot go there")
    return target


def write_whole(target: Path, page: str) -> None:
    """Write `page` to `target` through a temporary file renamed into place, so that a
    reader never sees half a report; DupwatchError naming the file when it cannot be."""
    partial = None
    try:
        fd, partial = tempfile.mkstemp(prefix=".dupwatch-report-", dir=target.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(page)
        os.chmod(partial, 0o644)
        os.replace(partial, target)
    except OSError as error:
        if partial is not None and os.path.exists(partial):
            os.unlink(partial)
        raise DupwatchError(f"{target}: cannot write the report: {error.strerror}") from None
