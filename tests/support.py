"""What many tests share: the real `dupwatch` command, and scikit-image's photographs.

Importable from any test module (pytest puts tests/ on the path: pyproject.toml).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import skimage.data
from PIL import Image

# The command this Python installed (its venv's bin/ need not be on PATH).
DUPWATCH = (
    shutil.which("dupwatch", path=os.path.dirname(sys.executable))
    or shutil.which("dupwatch")
    or "dupwatch"
)
SKIMAGE_DATA = Path(skimage.data.__file__).parent


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


def photo(name: str) -> Image.Image:
    """One of scikit-image's photographs, as RGB."""
    return Image.open(SKIMAGE_DATA / name).convert("RGB")
