"""Class names for the class ids of label files, where the dataset says them.

YOLO label files hold numbers; the names are in `classes.txt` or `obj.names` (one a line) or
in the `names:` of a `data.yaml`; JSON labels with a COCO `category_id` take their names
from a COCO file's `categories`. Each is looked for in the label file's folder and the
folders above it (a dataset's root), and read once.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from dupwatch.index.cleanup.sidecars import read_classes

log = logging.getLogger(__name__)

LEVELS_UP = 4  # a label file's folder and this many above it
NAME_LISTS = ("classes.txt", "obj.names")
YAML_FILES = ("data.yaml", "dataset.yaml", "data.yml")
COCO_FOLDERS = (".", "annotations")
MAX_COCO_BYTES = 64 << 20  # a larger annotation file is not read for its category names
MAX_LIST_BYTES = 1 << 20


class ClassNames:
    """Finds and remembers the names of each folder's dataset."""

    def __init__(self) -> None:
        self._yolo: dict[Path, dict[str, str]] = {}
        self._coco: dict[Path, dict[str, str]] = {}

    def labels(self, sidecars: Iterable[bytes]) -> Counter[str] | None:
        """The classes the label files name, counted, ids turned into names where known;
        None when there is no readable label file (as sidecars.labels_of)."""
        total: Counter[str] | None = None
        for sidecar in sidecars:
            classes = read_classes(sidecar)
            if classes is None:
                continue
            names = self.names_for(sidecar)
            named: Counter[str] = Counter()
            for key, count in classes.items():
                named[names.get(key, key)] += count
            total = (total or Counter()) + named
        return total

    def names_for(self, sidecar: bytes) -> dict[str, str]:
        """Class id -> name for one label file (empty when the dataset does not say)."""
        folder = Path(os.fsdecode(sidecar)).parent
        suffix = os.path.splitext(sidecar)[1].lower()
        if suffix == b".txt":
            return self._nearest(folder, self._yolo, _yolo_names)
        if suffix == b".json":
            return self._nearest(folder, self._coco, _coco_names)
        return {}

    def _nearest(self, folder: Path, cache: dict[Path, dict[str, str]], read) -> dict[str, str]:
        for level, candidate in enumerate([folder, *folder.parents]):
            if level > LEVELS_UP:
                break
            if candidate not in cache:
                cache[candidate] = read(candidate)
            if cache[candidate]:
                return cache[candidate]
        return {}


def _yolo_names(folder: Path) -> dict[str, str]:
    for name in NAME_LISTS:
        text = _small_text(folder / name, MAX_LIST_BYTES)
        if text is not None:
            names = [line.strip() for line in text.splitlines() if line.strip()]
            return {str(i): n for i, n in enumerate(names)}
    for name in YAML_FILES:
        text = _small_text(folder / name, MAX_LIST_BYTES)
        if text is not None:
            names = yaml_names(text)
            if names:
                return names
    return {}


def yaml_names(text: str) -> dict[str, str]:
    """The `names:` of an Ultralytics data.yaml: a list (inline or one `- name` a line) or
    a mapping of ids (`0: person`); no YAML library needed for this one key.

    >>> yaml_names("path: ../d\\nnames: ['person', 'bicycle']\\n")
    {'0': 'person', '1': 'bicycle'}
    >>> yaml_names("names:\\n  0: person\\n  1: 'traffic light'\\nnc: 2\\n")
    {'0': 'person', '1': 'traffic light'}
    >>> yaml_names("names:\\n- cat\\n- dog  # pets\\n")
    {'0': 'cat', '1': 'dog'}
    """
    lines = text.splitlines()
    for number, line in enumerate(lines):
        found = re.match(r"^names\s*:\s*(.*)$", line)
        if found is None:
            continue
        inline = _uncomment(found.group(1))
        if inline.startswith("["):
            items = [_unquote(item) for item in inline.strip("[]").split(",") if item.strip()]
            return {str(i): item for i, item in enumerate(items)}
        names: dict[str, str] = {}
        for entry in lines[number + 1 :]:
            if entry.strip() and not entry[0].isspace() and not entry.startswith("-"):
                break  # the next top-level key
            entry = _uncomment(entry.strip())
            if entry.startswith("-"):
                names[str(len(names))] = _unquote(entry[1:])
            elif ":" in entry:
                key, value = entry.split(":", 1)
                names[_unquote(key)] = _unquote(value)
        return names
    return {}


def _coco_names(folder: Path) -> dict[str, str]:
    """Category id -> name from a COCO file (`categories` of {id, name}) in `folder` or its
    annotations/ folder."""
    for sub in COCO_FOLDERS:
        place = folder / sub
        try:
            files = sorted(p for p in place.glob("*.json") if p.stat().st_size <= MAX_COCO_BYTES)
        except OSError:
            continue
        for file in files:
            names = _categories(file)
            if names:
                return names
    return {}


def _categories(file: Path) -> dict[str, str]:
    try:
        data = file.read_bytes()
        if b'"categories"' not in data:
            return {}
        categories = json.loads(data).get("categories")
    except (OSError, ValueError, AttributeError) as error:
        log.debug("%s: not a COCO file: %s", file, error)
        return {}
    if not isinstance(categories, list):
        return {}
    return {
        str(c["id"]): str(c["name"])
        for c in categories
        if isinstance(c, dict) and "id" in c and "name" in c
    }


def _small_text(path: Path, limit: int) -> str | None:
    try:
        if not path.is_file() or path.stat().st_size > limit:
            return None
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _uncomment(text: str) -> str:
    return re.sub(r"\s+#.*$", "", text).strip()


def _unquote(text: str) -> str:
    return text.strip().strip("'\"").strip()
