"""Which copy a group keeps, and what a group says of its copies, through the real command:
a labelled copy over a larger unlabelled one, the picture itself over a re-encode, a crop or a
turned copy of it, why the keeper won, copies of each other inside a group, and a copy that
matches only another member (never left out of the groups)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from PIL import Image, ImageOps

from dupwatch.index.grouping import build_groups
from dupwatch.index.groups import Keeper
from dupwatch.index.store.pairs import Kind, Pair
from dupwatch.index.store.records import FileRecord

from support import dupwatch, photo

OLD, NEW = 10**18, 2 * 10**18  # mtimes, in ns: the original first


def groups_of(folder: Path, index: Path, *args: str) -> list[dict]:
    result = dupwatch("scan", "--json", *args, folder, index=index)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["groups"]


def names(group: dict) -> dict[str, dict]:
    return {Path(f["path"]).relative_to(Path(group["keep"]).parents[1]).as_posix(): f
            for f in group["files"]}  # fmt: skip


def test_a_labelled_copy_is_kept_over_a_larger_unlabelled_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    (data / "incoming").mkdir()
    picture = photo("astronaut.png")
    picture.resize((256, 256)).save(data / "train" / "a.jpg", quality=90)
    (data / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")  # its YOLO labels
    picture.save(data / "incoming" / "a_big.jpg", quality=95)  # 512x512: larger
    index = tmp_path / "index"

    [group] = groups_of(data, index)
    assert Path(group["keep"]) == data / "train" / "a.jpg"
    assert group["why"].startswith("labelled")
    dry = dupwatch("dedupe", "--to", tmp_path / "q", "--dry-run", data, index=index)
    assert dry.returncode == 0, dry.stderr
    assert f"keep {data / 'train' / 'a.jpg'}  (labelled" in dry.stdout
    assert f"would move {data / 'incoming' / 'a_big.jpg'}" in dry.stdout

    [group] = groups_of(data, index, "--keep", "largest")
    assert Path(group["keep"]) == data / "incoming" / "a_big.jpg"
    assert group["why"] == "the largest resolution"


def test_a_file_in_a_split_counts_as_labelled(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "val").mkdir(parents=True)
    (data / "web").mkdir()
    picture = photo("coffee.png")
    picture.resize((300, 200)).save(data / "val" / "c.jpg", quality=90)
    picture.save(data / "web" / "c.jpg", quality=90)
    config = tmp_path / "config.toml"
    config.write_text(f'splits = {{ val = "{data / "val"}" }}\n')
    [group] = groups_of(data, tmp_path / "index", "--config", str(config))
    assert Path(group["keep"]) == data / "val" / "c.jpg"


def test_the_picture_is_kept_over_its_lossless_re_encode(tmp_path: Path) -> None:
    """A PNG of a JPEG's pixels is larger, and made from the JPEG: the JPEG is kept."""
    pics = tmp_path / "pics"
    pics.mkdir()
    photo("chelsea.png").save(pics / "cat.jpg", quality=85)
    with Image.open(pics / "cat.jpg") as img:
        img.save(pics / "cat.png")  # the same pixels, more bytes
    os.utime(pics / "cat.png", ns=(OLD, OLD))  # even when it looks older
    [group] = groups_of(pics, tmp_path / "index")
    assert Path(group["keep"]).name == "cat.jpg"
    assert group["why"] == "the picture itself, not a copy made from it"
    [copy] = group["files"][1:]
    assert (Path(copy["path"]).name, copy["kind"], copy["distance"]) == ("cat.png", "pixel", 0)


def test_the_picture_is_kept_over_its_mirrored_copy(tmp_path: Path) -> None:
    pics = tmp_path / "pics"
    pics.mkdir()
    picture = photo("rocket.jpg")
    picture.save(pics / "rocket.jpg", quality=80)
    ImageOps.mirror(picture).save(pics / "mirrored.png")  # larger file, newer
    os.utime(pics / "rocket.jpg", ns=(OLD, OLD))
    os.utime(pics / "mirrored.png", ns=(NEW, NEW))
    [group] = groups_of(pics, tmp_path / "index", "--transforms", "rotate,flip")
    assert Path(group["keep"]).name == "rocket.jpg"
    [copy] = group["files"][1:]
    assert (Path(copy["path"]).name, copy["transform"]) == ("mirrored.png", "flip_lr")


def test_copies_of_each_other_inside_a_group_are_shown_as_such(tmp_path: Path) -> None:
    """The keeper is the large original; two small copies are byte for byte the same file:
    each is a near copy of the keeper, and the one listed second says it has the bytes of the
    first."""
    pics = tmp_path / "pics"
    pics.mkdir()
    picture = photo("coffee.png")
    picture.save(pics / "original.png")
    picture.resize((300, 200)).save(pics / "small.jpg", quality=80)
    (pics / "small-again.jpg").write_bytes((pics / "small.jpg").read_bytes())
    [group] = groups_of(pics, tmp_path / "index")
    assert Path(group["keep"]).name == "original.png"
    files = {Path(f["path"]).name: f for f in group["files"][1:]}
    assert files["small.jpg"]["kind"] == files["small-again.jpg"]["kind"] == "near"
    second = files["small.jpg"]  # listed after small-again.jpg (by name)
    assert (Path(second["same_as"]).name, second["same_kind"]) == ("small-again.jpg", "exact")
    assert "same_as" not in files["small-again.jpg"]
    text = dupwatch("groups", index=tmp_path / "index").stdout
    assert f"same bytes as {pics / 'small-again.jpg'}" in text


def record(file_id: int, side: int, mtime: int = OLD, fmt: str = "JPEG") -> FileRecord:
    return FileRecord(file_id, b"/p/%d" % file_id, 1, file_id, side, mtime, 0, bytes(16),
                      side, side, fmt)  # fmt: skip


def test_a_pixel_copy_has_no_distance() -> None:
    """Same pixels, but the drafted decodes the hashes come from can differ a little: a pixel
    copy is shown at distance 0, never as `pixel 3`."""
    records = {1: record(1, 100), 2: record(2, 100, fmt="PNG")}
    pairs = {1: [Pair(2, 3, Kind.PIXEL)], 2: [Pair(1, 3, Kind.PIXEL)]}
    [group] = build_groups(records, pairs, Keeper("largest"))
    assert [(m.kind, m.distance) for m in group.members] == [(Kind.PIXEL, 0)]


def test_a_copy_of_a_turned_keeper_is_not_stranded() -> None:
    """B is A mirrored and was ranked first; C matches only A. C still shows, via A."""
    records = {1: record(1, 100), 2: record(2, 200), 3: record(3, 50)}
    pairs = {
        1: [Pair(2, 0, Kind.NEAR, "flip_lr"), Pair(3, 2, Kind.NEAR)],
        2: [Pair(1, 0, Kind.NEAR, "flip_lr")],
        3: [Pair(1, 2, Kind.NEAR)],
    }
    [group] = build_groups(records, pairs, Keeper("largest"))  # no derived copies known
    assert group.keep.id == 2
    via = {m.record.id: m.via and m.via.id for m in group.members}
    assert via == {1: None, 3: 1}
