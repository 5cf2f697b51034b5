"""dupwatch ignore: "not a duplicate" is kept by digest, through renames, groups and alerts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dupwatch.daemon.wire.client import Client, DaemonNotRunning
from dupwatch.index import Index

from support import DUPWATCH, dupwatch, photo

TIMEOUT_S = 60.0


def group_names(index: Path) -> list[set[str]]:
    groups = json.loads(dupwatch("groups", "--json", index=index).stdout)["groups"]
    return sorted(({Path(f["path"]).name for f in g["files"]} for g in groups), key=sorted)


@pytest.fixture
def pics(tmp_path: Path) -> Path:
    """A photo and its small copy (a near pair), and a photo with an exact copy."""
    pics = tmp_path / "pics"
    pics.mkdir()
    photo("astronaut.png").save(pics / "astronaut.jpg", quality=92)
    photo("astronaut.png").resize((256, 256)).save(pics / "small.jpg", quality=80)
    photo("coffee.png").save(pics / "coffee.png")
    shutil.copy(pics / "coffee.png", pics / "coffee_copy.png")
    return pics


@pytest.fixture
def index(pics: Path, tmp_path: Path) -> Path:
    index = tmp_path / "index"
    assert dupwatch("scan", pics, index=index).returncode == 0
    return index


def test_an_ignored_pair_is_not_grouped_even_after_a_rename(pics: Path, index: Path) -> None:
    assert {"astronaut.jpg", "small.jpg"} in group_names(index)
    result = dupwatch("ignore", pics / "astronaut.jpg", pics / "small.jpg", index=index)
    assert result.returncode == 0, result.stderr
    assert "not duplicates:" in result.stdout
    assert group_names(index) == [{"coffee.png", "coffee_copy.png"}]

    query = json.loads(dupwatch("query", "--json", pics / "small.jpg", index=index).stdout)
    assert [Path(m["path"]).name for m in query["matches"]] == ["small.jpg"]  # itself only

    os.rename(pics / "small.jpg", pics / "renamed.jpg")
    assert dupwatch("scan", pics, index=index).returncode == 0  # the index follows the rename
    assert group_names(index) == [{"coffee.png", "coffee_copy.png"}]

    listed = json.loads(dupwatch("ignore", "--list", "--json", index=index).stdout)["ignored"]
    [pair] = listed
    assert sorted(Path(p).name for p in pair["paths"]) == ["astronaut.jpg", "small.jpg"]
    assert sorted(Path(p).name for now in pair["now"] for p in now) == [
        "astronaut.jpg",
        "renamed.jpg",
    ]
    text = dupwatch("ignore", "--list", index=index)
    assert text.returncode == 0 and "renamed.jpg" in text.stdout and "  !=  " in text.stdout

    pair_now = (pics / "astronaut.jpg", pics / "renamed.jpg")
    removed = dupwatch("ignore", "--remove", *pair_now, index=index)
    assert removed.returncode == 0 and "1 ignored pairs forgotten" in removed.stderr
    assert {"astronaut.jpg", "renamed.jpg"} in group_names(index)
    assert dupwatch("ignore", "--list", index=index).returncode == 1


def test_the_group_form_ignores_every_pair_of_a_group(pics: Path, index: Path) -> None:
    photo("astronaut.png").resize((200, 200)).save(pics / "smaller.jpg", quality=70)
    dupwatch("scan", pics, index=index)
    assert {"astronaut.jpg", "small.jpg", "smaller.jpg"} in group_names(index)
    result = dupwatch("ignore", "--group", pics / "small.jpg", "--json", index=index)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["ignored"]) == 3  # every pair among the three
    assert group_names(index) == [{"coffee.png", "coffee_copy.png"}]


def test_the_same_bytes_cannot_be_told_apart(pics: Path, index: Path) -> None:
    result = dupwatch("ignore", pics / "coffee.png", pics / "coffee_copy.png", index=index)
    assert result.returncode == 2
    assert "have the same bytes: they are one picture" in result.stderr
    unknown = dupwatch("ignore", pics / "coffee.png", pics / "nowhere.jpg", index=index)
    assert unknown.returncode == 2 and "nowhere.jpg: no such file" in unknown.stderr


def test_a_new_copy_of_an_ignored_picture_brings_no_match_for_that_pair(
    pics: Path, index: Path
) -> None:
    """What the service announces is what put/add returns: the ignored pair is left out."""
    dupwatch("ignore", pics / "astronaut.jpg", pics / "small.jpg", index=index)
    shutil.copy(pics / "small.jpg", pics / "small_again.jpg")  # same digest as small.jpg
    with Index.open(index) as opened:
        result = opened.add(pics / "small_again.jpg")
    assert {Path(m.record.fspath).name for m in result.matches} == {"small.jpg"}


# The real service: an ignored pair raises no alert.


def wait_for(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + TIMEOUT_S
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


def next_event(stream: Iterator[dict[str, Any]]) -> dict[str, Any]:
    result: list[dict[str, Any]] = []
    reader = threading.Thread(target=lambda: result.append(next(stream)), daemon=True)
    reader.start()
    reader.join(TIMEOUT_S)
    assert result, "no alert arrived"
    return result[0]


@pytest.fixture
def service(pics: Path, index: Path) -> Iterator[Path]:
    """`dupwatch daemon` on the pictures' folder, its socket in a short /tmp folder."""
    base = Path(tempfile.mkdtemp(dir="/tmp", prefix="dwi"))
    (base / "config.toml").write_text("workers = 1\n")
    socket = base / "s.sock"
    env = {**os.environ, "DUPWATCH_INDEX": str(index), "DUPWATCH_SOCKET": str(socket)}
    env.pop("NOTIFY_SOCKET", None)
    with open(base / "log", "wb") as log:
        process = subprocess.Popen(
            [DUPWATCH, "--config", str(base / "config.toml"), "daemon", str(pics)],
            env=env,
            stdout=log,
            stderr=log,
        )

    def ready() -> bool:
        assert process.poll() is None, (base / "log").read_text()
        try:
            with Client(socket, timeout_s=10) as client:
                return client.call("status")["state"] == "ready"
        except (DaemonNotRunning, OSError):
            return False

    wait_for(ready, "the service to be ready")
    yield socket
    process.send_signal(signal.SIGTERM)
    process.wait(TIMEOUT_S)
    shutil.rmtree(base)


