"""What a flag says: one text field in the task's data, shown and filtered in the Data Manager.

An annotator hides every duplicate with one filter, "dupwatch is empty", and finds the leaks
with "dupwatch contains leak". The flag is also the bridge's record of what it has sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

FIELD = "dupwatch"  # the key in the task's data, a column of the Data Manager

KIND_WORDS = {"exact": "exact copy of", "pixel": "same pixels as", "near": "near-duplicate of"}


@dataclass(frozen=True, slots=True)
class Original:
    """What a task duplicates: another task of the project (task_id), or only a file."""

    name: str  # the file, relative to its storage folder when it lies in one
    kind: str
    distance: int
    task_id: int | None = None


def flag_text(original: Original | None, leaks: Sequence[str] = ()) -> str:
    """The flag: the leaks first, then what the task duplicates.

    >>> flag_text(Original("w/cat.jpg", "near", 3, 12))
    'near-duplicate of task 12 (w/cat.jpg), distance 3'
    >>> leak = "leak: val/x.jpg duplicates train/y.jpg"
    >>> flag_text(Original("train/y.jpg", "exact", 0, 4), [leak])
    'leak: val/x.jpg duplicates train/y.jpg; exact copy of task 4 (train/y.jpg)'
    >>> flag_text(None, ["leak: val/x.jpg duplicates train/y.jpg"])
    'leak: val/x.jpg duplicates train/y.jpg'
    """
    parts = list(leaks)
    if original is not None:
        words = KIND_WORDS.get(original.kind, f"{original.kind} match of")
        what = f"task {original.task_id} ({original.name})" if original.task_id else original.name
        distance = f", distance {original.distance}" if original.kind == "near" else ""
        parts.append(f"{words} {what}{distance}")
    return "; ".join(parts)
