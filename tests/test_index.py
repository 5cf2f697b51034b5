"""The Index on real photographs (scikit-image's) in a real LMDB in a temporary folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dupwatch.index import Fingerprint, Index, IndexMismatch, Kind, StoreError
from dupwatch.index.store import Store

from support import SKIMAGE_DATA


def photo(name: str) -> Image.Image:
    return Image.open(SKIMAGE_DATA / name).convert("RGB")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Originals and copies made the ways duplicates really arrive."""
    pics = tmp_path / "pics"
    pics.mkdir()
    astronaut = photo("astronaut.png")
    astronaut.save(pics / "astronaut.jpg", quality=92)
    shutil.copy(pics / "astronaut.jpg", pics / "astronaut_copy.jpg")
    astronaut.resize((256, 256), Image.Resampling.LANCZOS).save(pics / "small.jpg", quality=80)
    astronaut.save(pics / "recompressed.jpg", quality=40)
    astronaut.save(pics / "astronaut.webp", quality=80)
    # Stored rotated, with an EXIF tag that says to turn it back upright.
    exif = Image.Exif()
    exif[0x0112] = 6
    astronaut.transpose(Image.Transpose.ROTATE_90).save(
        pics / "rotated_tag.jpg", quality=92, exif=exif
    )
    chelsea = photo("chelsea.png")
    chelsea.save(pics / "chelsea.png")
    chelsea.save(pics / "chelsea_resaved.png", compress_level=1)  # same pixels, other bytes
    photo("coffee.png").save(pics / "coffee.jpg")
    photo("rocket.jpg").save(pics / "rocket.jpg")
    Image.fromarray(np.asarray(photo("motorcycle_left.png"))).save(pics / "motorcycle.png")
    return pics


@pytest.fixture
def index(tmp_path: Path):
    with Index.open(tmp_path / "index") as index:
        yield index


def by_name(matches) -> dict[str, tuple[Kind, int]]:
    return {Path(m.record.fspath).name: (m.kind, m.distance) for m in matches if not m.is_self}


def test_copies_are_found_with_their_kind(folder: Path, index: Index) -> None:
    report = index.update([folder])
    assert report.hashed == 11 and not report.failed
    found = by_name(index.query(folder / "astronaut.jpg"))
    assert found["astronaut_copy.jpg"] == (Kind.EXACT, 0)
    for name in ("small.jpg", "recompressed.jpg", "astronaut.webp", "rotated_tag.jpg"):
        kind, distance = found[name]
        assert kind == Kind.NEAR and distance <= 4, (name, distance)
    assert found["rotated_tag.jpg"][1] <= 2  # EXIF orientation applied before hashing
    assert by_name(index.query(folder / "chelsea.png")) == {"chelsea_resaved.png": (Kind.PIXEL, 0)}
    for unrelated in ("coffee.jpg", "rocket.jpg", "motorcycle.png"):
        assert by_name(index.query(folder / unrelated)) == {}


def test_query_marks_the_file_itself(folder: Path, index: Index) -> None:
    index.update([folder])
    matches = index.query(folder / "coffee.jpg")
    assert [(m.is_self, Path(m.record.fspath).name) for m in matches] == [(True, "coffee.jpg")]
    assert matches[0].to_json()["self"] is True


def test_an_unchanged_file_is_not_hashed_again(folder: Path, index: Index) -> None:
    first = index.add(folder / "coffee.jpg")
    again = index.add(folder / "coffee.jpg")
    assert first.hashed and not again.hashed and again.record == first.record
    rescan = index.update([folder])
    assert rescan.unchanged == 1 and rescan.hashed == 10
    assert index.update([folder]).hashed == 0


def test_a_changed_file_is_hashed_again(folder: Path, index: Index) -> None:
    index.update([folder])
    photo("coffee.png").rotate(90).save(folder / "rocket.jpg")
    report = index.update([folder])
    assert report.hashed == 1
    assert "coffee.jpg" not in by_name(index.query(folder / "rocket.jpg", 2))


