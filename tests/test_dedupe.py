"""dupwatch dedupe and undo, end to end on real photographs: nothing is ever lost."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from dupwatch.index import Fingerprint, Index
from dupwatch.index.cleanup.moves import QuarantineError, move_file
from dupwatch.index.cleanup.quarantine import plan_dedupe

from support import dupwatch, photo


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes)."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture
def pics(tmp_path: Path) -> Path:
    """Two known groups, their labels, and pictures with no copy."""
    pics = tmp_path / "pics"
    (pics / "more").mkdir(parents=True)
    astronaut = photo("astronaut.png")
    astronaut.save(pics / "astronaut.jpg", quality=92)  # keeper: largest, oldest
    shutil.copy(pics / "astronaut.jpg", pics / "more" / "astronaut_copy.jpg")
    astronaut.resize((256, 256), Image.Resampling.LANCZOS).save(pics / "small.jpg", quality=80)
    (pics / "small.txt").write_text("0 0.5 0.5 0.4 0.4\n")  # the YOLO label of small.jpg
    (pics / "astronaut.txt").write_text("0 0.5 0.5 0.4 0.4\n")
    coffee = photo("coffee.png")
    coffee.save(pics / "coffee.png")  # keeper: same resolution, more bytes
    coffee.save(pics / "coffee.jpg", quality=85)
    (pics / "coffee.txt").write_text("1 0.5 0.5 0.9 0.9\n")  # shared by coffee.png/.jpg: stays
    photo("rocket.jpg").save(pics / "rocket.jpg")
    photo("chelsea.png").save(pics / "chelsea.png")
    return pics


@pytest.fixture
def index(pics: Path, tmp_path: Path) -> Path:
    index = tmp_path / "index"
    assert dupwatch("scan", pics, index=index).returncode == 0
    return index


NON_KEEPERS = {"more/astronaut_copy.jpg", "small.jpg", "coffee.jpg"}


def test_dry_run_prints_the_moves_and_moves_nothing(pics: Path, index: Path, tmp_path: Path):
    before = snapshot(pics)
    quarantine = tmp_path / "quarantine"
    result = dupwatch("dedupe", "--to", quarantine, "--dry-run", index=index)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    keeps = [line for line in lines if line.startswith("keep ")]
    moves = [line for line in lines if line.startswith("  would move ")]
    assert len(keeps) == 2 and len(keeps) + len(moves) == len(lines)
    assert all(line.endswith(")") for line in keeps)  # why each copy is the one kept
    sources = {line.split()[2] for line in moves}
    assert sources == {str(pics / name) for name in NON_KEEPERS | {"small.txt"}}
    assert "coffee.txt: also the label of" in result.stderr
    assert snapshot(pics) == before and not quarantine.exists()
    assert len(json.loads(dupwatch("groups", "--json", index=index).stdout)["groups"]) == 2


def test_dedupe_moves_the_copies_and_undo_brings_every_byte_back(
    pics: Path, index: Path, tmp_path: Path
) -> None:
    before = snapshot(pics)
    quarantine = tmp_path / "quarantine"
    result = dupwatch("dedupe", "--to", quarantine, "--json", pics, index=index)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    moved = {Path(m["original"]).relative_to(pics).as_posix() for m in out["moves"]}
    assert moved == NON_KEEPERS | {"small.txt"}
    remaining = set(snapshot(pics))
    assert remaining == set(before) - moved
    # The copies keep their place relative to the folder they were in.
    assert snapshot(quarantine / "pics") == {name: before[name] for name in moved}

    manifest = Path(out["manifest"])
    assert manifest.parent == quarantine and manifest.name.startswith("manifest-")
    entries = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert {Path(e["original"]).relative_to(pics).as_posix() for e in entries} == moved
    for entry in entries:
        data = Path(entry["new"]).read_bytes()
        assert hashlib.blake2b(data, digest_size=16).hexdigest() == entry["digest"]
        assert entry["time"] and isinstance(entry["group"], int)
    sidecar = next(e for e in entries if e["role"] == "sidecar")
    assert sidecar["sidecar_of"] == str(pics / "small.jpg")

    # The index followed: the moved copies are gone from it, so no group is left.
    assert dupwatch("groups", index=index).returncode == 1
    assert dupwatch("check", index=index).returncode == 0

    undo = dupwatch("undo", manifest, index=index)
    assert undo.returncode == 0, undo.stderr
    assert snapshot(pics) == before
    assert "4 files restored" in undo.stderr
    assert len(json.loads(dupwatch("groups", "--json", index=index).stdout)["groups"]) == 2
    assert dupwatch("check", index=index).returncode == 0
    assert [p.name for p in quarantine.iterdir()] == [manifest.name]  # emptied folders go

    again = dupwatch("undo", manifest, index=index)  # a second undo changes nothing
    assert again.returncode == 0 and "4 already back" in again.stderr
    assert snapshot(pics) == before


def test_undo_refuses_a_path_taken_again_and_restores_the_others(
    pics: Path, index: Path, tmp_path: Path
) -> None:
    before = snapshot(pics)
    quarantine = tmp_path / "quarantine"
    assert dupwatch("dedupe", "--to", quarantine, pics, index=index).returncode == 0
    newcomer = photo("camera.png")
    newcomer.save(pics / "small.jpg")  # another picture now has the old name
    newcomer_bytes = (pics / "small.jpg").read_bytes()
    [manifest] = quarantine.glob("manifest-*.jsonl")

    undo = dupwatch("undo", manifest, index=index)
    assert undo.returncode == 2
    assert f"{pics / 'small.jpg'}: the path is taken again" in undo.stderr
    assert "small.txt: left in the quarantine with its image" in undo.stderr
    assert (pics / "small.jpg").read_bytes() == newcomer_bytes  # never overwritten
    assert (quarantine / "pics" / "small.jpg").read_bytes() == before["small.jpg"]
    for name in ("more/astronaut_copy.jpg", "coffee.jpg"):
        assert (pics / name).read_bytes() == before[name]
    assert not (pics / "small.txt").exists()


def test_a_cross_device_move_copies_checks_and_keeps_the_bytes(pics: Path, index: Path) -> None:
    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat(pics).st_dev:
        pytest.skip("no second file system (/dev/shm) on another device here")
    before = snapshot(pics)
    mtime = (pics / "coffee.jpg").stat().st_mtime_ns
    quarantine = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="dupwatch-test-"))
    try:
        result = dupwatch("dedupe", "--to", quarantine, "--json", pics, index=index)
        assert result.returncode == 0, result.stderr
        assert snapshot(quarantine / "pics") == {n: before[n] for n in NON_KEEPERS | {"small.txt"}}
        assert not list(quarantine.rglob("*.dupwatch-partial"))
        assert (quarantine / "pics" / "coffee.jpg").stat().st_mtime_ns == mtime
        [manifest] = quarantine.glob("manifest-*.jsonl")
        assert dupwatch("undo", manifest, index=index).returncode == 0
        assert snapshot(pics) == before
    finally:
        shutil.rmtree(quarantine)  # the test's own folder in /dev/shm


def test_a_cross_device_copy_that_does_not_match_is_not_moved(tmp_path: Path) -> None:
    if os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second file system (/dev/shm) on another device here")
    source = tmp_path / "a.jpg"
    photo("rocket.jpg").save(source)
    data = source.read_bytes()
    target = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="dupwatch-test-"))
    try:
        wrong = hashlib.blake2b(b"other bytes", digest_size=16).digest()
        with pytest.raises(QuarantineError, match="its bytes changed since it was indexed"):
            move_file(bytes(source), bytes(target / "a.jpg"), expected=wrong)
        assert source.read_bytes() == data and list(target.iterdir()) == []
    finally:
        shutil.rmtree(target)


def test_keeper_policies_choose_the_copy_to_keep(pics: Path, index: Path) -> None:
    for name, mtime_ns in (("small.jpg", 10**9), ("astronaut.jpg", 10**17)):
        os.utime(pics / name, ns=(mtime_ns, mtime_ns))
    os.utime(pics / "more" / "astronaut_copy.jpg", ns=(10**18, 10**18))
    assert dupwatch("scan", pics, index=index).returncode == 0

    def keeper(*options: str) -> str:
        groups = json.loads(dupwatch("groups", "--json", *options, index=index).stdout)["groups"]
        [group] = [g for g in groups if "astronaut" in g["keep"] or "small" in g["keep"]]
        return Path(group["keep"]).relative_to(pics).as_posix()

    assert keeper() == "astronaut.jpg"  # largest resolution, then largest file, then oldest
    assert keeper("--keep", "newest") == "more/astronaut_copy.jpg"
    assert keeper("--keep", "oldest") == "small.jpg"
    assert keeper("--keep", "shortest") == "small.jpg"
    assert keeper("--keep", "shortest", "--prefer", str(pics / "more")) == "more/astronaut_copy.jpg"
    assert keeper("--prefer", str(pics / "more")) == "more/astronaut_copy.jpg"


def test_groups_do_not_chain_and_dedupe_never_moves_the_last_copy(tmp_path: Path) -> None:
    """A~B and B~C with A and C apart: C is never a copy of A's (it is shown via B), and it
    is not moved."""
    pics = tmp_path / "chain"
    pics.mkdir()
    index_path = tmp_path / "index"
    with Index.open(index_path, radius=4) as index:
        base = 0xFFFFFFFF  # 32 bits set: a hash that means something (fingerprint/detail.py)
        chain = (("a", base, 300), ("b", base ^ 0b111, 200), ("c", base ^ 0b111111, 100))
        for name, bits, side in chain:
            path = pics / f"{name}.png"
            photo("chelsea.png").resize((side, side)).save(path)
            data = path.read_bytes()
            digest = hashlib.blake2b(data, digest_size=16).digest()
            index.put(path, Fingerprint(bits, digest, side, side, "PNG", len(data)), path.stat())
        [group] = index.groups()
        plan = plan_dedupe(index.groups(), tmp_path / "quarantine")
    assert Path(group.keep.fspath).name == "a.png"
    via = {Path(m.record.fspath).name: m.via and Path(m.via.fspath).name for m in group.members}
    assert via == {"b.png": None, "c.png": "b.png"}
    assert [Path(os.fsdecode(m.source)).name for m in plan.moves] == ["b.png"]
    assert any("c.png: a copy of" in note and "left in place" in note for note in plan.notes)

    quarantine = tmp_path / "quarantine"
    result = dupwatch("dedupe", "--to", quarantine, "--radius", "4", "--json", index=index_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in pics.iterdir()) == ["a.png", "c.png"]


def test_a_group_whose_keeper_is_gone_is_left_alone(pics: Path, index: Path, tmp_path: Path):
    aside = tmp_path / "aside.png"
    os.rename(pics / "coffee.png", aside)  # the keeper leaves (the index does not know yet)
    result = dupwatch("dedupe", "--to", tmp_path / "quarantine", "--json", index=index)
    moved = {Path(m["original"]).name for m in json.loads(result.stdout)["moves"]}
    assert "coffee.jpg" not in moved and (pics / "coffee.jpg").exists()
    assert "coffee.png: the copy to keep changed or is gone" in result.stderr
    os.rename(aside, pics / "coffee.png")


def test_a_quarantine_inside_the_folder_is_refused(pics: Path, index: Path) -> None:
    result = dupwatch("dedupe", "--to", pics / "dupes", pics, index=index)
    assert result.returncode == 2
    assert "the quarantine lies inside" in result.stderr
    assert not (pics / "dupes").exists()
    around = dupwatch("dedupe", "--to", pics.parent, pics, index=index)
    assert around.returncode == 2 and "the quarantine holds" in around.stderr


@pytest.fixture
def yolo(tmp_path: Path) -> Iterator[Path]:
    """The YOLO layout: images/train/x.jpg with its label in labels/train/x.txt."""
    data = tmp_path / "data"
    (data / "images" / "train").mkdir(parents=True)
    (data / "labels" / "train").mkdir(parents=True)
    astronaut = photo("astronaut.png")
    astronaut.save(data / "images" / "train" / "a.jpg", quality=92)
    astronaut.resize((200, 200)).save(data / "images" / "train" / "b.jpg", quality=80)
    (data / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.3 0.3\n")
    (data / "labels" / "train" / "b.txt").write_text("0 0.5 0.5 0.3 0.3\n")
    yield data


def test_yolo_labels_travel_with_their_image_and_come_back(yolo: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    assert dupwatch("scan", yolo, index=index).returncode == 0
    before = snapshot(yolo)
    quarantine = tmp_path / "q"
    result = dupwatch("dedupe", "--to", quarantine, yolo, index=index)
    assert result.returncode == 0, result.stderr
    assert set(snapshot(quarantine / "data")) == {"images/train/b.jpg", "labels/train/b.txt"}
    assert set(snapshot(yolo)) == {"images/train/a.jpg", "labels/train/a.txt"}
    [manifest] = quarantine.glob("manifest-*.jsonl")
    assert dupwatch("undo", manifest, index=index).returncode == 0
    assert snapshot(yolo) == before


def test_without_a_folder_the_quarantine_keeps_paths_under_the_scanned_folder(
    pics: Path, index: Path, tmp_path: Path
) -> None:
    quarantine = tmp_path / "quarantine"
    result = dupwatch("dedupe", "--to", quarantine, "--json", index=index)  # no DIR named
    assert result.returncode == 0, result.stderr
    new = {
        Path(m["new"]).relative_to(quarantine).as_posix()
        for m in json.loads(result.stdout)["moves"]
    }
    # pics/ was scanned: its name, then the path inside it (not the whole absolute path)
    assert new == {f"pics/{name}" for name in NON_KEEPERS | {"small.txt"}}
