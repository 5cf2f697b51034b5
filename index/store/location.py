"""Where an index lives unless told otherwise (standard library only: the command line and
the unit installer ask before anything is opened)."""

from __future__ import annotations

import os


def default_index_path() -> str:
    """$DUPWATCH_INDEX, else $XDG_DATA_HOME/dupwatch, else ~/.local/share/dupwatch."""
    if os.environ.get("DUPWATCH_INDEX"):
        return os.environ["DUPWATCH_INDEX"]
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(data_home, "dupwatch")