def test_move_follows_the_file_without_hashing(folder: Path, index: Index) -> None:
    index.update([folder])
    before = index.get(folder / "small.jpg")
    os.rename(folder / "small.jpg", folder / "renamed.jpg")
    assert index.move(folder / "small.jpg", folder / "renamed.jpg") == 1
    after = index.get(folder / "renamed.jpg")
    assert index.get(folder / "small.jpg") is None
    assert (after.id, after.bits, after.digest) == (before.id, before.bits, before.digest)
    assert "renamed.jpg" in by_name(index.query(folder / "astronaut.jpg"))
    assert index.update([folder]).hashed == 0  # the stat still matches: nothing to hash
    assert index.check() == []


def test_moving_a_folder_moves_every_file_under_it(folder: Path, index: Index) -> None:
    index.update([folder])
    moved = folder.parent / "elsewhere"
    os.rename(folder, moved)
    assert index.move(folder, moved) == 11
    assert index.update([moved]).hashed == 0
    assert index.check() == []


def test_remove_takes_the_hash_out_of_the_search_with_the_last_file(
    folder: Path, index: Index
) -> None:
    shutil.copy(folder / "coffee.jpg", folder / "coffee_copy.jpg")
    index.update([folder])
    bits = index.get(folder / "coffee.jpg").bits
    assert index.remove(folder / "coffee.jpg")
    assert bits in index.hashes  # coffee_copy.jpg still has it
    assert index.remove(folder / "coffee_copy.jpg")
    assert bits not in index.hashes
    assert not index.remove(folder / "coffee.jpg")
    assert index.check() == []


def test_files_gone_from_disk_leave_the_index(folder: Path, index: Index) -> None:
    index.update([folder])
    (folder / "coffee.jpg").unlink()
    report = index.update([folder])
    assert report.removed == 1 and report.hashed == 0
    assert index.get(folder / "coffee.jpg") is None
    assert len(index) == 10 and index.check() == []


def test_groups_keep_the_largest_resolution(folder: Path, index: Index) -> None:
    index.update([folder])
    groups = {Path(g.keep.fspath).name: g for g in index.groups()}
    astronaut = [g for g in groups.values() if "small.jpg" in by_name(g.members)]
    assert len(astronaut) == 1
    assert astronaut[0].keep.width == 512
    assert "small.jpg" not in groups
    names = {Path(g.keep.fspath).name for g in groups.values()}
    assert not names & {"coffee.jpg", "rocket.jpg", "motorcycle.png"}


def test_groups_are_built_around_the_keeper_and_do_not_chain(tmp_path: Path) -> None:
    """A~B and B~C at the radius, A and C apart: C is never made a copy of A, it is shown
    via B (every pair is in a group)."""
    with Index.open(tmp_path / "index", radius=4) as index:
        base = 0xFFFFFFFF  # 32 bits set: a hash that means something (fingerprint/detail.py)
        a, b, c = base, base ^ 0b111, base ^ 0b111111  # distances: a-b 3, b-c 3, a-c 6
        stat = os.stat(tmp_path)
        fingerprints = {"a": (a, 300), "b": (b, 200), "c": (c, 100)}
        for name, (bits, side) in fingerprints.items():
            fp = Fingerprint(bits, name.encode() * 16, side, side, "PNG", side)
            index.put(tmp_path / f"{name}.png", fp, stat)
        groups = index.groups()
        assert len(groups) == 1
        members = {
            Path(m.record.fspath).name: (m.via and Path(m.via.fspath).name, m.distance)
            for m in groups[0].members
        }
        assert Path(groups[0].keep.fspath).name == "a.png"
        assert members == {"b.png": (None, 3), "c.png": ("b.png", 3)}


def test_the_index_survives_closing_and_reopening(folder: Path, tmp_path: Path) -> None:
    with Index.open(tmp_path / "index") as index:
        index.update([folder])
        expected = [m.to_json() for m in index.query(folder / "astronaut.jpg")]
    with Index.open(tmp_path / "index", readonly=True) as index:
        assert [m.to_json() for m in index.query(folder / "astronaut.jpg")] == expected
        assert len(index) == 11 and index.check() == []


