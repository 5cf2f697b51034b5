"""Turned, mirrored, cropped and framed copies: border trimming, --transforms, dupwatch compare."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dupwatch.daemon.config import ConfigError, load_config
from dupwatch.index import Index
from dupwatch.index.compare import compare
from dupwatch.index.fingerprint import comparison_picture
from dupwatch.index.fingerprint.confirm import crop_evidence, turn_correlation
from dupwatch.index.fingerprint.geometry import border_box
from dupwatch.index.fingerprint.transforms import (
    ORIENTATION_NAMES,
    TransformError,
    orientations_for,
    parse_transforms,
)

from support import dupwatch

# --- the option ------------------------------------------------------------------------------


def test_parse_transforms() -> None:
    assert parse_transforms("rotate,flip") == {"rotate", "flip"}
    assert parse_transforms(["crop", " flip "]) == {"crop", "flip"}
    assert parse_transforms(None) == frozenset() == parse_transforms("")
    with pytest.raises(TransformError, match="unknown transform 'spin'"):
        parse_transforms("rotate,spin")


def test_orientations_queried_for_each_option() -> None:
    assert orientations_for(["rotate"]) == ("rot90", "rot180", "rot270")
    assert orientations_for(["flip"]) == ("flip_lr", "flip_tb")
    assert orientations_for(["rotate", "flip"]) == ORIENTATION_NAMES[1:]
    assert orientations_for(["crop"]) == ()


def test_config_file_takes_transforms(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('transforms = ["rotate", "flip"]\n')
    assert load_config(good).transforms == ("flip", "rotate")
    bad = tmp_path / "bad.toml"
    bad.write_text('transforms = ["rotate", "spin"]\n')
    with pytest.raises(ConfigError, match="bad.toml: transforms: unknown transform 'spin'"):
        load_config(bad)


# --- border trimming on the thumbnail ----------------------------------------------------------


def test_border_box_finds_bars_and_leaves_pictures_alone() -> None:
    rng = np.random.default_rng(3)
    picture = rng.integers(40, 220, (60, 80)).astype(np.uint8)
    boxed = np.zeros((100, 80), np.uint8)
    boxed[20:80] = picture
    assert border_box(boxed) == (0, 20, 80, 80)
    padded = np.full((100, 120), 255, np.uint8)
    padded[20:80, 20:100] = picture
    assert border_box(padded) == (20, 20, 100, 80)
    assert border_box(picture) == (0, 0, 80, 60)
    assert border_box(np.full((50, 50), 7, np.uint8)) == (0, 0, 50, 50)  # flat: no picture


def test_a_mostly_black_picture_is_not_trimmed() -> None:
    wedge = np.zeros((100, 100), np.uint8)
    wedge[:30, :30] = 200  # the bright corner of a dark photo, not a letterboxed picture
    assert border_box(wedge) == (0, 0, 100, 100)


# --- the Index with --transforms -------------------------------------------------------------


@pytest.fixture
def copies(photo) -> dict[str, Path]:
    picture = photo.image("motorcycle_left.png")
    return {
        "original": photo.save(picture, "original.jpg", quality=92),
        "rot90": photo.save(picture.transpose(Image.Transpose.ROTATE_90), "rot90.jpg"),
        "mirror": photo.save(picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "mirror.png"),
        "crop": photo.save(picture.crop((70, 20, 663, 420)), "crop.jpg", quality=90),
        "other": photo("coffee.png", fmt="JPEG", filename="other.jpg"),
        "other_turned": photo.save(
            photo.image("coffee.png").transpose(Image.Transpose.ROTATE_270), "other_turned.png"
        ),
    }


def matches_of(index: Index, path: Path) -> dict[str, tuple[str, str | None]]:
    return {
        Path(m.record.fspath).stem: (str(m.kind), m.transform)
        for m in index.query(path)
        if not m.is_self
    }


def test_without_transforms_turned_copies_are_not_found(copies, tmp_path) -> None:
    with Index.open(tmp_path / "index") as index:
        index.update([copies["original"].parent], workers=1)
        assert matches_of(index, copies["rot90"]) == {}


def test_rotate_flip_finds_turned_and_mirrored_copies_and_names_the_transform(
    copies, tmp_path
) -> None:
    with Index.open(tmp_path / "index", transforms=["rotate", "flip"]) as index:
        for name in ("original", "other"):
            index.add(copies[name])
        assert matches_of(index, copies["rot90"]) == {"original": ("near", "rot90")}
        assert matches_of(index, copies["mirror"]) == {"original": ("near", "flip_lr")}
        assert matches_of(index, copies["other_turned"]) == {"other": ("near", "rot270")}
        found = index.query(copies["rot90"])
        assert found[0].to_json()["transform"] == "rot90"
        assert "transform" not in index.query(copies["original"])[0].to_json()  # itself


def test_a_copy_added_later_is_reported_with_its_transform(copies, tmp_path) -> None:
    with Index.open(tmp_path / "index", transforms=["rotate"]) as index:
        index.add(copies["rot90"])
        result = index.add(copies["original"])
        assert [(Path(m.record.fspath).stem, m.transform) for m in result.matches] == [
            ("rot90", "rot270")  # the original is the rotated copy turned 270 degrees
        ]


def test_crop_finds_a_cropped_copy_both_ways(copies, tmp_path) -> None:
    with Index.open(tmp_path / "one", transforms=["crop"]) as index:
        index.add(copies["original"])
        index.add(copies["other"])
        assert matches_of(index, copies["crop"]) == {"original": ("near", "crop")}
    with Index.open(tmp_path / "two", transforms=["crop"]) as index:
        index.add(copies["crop"])
        index.add(copies["other"])
        assert matches_of(index, copies["original"]) == {"crop": ("near", "uncrop")}
    assert (tmp_path / "two" / "crops" / "data.mdb").exists()


def test_confirmation_tells_a_copy_from_another_picture(copies) -> None:
    original = comparison_picture(copies["original"])
    assert turn_correlation(comparison_picture(copies["rot90"]), original, "rot90") > 0.95
    assert turn_correlation(comparison_picture(copies["other"]), original, "identity") < 0.8
    crop = crop_evidence(comparison_picture(copies["crop"]), original, True)
    assert crop.confirmed and crop.correlation > 0.95 and crop.detail > 0.5
    other = crop_evidence(comparison_picture(copies["other"]), original, True)
    assert not other.confirmed and other.correlation < 0.8


# --- dupwatch compare --------------------------------------------------------------------------


def test_compare_reports_each_hash_and_the_radius_to_match(copies) -> None:
    same = compare(copies["original"], copies["original"], radius=10)
    assert (same.kind, same.distance, same.smallest_radius) == ("exact", 0, 0)
    turned = compare(copies["rot90"], copies["original"], radius=10)
    assert not turned.matches
    assert turned.smallest_radius == turned.distance > 10
    assert set(turned.distances) == {"pHash", "dHash", "aHash", "wHash"}
    assert min(turned.orientations, key=turned.orientations.get) == "rot90"
    with_rotation = compare(copies["rot90"], copies["original"], radius=10, transforms=["rotate"])
    assert (with_rotation.kind, with_rotation.transform) == ("near", "rot90")
    cropped = compare(copies["crop"], copies["original"], radius=10, transforms=["crop"])
    assert (cropped.kind, cropped.transform) == ("near", "crop")
    assert cropped.crop["correlation"] > 0.9


def test_dupwatch_compare_command(copies) -> None:
    done = dupwatch("compare", "--json", copies["rot90"], copies["original"])
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert result["match"] is False
    assert result["smallest_radius"] == result["distances"]["dupwatch"]
    assert result["orientations"]["rot90"] <= 2
    done = dupwatch("compare", "--transforms", "rotate", copies["rot90"], copies["original"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("match: near as rot90 at distance")
    done = dupwatch("compare", "--transforms", "spin", copies["rot90"], copies["original"])
    assert done.returncode == 2
    assert "unknown transform 'spin'" in done.stderr
    done = dupwatch("compare", copies["rot90"], copies["rot90"].with_name("gone.jpg"))
    assert done.returncode == 2
    assert "gone.jpg: no such file" in done.stderr


def test_dupwatch_query_reports_the_transform(copies, tmp_path) -> None:
    index = tmp_path / "index"
    scan = dupwatch("scan", "--index", index, "--json", copies["original"].parent)
    assert scan.returncode in (0, 1), scan.stderr
    done = dupwatch(
        "query", "--index", index, "--socket", tmp_path / "none.sock", "--json",
        "--transforms", "rotate,flip", copies["rot90"],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    matches = json.loads(done.stdout)["matches"]
    original = [m for m in matches if Path(m["path"]).stem == "original"]
    assert original and original[0]["transform"] == "rot90"


def test_groups_keep_the_transform_of_each_pair(copies, tmp_path) -> None:
    """A pair found through --transforms is stored with its transform, as seen from each
    file; groups name it (how each copy is the keeper transformed), a new radius keeps it, and
    removing a copy removes both entries."""
    index_path = tmp_path / "index"
    os.utime(copies["original"], ns=(10**18, 10**18))  # the oldest: the keeper
    with Index.open(index_path, transforms=["rotate", "flip", "crop"]) as index:
        for name in ("original", "rot90", "mirror", "crop", "other"):
            index.add(copies[name])
        assert index.check() == []
        [group] = index.groups(keep="oldest")
        assert Path(group.keep.fspath).stem == "original"
        members = {Path(m.record.fspath).stem: m.transform for m in group.members}
        # The original, turned 90 degrees counter-clockwise, is the rot90 copy; cut down, the crop.
        assert members == {"rot90": "rot90", "mirror": "flip_lr", "crop": "crop"}
        for radius in (14, 6):  # pairs stored again: the transformed ones are kept
            [again] = index.groups(radius, keep="oldest")
            assert {Path(m.record.fspath).stem: m.transform for m in again.members} == members
            assert index.check() == []
        index.remove(copies["rot90"])
        assert index.check() == []
        [group] = index.groups(keep="oldest")
        assert {Path(m.record.fspath).stem for m in group.members} == {"mirror", "crop"}

    listed = dupwatch("groups", "--index", index_path, "--json", "--keep", "oldest")
    assert listed.returncode == 0, listed.stderr
    [group] = json.loads(listed.stdout)["groups"]
    assert {Path(f["path"]).stem: f.get("transform") for f in group["files"]} == {
        "original": None,
        "mirror": "flip_lr",
        "crop": "crop",
    }
    text = dupwatch("groups", "--index", index_path, "--keep", "oldest")
    assert "flip_lr)" in text.stdout


def test_transforms_work_on_an_index_built_without_them(copies, tmp_path) -> None:
    """Issue 15: `--transforms` after the fact. An index built plainly, then asked for groups
    through turns: the turned copies join the original (looked for once, then remembered);
    `crop` cannot be looked for without the crop hashes, and says what to run instead."""
    folder = copies["original"].parent
    index = tmp_path / "index"
    plain = dupwatch("scan", "--index", index, "--json", folder)
    assert plain.returncode == 1, plain.stderr  # no duplicates without transforms
    turned = dupwatch("groups", "--index", index, "--json", "--transforms", "rotate,flip")
    assert turned.returncode == 0, turned.stderr
    groups = json.loads(turned.stdout)["groups"]
    found = {Path(f["path"]).stem: f.get("transform") for g in groups for f in g["files"]}
    assert found["rot90"] and found["mirror"] and "original" in found
    scanned = dupwatch("scan", "--index", index, "--json", "--transforms", "rotate,flip", folder)
    assert scanned.returncode == 0
    assert json.loads(scanned.stdout)["groups"] == groups

    refused = dupwatch("groups", "--index", index, "--transforms", "crop")
    assert refused.returncode == 2
    assert "dupwatch reindex --transforms crop" in refused.stderr
    assert "Traceback" not in refused.stderr
    again = dupwatch("reindex", "--index", index, "--transforms", "crop")
    assert again.returncode == 0, again.stderr
    cropped = dupwatch("groups", "--index", index, "--json", "--transforms", "crop")
    assert cropped.returncode == 0, cropped.stderr
    files = {
        Path(f["path"]).stem: f for g in json.loads(cropped.stdout)["groups"] for f in g["files"]
    }
    assert files["crop"]["transform"] == "crop"
