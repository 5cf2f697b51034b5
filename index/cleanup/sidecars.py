"""Label files that belong to an image (YOLO .txt, Pascal VOC .xml, .json) and their classes.

A sidecar is found by patterns relative to the image's folder, formatted with the
image's `stem` and, when the folder has a component named `images`, `labels_dir`
(the same folder with the last `images` replaced by `labels`: the YOLO layout
images/train/x.jpg -> labels/train/x.txt). Patterns may hold glob wildcards.
No threads or sockets here.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import stat
import xml.etree.ElementTree as ElementTree
from collections import Counter
from collections.abc import Iterable, Sequence

from dupwatch.index.fingerprint.formats import is_image_name

log = logging.getLogger(__name__)

DEFAULT_SIDECARS = ("{stem}.txt", "{stem}.xml", "{stem}.json", "{labels_dir}/{stem}.txt")

# JSON keys whose values name a class (LabelMe "label", COCO-like "category_id", ...).
_JSON_LABEL_KEYS = frozenset(
    {"label", "labels", "class", "class_id", "class_name", "category", "category_id"}
)


def check_pattern(pattern: str) -> str:
    """`pattern` when it names a label file (fields {stem} and {labels_dir} only); else a
    ValueError that says what is wrong with it."""
    try:
        relative = pattern.format(stem="x", labels_dir="labels")
    except (KeyError, IndexError, ValueError, AttributeError):
        raise ValueError(
            f"{pattern!r} is not a label file pattern: only {{stem}} and {{labels_dir}} are "
            "filled in, e.g. '{stem}.txt' (write a literal brace twice)"
        ) from None
    if not relative.strip():
        raise ValueError("an empty label file pattern")
    return pattern


def find_sidecars(image: bytes, patterns: Sequence[str] = DEFAULT_SIDECARS) -> list[bytes]:
    """The regular files next to `image` that the patterns name, sorted; never an image.

    Other images are left out even when a pattern matches them: a sidecar must never
    be a picture that has its own place in the index.
    """
    folder, name = os.path.split(os.fsdecode(image))
    stem = os.path.splitext(name)[0]
    labels_dir = _labels_dir(folder)
    found: set[bytes] = set()
    for pattern in patterns:
        if "{labels_dir}" in pattern and labels_dir is None:
            continue
        relative = pattern.format(stem=glob.escape(stem), labels_dir=glob.escape(labels_dir or ""))
        full = os.path.join(glob.escape(folder), relative)
        for candidate in glob.glob(full):
            raw = os.fsencode(candidate)
            if raw != image and not is_image_name(raw) and _is_regular(raw):
                found.add(os.path.normpath(raw))
    return sorted(found)


def stem_siblings(image: bytes) -> list[bytes]:
    """Other images in the same folder with the same stem: they would share a sidecar."""
    folder, name = os.path.split(image)
    stem = os.path.splitext(name)[0]
    try:
        names = os.listdir(folder or b".")
    except OSError:
        return []
    return sorted(
        os.path.join(folder, other)
        for other in names
        if other != name and os.path.splitext(other)[0] == stem and is_image_name(other)
    )


def labels_of(sidecars: Iterable[bytes]) -> Counter[str] | None:
    """The classes the sidecars name, counted; None when there is no readable label file."""
    total: Counter[str] | None = None
    for sidecar in sidecars:
        classes = read_classes(sidecar)
        if classes is not None:
            total = (total or Counter()) + classes
    return total


def read_classes(sidecar: bytes) -> Counter[str] | None:
    """Classes in one label file: YOLO lines' first field, VOC <object><name>, JSON label keys.

    Returns None for a file of another kind or one that cannot be read or parsed.
    """
    suffix = os.path.splitext(sidecar)[1].lower()
    try:
        with open(sidecar, "rb") as file:
            data = file.read(4 << 20)
    except OSError as error:
        log.warning("%s: cannot read label file: %s", os.fsdecode(sidecar), error.strerror)
        return None
    try:
        if suffix == b".txt":
            return Counter(line.split()[0] for line in data.decode().splitlines() if line.split())
        if suffix == b".xml":
            root = ElementTree.fromstring(data)
            return Counter((obj.findtext("name") or "").strip() for obj in root.iter("object"))
        if suffix == b".json":
            return Counter(_json_labels(json.loads(data)))
    except (ValueError, ElementTree.ParseError) as error:
        log.warning("%s: cannot parse label file: %s", os.fsdecode(sidecar), error)
    return None


def _json_labels(value: object) -> Iterable[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in _JSON_LABEL_KEYS and isinstance(item, str | int):
                yield str(item)
            elif key in _JSON_LABEL_KEYS and isinstance(item, list):
                yield from (str(x) for x in item if isinstance(x, str | int))
            else:
                yield from _json_labels(item)
    elif isinstance(value, list):
        for item in value:
            yield from _json_labels(item)


def _labels_dir(folder: str) -> str | None:
    parts = folder.split(os.sep)
    if "images" not in parts:
        return None
    last = len(parts) - 1 - parts[::-1].index("images")
    return os.sep.join([*parts[:last], "labels", *parts[last + 1 :]])


def _is_regular(path: bytes) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False
