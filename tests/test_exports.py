"""dupwatch groups --csv and --format imagededup: they parse, and agree with --json."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from functools import partial
from pathlib import Path

import pytest

from support import dupwatch as run_dupwatch
from support import photo

# Output as bytes: names that are not UTF-8 come back as their own bytes.
dupwatch = partial(run_dupwatch, text=False)

FIELDS = ["group", "path", "kind", "distance", "keep"]  # what the issue asks of each row


@pytest.fixture
def index(tmp_path: Path) -> Path:
    """Two groups (one with a name that is not UTF-8), and a picture with no copy."""
    pics = tmp_path / "pics"
    pics.mkdir()
    photo("astronaut.png").save(pics / "astronaut.jpg", quality=92)
    photo("astronaut.png").resize((256, 256)).save(pics / "small.jpg", quality=80)
    shutil.copy(pics / "astronaut.jpg", pics / "astronaut, copy.jpg")  # a comma, for CSV
    photo("coffee.png").save(pics / "coffee.png")
    shutil.copy(pics / "coffee.png", bytes(pics) + b"/caf\xe9.png")  # Latin-1, not UTF-8
    photo("rocket.jpg").save(pics / "rocket.jpg")
    index = tmp_path / "index"
    assert dupwatch("scan", pics, index=index).returncode == 0
    return index


def groups_json(index: Path) -> list[dict]:
    return json.loads(dupwatch("groups", "--json", index=index).stdout)["groups"]


def test_csv_has_one_row_per_file_and_agrees_with_json(index: Path) -> None:
    result = dupwatch("groups", "--csv", index=index)
    assert result.returncode == 0
    # Names go out as their own bytes, so a name that is not UTF-8 reads back the same.
    rows = list(csv.DictReader(io.StringIO(result.stdout.decode("utf-8", "surrogateescape"))))
    assert list(rows[0]) == [*FIELDS, "width", "height", "bytes", "transform", "via"]
    expected = [
        {
            "group": str(n),
            "path": f["path"],
            "kind": f["kind"],
            "distance": str(f["distance"]),
            "keep": "true" if f["path"] == g["keep"] else "false",
            "width": str(f["width"]),
            "height": str(f["height"]),
            "bytes": str(f["bytes"]),
            "transform": f.get("transform", ""),
            "via": f.get("via", ""),
        }
        for n, g in enumerate(groups_json(index), 1)
        for f in g["files"]
    ]
    assert rows == expected
    assert len(rows) == 5 and sum(r["keep"] == "true" for r in rows) == 2
    assert any(os.fsencode(r["path"]).endswith(b"/caf\xe9.png") for r in rows)
    assert any(r["path"].endswith("/astronaut, copy.jpg") for r in rows)


def get_files_to_remove(duplicates: dict[str, list]) -> list[str]:
    """imagededup.utils.get_files_to_remove (imagededup 0.3), as its users call it."""
    files_to_remove: set[str] = set()
    for k, v in duplicates.items():
        tmp = [i[0] if isinstance(i, tuple) else i for i in v]
        if k not in files_to_remove:
            files_to_remove.update(tmp)
    return list(files_to_remove)


def test_imagededup_mapping_agrees_with_json(index: Path) -> None:
    result = dupwatch("groups", "--format", "imagededup", index=index)
    assert result.returncode == 0
    mapping = json.loads(result.stdout)
    groups = groups_json(index)
    expected = {}
    for g in groups:
        members = [f["path"] for f in g["files"] if f["path"] != g["keep"]]
        expected[g["keep"]] = members
        expected.update({m: [g["keep"]] for m in members})
    assert mapping == expected
    assert list(mapping)[: len(groups)] == [g["keep"] for g in groups]  # keepers first
    non_keepers = {f["path"] for g in groups for f in g["files"] if f["path"] != g["keep"]}
    assert set(get_files_to_remove(mapping)) == non_keepers


def test_formats_and_exit_status_without_groups(tmp_path: Path) -> None:
    pics = tmp_path / "one"
    pics.mkdir()
    photo("rocket.jpg").save(pics / "rocket.jpg")
    index = tmp_path / "index"
    dupwatch("scan", pics, index=index)
    empty_csv = dupwatch("groups", "--csv", index=index)
    assert empty_csv.returncode == 1 and empty_csv.stdout.startswith(b"group,path,kind")
    empty_map = dupwatch("groups", "--format", "imagededup", index=index)
    assert empty_map.returncode == 1 and json.loads(empty_map.stdout) == {}
    bad = dupwatch("groups", "--format", "yaml", index=index)
    assert bad.returncode == 2 and b"invalid choice" in bad.stderr
