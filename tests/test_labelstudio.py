"""The Label Studio bridge against a real Label Studio server (started once per session).

The watched folder is a project's local-files storage; the service, the bridge and `--sync`
are the real `dupwatch` commands, and every check reads the server's API.
"""

from __future__ import annotations

import doctest
import json
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from label_studio_sdk import LabelStudio

from dupwatch.daemon.config import load_config
from dupwatch.daemon.labelstudio import flags, plan, tasks
from dupwatch.daemon.labelstudio.flags import FIELD

from labelstudio_server import LABEL_CONFIG, LabelStudioServer
from support import Daemon, dupwatch, photo, wait_for

FLAG_BOUND_S = 60.0  # a duplicate's task carries its flag within this of the storage sync
IMAGES = r".*\.(jpe?g|png)$"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    ls = LabelStudioServer(tmp_path_factory.mktemp("ls"))
    ls.start()
    yield ls
    ls.stop()
    print(f"\nLabel Studio started in {', '.join(f'{s:.1f} s' for s in ls.start_times_s)}")


@pytest.fixture
def api(server: LabelStudioServer) -> LabelStudio:
    if server.process is None or not server.answers():  # a test stopped it and failed
        server.stop()
        server.start()
    return LabelStudio(base_url=server.url, api_key=server.token, timeout=30)


@pytest.fixture
def folder(server: LabelStudioServer, request: pytest.FixtureRequest) -> Path:
    """A fresh folder under the server's document root (short: it holds a socket)."""
    base = server.document_root / f"t{len(list(server.document_root.iterdir()))}"
    base.mkdir()
    return base


def new_project(api: LabelStudio, storage: Path | None = None) -> tuple[int, int | None]:
    """A project (with a local-files storage of `storage`): (project id, storage id)."""
    project = api.projects.create(
        title=f"dupwatch test {time.monotonic_ns()}", label_config=LABEL_CONFIG
    )
    if storage is None:
        return project.id, None
    created = api.import_storage.local.create(
        project=project.id,
        path=str(storage),
        use_blob_urls=True,
        regex_filter=IMAGES,
        recursive_scan=True,
    )
    return project.id, created.id


def sync_storage(api: LabelStudio, storage: int) -> None:
    """What a user does with the "Sync Storage" button: new files become tasks."""
    api.import_storage.local.sync(id=storage)


def task_of(api: LabelStudio, project: int, path: Path) -> Any:
    found = [t for t in api.tasks.list(project=project) if t.storage_filename == str(path)]
    return found[0] if found else None


def flag_of(api: LabelStudio, project: int, path: Path) -> str | None:
    task = task_of(api, project, path)
    return None if task is None else task.data.get(FIELD)


def unflagged_ids(server: LabelStudioServer, project: int) -> list[int]:
    """The tasks the Data Manager shows with the one filter "dupwatch is empty"."""
    item = {
        "filter": f"filter:tasks:data.{FIELD}",
        "operator": "empty",
        "type": "String",
        "value": True,
    }
    query = {"filters": {"conjunction": "and", "items": [item]}}
    answer = httpx.get(
        f"{server.url}/api/tasks",
        params={"project": project, "query": json.dumps(query)},
        headers={"Authorization": f"Token {server.token}"},
        timeout=30,
    )
    answer.raise_for_status()
    return sorted(t["id"] for t in answer.json()["tasks"])