def test_other_hash_parameters_are_refused(tmp_path: Path) -> None:
    Index.open(tmp_path / "index").close()
    with pytest.raises(IndexMismatch, match="other hash parameters"):
        Store(tmp_path / "index", hash_params={"algo": "dhash", "hash_size": 16})


def test_a_missing_index_is_a_clear_error_when_read_only(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no index here yet"):
        Index.open(tmp_path / "nothing", readonly=True)


def test_a_larger_radius_recomputes_the_pairs(folder: Path, index: Index) -> None:
    index.update([folder])
    tight = index.groups(0)
    loose = index.groups(16)
    assert sum(len(g.members) for g in loose) >= sum(len(g.members) for g in tight)
    assert index.check() == []


def test_a_file_that_failed_is_read_again_only_when_it_changes(folder: Path, index: Index) -> None:
    bad = folder / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff" + b"garbage" * 10)
    first = index.update([folder])
    assert [Path(e.path).name for e in first.failed] == ["broken.jpg"]
    again = index.plan([folder])
    assert again.to_hash == [] and [Path(e.path).name for e in again.still_failing] == [
        "broken.jpg"
    ]
    assert [Path(e.path).name for e in index.update([folder]).failed] == ["broken.jpg"]
    photo("coffee.png").save(bad)  # repaired: it is hashed this time
    repaired = index.update([folder])
    assert repaired.hashed == 1 and repaired.failed == [] and index.failures() == []
    bad.unlink()
    bad.write_bytes(b"")
    index.update([folder])
    bad.unlink()
    index.update([folder])
    assert index.failures() == []  # gone from disk: forgotten


def test_same_pixel_copies_are_decoded_once_each(tmp_path: Path, index: Index) -> None:
    """Each new same-size copy needs its own full decode only, not one per earlier copy."""
    pics = tmp_path / "resaved"
    pics.mkdir()
    chelsea = photo("chelsea.png")
    for level in range(1, 6):
        chelsea.save(pics / f"copy{level}.png", compress_level=level)
        result = index.add(pics / f"copy{level}.png")
        assert [m.kind for m in result.matches] == [Kind.PIXEL] * (level - 1)
        assert result.record.has_pixel_digest == (level > 1)
    records = list(index.files())
    assert len({r.pixel_digest for r in records}) == 1  # the first got its digest on demand
    photo("chelsea.png").rotate(180).save(pics / "turned.png")  # same size, other pixels
    turned = index.add(pics / "turned.png")
    assert all(m.kind != Kind.PIXEL for m in turned.matches)


def test_resaves_whose_thumbnails_differ_are_near_without_a_full_decode(
    tmp_path: Path, index: Index
) -> None:
    """A JPEG saved again at another quality (same size, same pHash, other pixels) is near,
    told by the thumbnails alone: neither file is decoded in full. One whose pixels are the
    same (EXIF changed), or a PNG of the same pixels, is still decoded and found pixel."""
    pics = tmp_path / "jpegs"
    pics.mkdir()
    chelsea = photo("chelsea.png").convert("RGB")
    chelsea.save(pics / "q95.jpg", quality=95)
    chelsea.save(pics / "q85.jpg", quality=85)
    first, resaved = index.add(pics / "q95.jpg"), index.add(pics / "q85.jpg")
    assert resaved.record.bits == first.record.bits  # only pixels could tell them apart
    assert [(m.record.id, m.kind) for m in resaved.matches] == [(first.record.id, Kind.NEAR)]
    assert not any(r.has_pixel_digest for r in index.files())
    data = (pics / "q95.jpg").read_bytes()
    comment = b"labelled 2026-12-06"
    segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
    (pics / "q95-noted.jpg").write_bytes(data[:2] + segment + data[2:])  # the same coefficients
    with Image.open(pics / "q95.jpg") as img:
        img.save(pics / "q95.png")  # the same pixels in another format
    for name in ("q95-noted.jpg", "q95.png"):
        again = index.add(pics / name)
        assert (first.record.id, Kind.PIXEL) in [(m.record.id, m.kind) for m in again.matches]