def test_the_service_does_not_alert_an_ignored_pair(pics: Path, index: Path, service: Path):
    ignored = dupwatch("ignore", pics / "astronaut.jpg", pics / "small.jpg", index=index)
    assert ignored.returncode == 0, ignored.stderr
    client = Client(service, timeout_s=TIMEOUT_S)
    stream = client.subscribe()
    with Client(service) as status:
        wait_for(lambda: status.call("status")["subscribers"] >= 1, "the subscription")

    shutil.copy(pics / "small.jpg", pics / "small_copied_in.jpg")
    alert = next_event(stream)
    assert alert["path"] == str(pics / "small_copied_in.jpg")
    assert [Path(m["path"]).name for m in alert["matches"]] == ["small.jpg"]  # not astronaut

    shutil.copy(pics / "astronaut.jpg", pics / "astronaut_copied_in.jpg")
    alert = next_event(stream)
    assert alert["path"] == str(pics / "astronaut_copied_in.jpg")
    assert [Path(m["path"]).name for m in alert["matches"]] == ["astronaut.jpg"]  # no small
    client.close()


def test_a_name_that_is_not_on_the_disk_is_no_such_file(pics: Path, index: Path) -> None:
    missing = pics / "astronot.jpg"
    for args in (["ignore", missing, pics / "small.jpg"], ["ignore", "--group", missing]):
        result = dupwatch(*args, index=index)
        assert result.returncode == 2
        assert result.stderr == f"dupwatch: {missing}: no such file\n"
    elsewhere = pics.parent / "elsewhere.jpg"  # on the disk but never indexed
    shutil.copy(pics / "small.jpg", elsewhere)
    result = dupwatch("ignore", elsewhere, pics / "small.jpg", index=index)
    assert result.returncode == 2 and "not indexed" in result.stderr
