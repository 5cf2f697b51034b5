"""What a notification says: one duplicate in a sentence, and a burst of them (a copied
folder) folded into one summary."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

Alert = dict[str, Any]

# More alerts than BURST_AFTER, each within BURST_WINDOW_S of the one before, make a burst:
# one summary notification instead of a pop-up each.
BURST_AFTER = 3
BURST_WINDOW_S = 2.0

KIND_WORDS = {"exact": "exact copy of", "pixel": "same pixels as", "near": "near-duplicate of"}
KIND_NOUNS = {  # one, many
    "exact": ("exact copy", "exact copies"),
    "pixel": ("same-pixel copy", "same-pixel copies"),
    "near": ("near-duplicate", "near-duplicates"),
}


# The words on the screen


def alert_summary(alert: Alert) -> str:
    """The title of one duplicate: "Duplicate: cat_0412.jpg"."""
    return f"Duplicate: {os.path.basename(alert['path'])}"


def alert_body(alert: Alert, *, markup: bool = False) -> str:
    """What the new file duplicates: kind, the match's name, its folder, how many others."""
    matches = alert["matches"]
    best = matches[0]
    kind = str(best.get("kind", "near"))
    name, folder = os.path.basename(best["path"]), os.path.dirname(best["path"])
    distance = f" (distance {best['distance']})" if kind == "near" else ""
    words = KIND_WORDS.get(kind, f"{kind} match of")
    if markup:
        first = f"{escape(words)} <b>{escape(name)}</b>{distance}"
        folder = escape(folder)
    else:
        first = f"{words} {name}{distance}"
    lines = [first, f"in {folder}"]
    if len(matches) > 1:
        others = len(matches) - 1
        lines.append(f"and {others} more {'match' if others == 1 else 'matches'}")
    return "\n".join(lines)


def folder_label(folder: str | None) -> str:
    """How a burst names its folder: "batch7/", or "several folders" when they share none.

    >>> folder_label("/srv/labels/batch7"), folder_label("/"), folder_label(None)
    ('batch7/', 'several folders', 'several folders')
    """
    if not folder or folder == os.sep:
        return "several folders"
    return os.path.basename(folder.rstrip(os.sep)) + "/"


@dataclass
class Burst:
    """Many alerts close together, shown as one summary notification that keeps count."""

    count: int = 0
    folders: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    image: Path | None = None  # the first thumbnail of the burst, if any
    notification_id: int = 0
    shown_count: int = 0
    shown_at: float = 0.0

    def add(self, alert: Alert) -> None:
        if alert.get("event") == "missed":
            self.count += int(alert.get("count", 0))
            return
        self.count += 1
        self.folders[os.path.dirname(alert["path"])] += 1
        self.kinds[str(alert["matches"][0].get("kind", "near"))] += 1

    @property
    def folder(self) -> str | None:
        """The deepest folder holding every new file of the burst (None if none is known)."""
        if not self.folders:
            return None
        try:
            return os.path.commonpath(list(self.folders))
        except ValueError:  # relative and absolute paths mixed: no common folder
            return None

    @property
    def summary(self) -> str:
        return f"{self.count} duplicates in {folder_label(self.folder)}"

    def body(self, *, markup: bool = False) -> str:
        """Where, and how many of each kind: "in /srv/labels/batch7\n297 near-duplicates, ..."."""
        folder = self.folder or "several folders"
        return f"in {escape(folder) if markup else folder}\n{self.counts()}"

    def counts(self) -> str:
        """How many of each kind: "297 near-duplicates, 3 exact copies"."""
        counts = [f"{n} {kind_noun(kind, n)}" for kind, n in self.kinds.most_common()]
        unknown = self.count - sum(self.kinds.values())
        if unknown:
            counts.append(f"{unknown} not listed by the service (its queue was full)")
        return ", ".join(counts)


def kind_noun(kind: str, count: int) -> str:
    """ "near-duplicate" or "near-duplicates", and so on for each kind."""
    one, many = KIND_NOUNS.get(kind, (f"{kind} match", f"{kind} matches"))
    return one if count == 1 else many


class Runs:
    """Numbers alerts within runs: a run goes on while each comes within window_s of the last.

    >>> runs = Runs(window_s=2.0)
    >>> [runs.observe(t) for t in (0.0, 0.5, 2.4, 9.0)]
    [1, 2, 3, 1]
    >>> runs.observe(9.1, count=40)
    41
    >>> runs.forget(); runs.observe(9.2)
    41
    """

    def __init__(self, *, window_s: float) -> None:
        self.window_s = window_s
        self.position = 0
        self.last: float | None = None

    def observe(self, now: float, count: int = 1) -> int:
        """Count `count` alerts at time `now`; returns the position of the last in its run."""
        if self.last is None or now - self.last > self.window_s:
            self.position = 0
        self.last = now
        self.position += count
        return self.position

    def forget(self, count: int = 1) -> None:
        """Take back the last `count` observed (not shown after all: they come again)."""
        self.position = max(0, self.position - count)
