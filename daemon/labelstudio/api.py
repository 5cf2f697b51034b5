"""The Label Studio server, through the official SDK: who we are, the project's storage
folders and tasks, and setting a flag.

Errors come out as three kinds: Unreachable (retry later: network, a stopped server, a 5xx),
Refused (the token or the project is wrong: retrying will not help), and TaskGone.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from dupwatch.daemon.labelstudio.flags import FIELD
from dupwatch.daemon.labelstudio.tasks import Task
from dupwatch.index.errors import DupwatchError

log = logging.getLogger(__name__)

TIMEOUT_S = 30.0
PAGE_SIZE = 500


class Unreachable(DupwatchError):
    """The server did not answer, or answered that it is unwell: worth trying again."""


class Refused(DupwatchError):
    """The server refused the token, or has no such project: a setting to fix."""


class TaskGone(DupwatchError):
    """The task was deleted meanwhile."""


class Server:
    """One Label Studio project on one server, as the bridge sees it."""

    def __init__(self, url: str, token: str, project: int) -> None:
        self.url = url.rstrip("/")
        self.project = project
        self.client = LabelStudio(base_url=self.url, api_key=token, timeout=TIMEOUT_S)

    def check(self) -> str:
        """Who the token belongs to and the project's title; raises Refused or Unreachable."""
        with self._errors("checking the token"):
            user = self.client.users.whoami()
        with self._errors(f"opening project {self.project}"):
            project = self.client.projects.get(id=self.project)
        return f"{user.email or user.username}, project {self.project} {project.title!r}"

    def storage_folders(self) -> list[str]:
        """The folders of the project's local-files import storages."""
        with self._errors("listing the storages"):
            storages = self.client.import_storage.local.list(project=self.project)
        return [s.path for s in storages if s.path]

    def tasks(self) -> list[Task]:
        """Every task of the project (data, file, annotation count)."""
        with self._errors("listing the tasks"):
            return list(self._tasks())

    def _tasks(self) -> Iterator[Task]:
        tasks = self.client.tasks
        for task in tasks.list(project=self.project, fields="task_only", page_size=PAGE_SIZE):
            yield Task(
                id=task.id,
                data=dict(task.data or {}),
                storage_filename=task.storage_filename,
                annotations=task.total_annotations or 0,
            )

    def task(self, task_id: int) -> Task:
        with self._errors(f"reading task {task_id}", task_id):
            task = self.client.tasks.get(id=task_id)
        return Task(
            id=task.id,
            data=dict(task.data or {}),
            storage_filename=task.storage_filename,
            annotations=task.total_annotations or 0,
        )

    def set_flag(self, task_id: int, text: str) -> bool:
        """Put `text` in the task's data (read fresh, so nothing else in it changes);
        False when it was there already (nothing sent)."""
        task = self.task(task_id)
        if task.data.get(FIELD) == text:
            return False
        data: dict[str, Any] = {**task.data, FIELD: text}
        with self._errors(f"flagging task {task_id}", task_id):
            self.client.tasks.update(id=task_id, data=data)
        return True

    @contextlib.contextmanager
    def _errors(self, doing: str, task_id: int | None = None) -> Iterator[None]:
        """Turns the SDK's and httpx's exceptions into Unreachable, Refused and TaskGone."""
        where = f"Label Studio at {self.url}"
        try:
            yield
        except httpx.HTTPError as error:
            raise Unreachable(f"{where}: {doing}: {error or type(error).__name__}") from None
        except ApiError as error:
            status, detail = error.status_code or 0, _detail(error.body)
            if status in (401, 403):
                raise Refused(
                    f"{where} refused the token ({status} {detail}); check the token "
                    "(--token-file, DUPWATCH_LABELSTUDIO_TOKEN or the config's token_file)"
                ) from None
            if status == 404 and task_id is not None:
                raise TaskGone(f"task {task_id} is gone") from None
            if status == 404:
                raise Refused(f"{where}: no project {self.project} ({detail})") from None
            if status >= 500 or status in (408, 429):
                raise Unreachable(f"{where}: {doing}: {status} {detail}") from None
            raise Refused(f"{where}: {doing}: {status} {detail}") from None


def _detail(body: Any) -> str:
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("validation_errors") or body)[:200]
    return str(body)[:200]
