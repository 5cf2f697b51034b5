"""Which task is which file: through the local-files storage, else an uploaded file's name.

A task imported from a local-files storage knows its file (`storage_filename`, or a
`/data/local-files/?d=` link under a storage folder); an uploaded one only the name Label
Studio gave its copy ("1a2b3c4d-cat_0412.jpg"), matched to a file of the same name when
no other task of the project has that name.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from dupwatch.daemon.labelstudio.flags import FIELD

LOCAL_FILES = "/data/local-files/"
UPLOADS = "/data/upload/"
UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")  # Label Studio's prefix on an uploaded name


@dataclass(frozen=True, slots=True)
class Task:
    """What the bridge needs of a task: its file (or uploaded name) and whether it is flagged."""

    id: int
    data: Mapping[str, Any] = field(default_factory=dict)
    storage_filename: str | None = None
    annotations: int = 0

    @property
    def flag(self) -> str | None:
        value = self.data.get(FIELD)
        return value if isinstance(value, str) and value else None

    def local_links(self) -> list[str]:
        """The `d` of each /data/local-files/?d=... link in the data: paths under the
        server's document root."""
        found = []
        for value in self.data.values():
            if isinstance(value, str) and LOCAL_FILES in value:
                query = parse_qs(urlsplit(value).query)
                found += query.get("d", [])
        return found

    def upload_names(self) -> list[str]:
        """The names of uploaded files in the data, without Label Studio's prefix."""
        names = []
        for value in self.data.values():
            if isinstance(value, str) and UPLOADS in value:
                name = unquote(urlsplit(value).path.rsplit("/", 1)[-1])
                names.append(UPLOAD_PREFIX.sub("", name))
        return names


def upload_name(path: str) -> str:
    """The name Label Studio stores an upload of `path` under (Django's valid file name).

    >>> upload_name("/srv/labels/cat photo (2).jpg")
    'cat_photo_2.jpg'
    """
    name = os.path.basename(path).strip().replace(" ", "_")
    return re.sub(r"(?u)[^-\w.]", "", name)


def under_folder(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip("/") + "/")


def link_path(link: str, folders: Sequence[str]) -> str | None:
    """The file a local-files link `d` names, given the storage folders: the server's
    document root is the part of a folder before where `d` starts.

    >>> link_path("w/a.jpg", ["/srv/root/w"])
    '/srv/root/w/a.jpg'
    >>> link_path("other/a.jpg", ["/srv/root/w"]) is None
    True
    """
    link = link.lstrip("/")
    for folder in folders:
        parts = folder.rstrip("/").split("/")
        for start in range(len(parts) - 1, 0, -1):
            tail = "/".join(parts[start:])
            if link.startswith(tail + "/"):
                return "/".join(parts[:start]) + "/" + link
    return None


class TaskMap:
    """The project's tasks by file path (and by uploaded name, when unique)."""

    def __init__(self, tasks: Iterable[Task], folders: Sequence[str]) -> None:
        self.folders = [f.rstrip("/") for f in folders]
        self.by_id: dict[int, Task] = {}
        self.by_path: dict[str, Task] = {}
        uploads: dict[str, list[Task]] = defaultdict(list)
        for task in tasks:
            self.by_id[task.id] = task
            paths = [task.storage_filename] if task.storage_filename else []
            paths += [p for link in task.local_links() if (p := link_path(link, self.folders))]
            for path in paths:
                self.by_path.setdefault(path, task)
            for name in task.upload_names():
                uploads[name].append(task)
        self.by_upload = {name: found[0] for name, found in uploads.items() if len(found) == 1}

    def __len__(self) -> int:
        return len(self.by_id)

    def task_of(self, path: str) -> Task | None:
        """The task whose image is the file `path`, if any."""
        task = self.by_path.get(path)
        return task if task is not None else self.by_upload.get(upload_name(path))

    def in_storage(self, path: str) -> bool:
        """Whether `path` lies in a storage folder of the project (a task may come later)."""
        return any(under_folder(path, folder) for folder in self.folders)

    def name(self, path: str) -> str:
        """`path` as a flag shows it: from its storage folder's name on, else whole.

        >>> TaskMap([], ["/srv/labels/batch7"]).name("/srv/labels/batch7/a/cat.jpg")
        'batch7/a/cat.jpg'
        """
        for folder in self.folders:
            if under_folder(path, folder):
                return path[len(os.path.dirname(folder)) :].lstrip("/")
        return path