class Bridge:
    """`dupwatch labelstudio` following a private service, its log in a file."""

    def __init__(self, daemon: Daemon, server: LabelStudioServer, project: int) -> None:
        self.daemon = daemon
        self.log = daemon.base / "bridge.log"
        self.command = daemon.command("labelstudio", "--url", server.url, "--project", str(project))
        self.env = {**daemon.env, "DUPWATCH_LABELSTUDIO_TOKEN": server.token}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.write_text("")
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=log)
        self.wait_for_log("caught up")

    def wait_for_log(self, text: str, count: int = 1, timeout_s: float = FLAG_BOUND_S) -> None:
        def seen() -> bool:
            assert self.process is not None and self.process.poll() is None, self.output()
            return self.output().count(text) >= count

        wait_for(seen, timeout_s, f"{text!r} in the bridge's log:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)


@pytest.fixture
def service(folder: Path) -> Iterator[Daemon]:
    daemon = Daemon(folder, config="workers = 1\n")
    yield daemon
    if daemon.process is not None:
        daemon.stop()


def wait_flag(api: LabelStudio, project: int, path: Path, bridge: Bridge) -> str:
    def flagged() -> str | None:
        return flag_of(api, project, path)

    return wait_for(flagged, FLAG_BOUND_S, f"a flag on {path.name}; bridge log:\n{bridge.output()}")


def test_the_config_table_is_checked(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[labelstudio]\nurl = "http://localhost:8080"\nproject = 3\ntoken = "x"\n')
    result = dupwatch("--config", config, "labelstudio", "--sync")
    assert result.returncode == 2
    assert f"{config}: unknown setting labelstudio.token; known: url, project, token_file" in (
        result.stderr
    )
    config.write_text('[labelstudio]\nproject = "three"\n')
    assert "labelstudio.project has the wrong type" in dupwatch("--config", config, "status").stderr
    config.write_text('[labelstudio]\nurl = "http://ls:8080"\nproject = 3\ntoken_file = "t"\n')
    loaded = load_config(config).labelstudio
    assert (loaded.url, loaded.project, loaded.token_file) == ("http://ls:8080", 3, tmp_path / "t")


def test_pure_parts_pass_their_doctests() -> None:
    for module in (flags, plan, tasks):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_a_wrong_token_is_a_clear_error_at_start(server: LabelStudioServer, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("not-the-token\n")
    args = ("labelstudio", "--url", server.url, "--project", "1", "--token-file", token)
    result = dupwatch(*args, env={"DUPWATCH_SOCKET": str(tmp_path / "none.sock")}, timeout=60)
    assert result.returncode == 2
    assert f"Label Studio at {server.url} refused the token (401" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_token_file_beside_the_config_is_read(server: LabelStudioServer, tmp_path: Path):
    """What the systemd unit relies on; and a missing project is a clear error too."""
    env = {
        "DUPWATCH_LABELSTUDIO_TOKEN": "",
        "LABEL_STUDIO_API_KEY": "",
        "XDG_CONFIG_HOME": str(tmp_path),
        "DUPWATCH_SOCKET": str(tmp_path / "none.sock"),
    }
    args = ("labelstudio", "--url", server.url, "--project", "999999")
    missing = dupwatch(*args, env=env)
    assert missing.returncode == 2
    token_file = tmp_path / "dupwatch" / "labelstudio-token"
    assert f"no Label Studio token: put it in {token_file} (mode 0600)" in missing.stderr
    token_file.parent.mkdir()
    token_file.write_text(server.token + "\n")
    no_project = dupwatch(*args, env=env)
    assert no_project.returncode == 2
    assert f"Label Studio at {server.url}: no project 999999" in no_project.stderr


def test_a_copy_is_flagged_and_a_restart_sends_nothing_twice(
    server: LabelStudioServer, api: LabelStudio, service: Daemon
) -> None:
    root = service.root
    photo("chelsea.png").save(root / "cat_0001.jpg", quality=90)
    photo("coffee.png").save(root / "coffee.jpg", quality=90)
    project, storage = new_project(api, root)
    assert storage is not None
    sync_storage(api, storage)
    service.start()
    wait_for(lambda: service.status()["files"] == 2, what="the first images to be indexed")
    bridge = Bridge(service, server, project)
    bridge.start()
    try:
        photo("chelsea.png").resize((300, 200)).save(root / "cat_0412.jpg", quality=80)
        wait_for(lambda: service.status()["alerts"] == 1, what="the alert")
        started = time.monotonic()
        sync_storage(api, storage)  # the user imports the new file
        text = wait_flag(api, project, root / "cat_0412.jpg", bridge)
        took = time.monotonic() - started
        original = task_of(api, project, root / "cat_0001.jpg")
        assert text.startswith(f"near-duplicate of task {original.id} (")
        assert "cat_0001.jpg), distance " in text
        assert flag_of(api, project, root / "cat_0001.jpg") is None
        copy = task_of(api, project, root / "cat_0412.jpg")
        coffee = task_of(api, project, root / "coffee.jpg")
        assert unflagged_ids(server, project) == sorted([original.id, coffee.id])
        print(f"\nflag set {took:.1f} s after the storage sync")

        # Restarted, the bridge catches up and finds the flag there: it sends nothing.
        bridge.stop()
        bridge.start()
        assert "caught up: 0 tasks flagged, 1 before" in bridge.output()
        assert task_of(api, project, root / "cat_0412.jpg").updated_at == copy.updated_at
    finally:
        bridge.stop()


def test_sync_flags_a_project_labelled_before(
    server: LabelStudioServer, api: LabelStudio, folder: Path, tmp_path: Path
) -> None:
    """Groups from the index alone (no service): annotated tasks are kept, leaks named."""
    root = folder / "data"
    (root / "train").mkdir(parents=True)
    (root / "val").mkdir()
    photo("astronaut.png").save(root / "train" / "astronaut.jpg", quality=90)
    photo("astronaut.png").resize((256, 256)).save(root / "train" / "astronaut_small.jpg")
    shutil.copy(root / "train" / "astronaut.jpg", root / "val" / "astronaut_again.jpg")
    photo("coffee.png").save(root / "val" / "coffee.png")
    photo("coffee.png").save(root / "val" / "coffee_resaved.jpg", quality=85)
    photo("rocket.jpg").save(root / "val" / "rocket.jpg")
    project, storage = new_project(api, root)
    assert storage is not None
    sync_storage(api, storage)
    # Labelled already: they are the ones kept, their annotations untouched.
    labelled = task_of(api, project, root / "val" / "coffee_resaved.jpg")
    kept = task_of(api, project, root / "train" / "astronaut.jpg").id
    choice = {"from_name": "label", "to_name": "image", "type": "choices"}
    for task_id in (labelled.id, kept):
        api.annotations.create(id=task_id, result=[{**choice, "value": {"choices": ["other"]}}])

    config = tmp_path / "config.toml"
    config.write_text(f'[splits]\ntrain = "{root / "train"}"\nval = "{root / "val"}"\n')
    index = tmp_path / "index"
    assert dupwatch("scan", root, index=index).returncode == 0
    env = {"DUPWATCH_LABELSTUDIO_TOKEN": server.token, "DUPWATCH_SOCKET": str(tmp_path / "no.sock")}
    args = ("--config", config, "labelstudio", "--url", server.url, "--project", str(project))
    result = dupwatch(*args, "--sync", index=index, env=env)
    assert result.returncode == 0, result.stderr
    assert "3 tasks flagged, 0 flagged already" in result.stderr

    def flag(name: str) -> str | None:
        return flag_of(api, project, root / name)

    assert flag("train/astronaut.jpg") is None  # kept: its copy in val carries the leak
    small = flag("train/astronaut_small.jpg")
    assert small.startswith(f"near-duplicate of task {kept} (data/train/astronaut.jpg), distance")
    leak = flag("val/astronaut_again.jpg")
    assert leak == (
        "leak: val/astronaut_again.jpg duplicates train/astronaut.jpg; "
        f"exact copy of task {kept} (data/train/astronaut.jpg)"
    )
    assert flag("val/coffee_resaved.jpg") is None
    coffee = f"near-duplicate of task {labelled.id} (data/val/coffee_resaved.jpg), distance"
    assert flag("val/coffee.png").startswith(coffee)
    assert flag("val/rocket.jpg") is None
    for task_id in (labelled.id, kept):
        after = api.tasks.get(id=task_id)
        assert after.total_annotations == 1 and FIELD not in after.data

    again = dupwatch(*args, "--sync", index=index, env=env)
    assert again.returncode == 0 and "0 tasks flagged, 3 flagged already" in again.stderr


def test_uploaded_files_are_matched_by_name(
    server: LabelStudioServer, api: LabelStudio, folder: Path, tmp_path: Path
) -> None:
    photo("chelsea.png").save(folder / "cat one.jpg", quality=90)
    shutil.copy(folder / "cat one.jpg", folder / "cat two.jpg")
    project, _ = new_project(api)
    for name in ("cat one.jpg", "cat two.jpg"):
        with open(folder / name, "rb") as file:
            answer = httpx.post(
                f"{server.url}/api/projects/{project}/import",
                files={"file": (name, file, "image/jpeg")},
                headers={"Authorization": f"Token {server.token}"},
                timeout=60,
            )
        answer.raise_for_status()
    index = tmp_path / "index"
    assert dupwatch("scan", folder, index=index).returncode == 0
    env = {"DUPWATCH_LABELSTUDIO_TOKEN": server.token, "DUPWATCH_SOCKET": str(tmp_path / "no.sock")}
    args = ("labelstudio", "--url", server.url, "--project", str(project), "--sync")
    result = dupwatch(*args, index=index, env=env)
    assert result.returncode == 0, result.stderr
    by_name = {t.data["image"].rsplit("-", 1)[-1]: t for t in api.tasks.list(project=project)}
    assert set(by_name) == {"cat_one.jpg", "cat_two.jpg"}
    one, two = by_name["cat_one.jpg"], by_name["cat_two.jpg"]
    assert FIELD not in one.data
    assert two.data[FIELD] == f"exact copy of task {one.id} ({folder}/cat one.jpg)"


def test_a_server_stopped_mid_stream_loses_no_flag(
    server: LabelStudioServer, api: LabelStudio, service: Daemon
) -> None:
    """New files wait for their tasks; a file whose task exists (overwritten by a copy) has
    its flag held while the server is away and sent, by itself, once it is back."""
    root = service.root
    photo("astronaut.png").save(root / "astronaut.jpg", quality=90)
    photo("coffee.png").save(root / "coffee.jpg", quality=90)
    photo("rocket.jpg").save(root / "rocket.jpg", quality=90)
    project, storage = new_project(api, root)
    assert storage is not None
    sync_storage(api, storage)
    service.start()
    wait_for(lambda: service.status()["files"] == 3, what="the first images to be indexed")
    bridge = Bridge(service, server, project)
    bridge.start()
    try:
        server.stop()
        shutil.copy(root / "astronaut.jpg", root / "rocket.jpg")  # a task already: held
        wait_for(lambda: service.status()["alerts"] == 1, what="the first alert")
        bridge.wait_for_log("1 alerts wait; trying again in")
        photo("astronaut.png").resize((200, 200)).save(root / "astronaut_small.jpg")
        shutil.copy(root / "coffee.jpg", root / "coffee_copy.jpg")
        wait_for(lambda: service.status()["alerts"] == 3, what="the other alerts")
        took = server.start()
        print(f"\nLabel Studio restarted in {took:.1f} s")
        held = wait_flag(api, project, root / "rocket.jpg", bridge)  # no sync, no new alert
        assert held.startswith("exact copy of task ") and "(w/astronaut.jpg)" in held
        sync_storage(api, storage)
        small = wait_flag(api, project, root / "astronaut_small.jpg", bridge)
        copy = wait_flag(api, project, root / "coffee_copy.jpg", bridge)
        assert small.startswith("near-duplicate of task ")
        assert copy.startswith("exact copy of task ")
        assert bridge.output().count("flagged task ") == 3
    finally:
        bridge.stop()
