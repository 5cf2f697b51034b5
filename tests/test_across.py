"""--across: duplicates between train/val/test folders, their pair counts, and leaks at arrival."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dupwatch.daemon.splits import named_folders, split_leaks, split_of
from dupwatch.index import Index

from support import dupwatch, photo


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """train/val/test with known leaks, and duplicates inside one split that are not leaks."""
    data = tmp_path / "data"
    for split in ("train", "val", "test"):
        (data / split).mkdir(parents=True)
    photo("astronaut.png").save(data / "train" / "astronaut.jpg", quality=92)
    photo("astronaut.png").resize((300, 300)).save(data / "val" / "astronaut.jpg", quality=80)
    photo("coffee.png").save(data / "train" / "coffee.png")
    photo("coffee.png").save(data / "val" / "coffee.jpg", quality=85)
    photo("coffee.png").resize((400, 266)).save(data / "test" / "coffee.jpg", quality=85)
    photo("chelsea.png").save(data / "train" / "chelsea.png")
    photo("chelsea.png").resize((200, 132)).save(data / "test" / "cat.png")
    photo("rocket.jpg").save(data / "train" / "rocket.jpg")  # a copy inside train only
    shutil.copy(data / "train" / "rocket.jpg", data / "train" / "rocket_again.jpg")
    photo("camera.png").save(data / "val" / "camera.png")  # a copy inside val only
    photo("camera.png").save(data / "val" / "camera_again.png", compress_level=1)
    photo("motorcycle_left.png").save(data / "test" / "motorcycle.png")  # no copy anywhere
    return data


def splits_of(group: dict, data: Path) -> set[str]:
    return {Path(f["path"]).relative_to(data).parts[0] for f in group["files"]}


def test_scan_across_reports_only_groups_that_span_folders(data: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    folders = [data / "train", data / "val", data / "test"]
    everything = dupwatch("scan", *folders, "--json", index=index)
    assert len(json.loads(everything.stdout)["groups"]) == 5  # 3 leaks, 2 copies within a split

    result = dupwatch("scan", *folders, "--across", "--json", index=index)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    spans = sorted(sorted(splits_of(g, data)) for g in out["groups"])
    assert spans == [["test", "train"], ["test", "train", "val"], ["train", "val"]]
    names = {Path(f["path"]).stem for g in out["groups"] for f in g["files"]}
    assert not names & {"rocket", "rocket_again", "camera", "camera_again", "motorcycle"}

    counts = {tuple(p["pair"]): (p["groups"], p["files"]) for p in out["across"]}
    assert counts == {
        ("train", "val"): (2, {"train": 2, "val": 2}),  # astronaut, coffee
        ("train", "test"): (2, {"train": 2, "test": 2}),  # coffee, chelsea
        ("val", "test"): (1, {"val": 1, "test": 1}),  # coffee
    }
    assert out["summary"]["groups"] == 3


def test_groups_and_report_take_across_too(data: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    dupwatch("scan", data, index=index)
    folders = [data / "train", data / "val", data / "test"]
    text = dupwatch("groups", *folders, "--across", index=index)
    assert text.returncode == 0, text.stderr
    table = text.stdout.splitlines()[-4:]
    assert table[0].split() == ["pair", "groups", "files"]
    assert table[1].split()[:2] == ["train-val", "2"]
    assert table[3].split()[:2] == ["val-test", "1"]

    pair = dupwatch("groups", data / "val", data / "test", "--across", "--json", index=index)
    groups = json.loads(pair.stdout)["groups"]
    assert [sorted(splits_of(g, data)) for g in groups] == [["test", "val"]]

    out = tmp_path / "across.html"
    report = dupwatch("report", *folders, "--across", "--out", out, index=index)
    assert report.returncode == 0, report.stderr
    page = out.read_text()
    assert "Pictures shared across folders" in page and "train &ndash; val" in page


def test_across_needs_two_folders(data: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    dupwatch("scan", data, index=index)
    result = dupwatch("groups", data / "train", "--across", index=index)
    assert result.returncode == 2 and "--across needs two or more folders" in result.stderr


def test_a_new_file_in_val_that_duplicates_train_is_a_leak(data: Path, tmp_path: Path) -> None:
    splits = {"train": data / "train", "val": data / "val", "test": data / "test"}
    with Index.open(tmp_path / "index") as index:
        index.update([data])
        arrival = data / "val" / "new_rocket.jpg"
        photo("rocket.jpg").resize((320, 213)).save(arrival, quality=80)
        result = index.add(arrival)
        leaks = split_leaks(splits, arrival, result.matches)
        assert sorted(leaks) == [
            "leak: val/new_rocket.jpg duplicates train/rocket.jpg",
            "leak: val/new_rocket.jpg duplicates train/rocket_again.jpg",
        ]
        # The JSON form of the matches (what an alert carries) gives the same answer.
        as_json = [m.to_json() for m in result.matches]
        assert split_leaks(splits, arrival, as_json) == leaks

        inside = data / "val" / "camera_third.png"
        photo("camera.png").save(inside, compress_level=9)
        same_split = index.add(inside)
        assert same_split.matches and split_leaks(splits, inside, same_split.matches) == []
    assert split_leaks({}, arrival, result.matches) == []  # no splits configured
    assert split_leaks({"test": data / "test"}, arrival, result.matches) == []  # not in a split


def test_split_of_picks_the_innermost_folder() -> None:
    splits = {"data": b"/d", "val": b"/d/val", "val-hard": b"/d/val/hard"}
    assert split_of(b"/d/val/hard/x.jpg", splits) == "val-hard"
    assert split_of(b"/d/val/x.jpg", splits) == "val"
    assert split_of(b"/d/x.jpg", splits) == "data"
    assert split_of(b"/dval/x.jpg", splits) is None
    assert named_folders(["/a/train", "/b/train", "/a/val"]) == {
        "/a/train": b"/a/train",
        "/b/train": b"/b/train",
        "val": b"/a/val",
    }
