"""The duplicate benchmark at a small size: a regression in hashing or matching fails here.

The generator is tests/bench/dupbench.py (the full run is tests/bench/accuracy.py); here 16
originals from real photographs and 4 copies per transform, indexed by the real Index.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from dupwatch.index import DEFAULT_RADIUS, Index
from dupwatch.index.fingerprint import fingerprint, match_distance

from support import bench_module, dupwatch

dupbench = bench_module("dupbench")


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("dupbench") / "files"
    return dupbench.generate(folder, seed=11, count=16, copies=4, sizes=(256, 400))


def index_pairs(bench, tmp_path: Path, transforms: tuple[str, ...] = ()) -> dict:
    """The pairs the real Index reports as the benchmark's files arrive, with their kind."""
    with Index.open(tmp_path / "index", transforms=transforms) as index:
        report = index.update([bench.folder], workers=1)
    assert not report.failed
    pairs = {}
    for result in report.results:
        for match in result.matches:
            key = frozenset((Path(result.record.fspath).name, Path(match.record.fspath).name))
            pairs[key] = (str(match.kind), match.transform)
    return pairs


def test_the_generator_writes_its_ground_truth(bench) -> None:
    truth = json.loads((bench.folder / "truth.json").read_text())
    assert len(truth["groups"]) == 16
    assert len(truth["files"]) == 16 + 4 * len(dupbench.TRANSFORMS)
    assert all((bench.folder / name).is_file() for name in truth["files"])
    assert "seed=11" in truth["description"][0]
    again = dupbench.load(bench.folder)
    assert again.groups == bench.groups


def test_the_generator_is_reproducible(bench, tmp_path: Path) -> None:
    twin = dupbench.generate(tmp_path / "twin", seed=11, count=16, copies=4, sizes=(256, 400))
    assert twin.files == bench.files
    name = sorted(bench.files)[0]
    assert (twin.folder / name).read_bytes() == (bench.folder / name).read_bytes()


def test_exact_and_pixel_classes_are_perfect_and_near_clears_the_floor(bench, tmp_path) -> None:
    pairs = index_pairs(bench, tmp_path)
    score = dupbench.score(bench, pairs)
    for transform in dupbench.TRANSFORMS:
        if transform.kind in (dupbench.EXACT, dupbench.PIXEL):
            assert score.recall[transform.name] == 1.0, transform.name
            assert score.precision[transform.name] == 1.0, transform.name
    truth = dupbench.true_pairs(bench)
    assert all(pairs[p][0] == "exact" for p in truth["byte_copy"])
    assert score.near_recall >= 0.9, score.recall
    assert score.near_false == 0
    assert score.near_f1 >= 0.94


def test_letterboxed_and_padded_copies_are_found_at_the_defaults(bench, tmp_path) -> None:
    score = dupbench.score(bench, index_pairs(bench, tmp_path))
    assert score.recall["letterbox"] + score.recall["pad_square"] >= 2 * 0.75, score.recall


def test_rotate_flip_and_crop_transforms_find_the_hard_copies(bench, tmp_path) -> None:
    plain = dupbench.score(bench, index_pairs(bench, tmp_path / "plain"))
    pairs = index_pairs(bench, tmp_path / "all", ("rotate", "flip", "crop"))
    score = dupbench.score(bench, pairs)
    for name in dupbench.ROTATE_FLIP:
        assert score.recall[name] == 1.0, name
        assert plain.recall[name] == 0.0, name
    assert score.recall["crop20"] >= 0.5
    assert score.near_false == 0
    rotated = dupbench.true_pairs(bench)["rot90"]
    assert {pairs[p][1] for p in rotated} <= {"rot90", "rot270"}  # by which file came first
    assert DEFAULT_RADIUS >= 8


# --- the centre's second opinion (fingerprint.match_distance) --------------------------------


def photo_tile(name: str, row: int, col: int, side: int = 320) -> Image.Image:
    """A 112 px tile of a photograph a package ships, as the benchmark cuts them, scaled up."""
    [source] = [s for s in dupbench.sources() if s.name == name]
    photo = Image.open(source.path).convert("RGB")
    tile = photo.crop((col * 112, row * 112, (col + 1) * 112, (row + 1) * 112))
    return tile.resize((side, side), Image.Resampling.LANCZOS)


def test_the_centre_tells_look_alikes_apart_and_keeps_a_mild_crop(tmp_path: Path) -> None:
    """Two different pictures with little in them whose whole-picture pHashes are 12 apart
    (a grass tile, a tile of china.jpg) are not paired at the default radius, since their
    centres disagree; a photo with 4% cut off each side, 12 apart too, is paired."""
    [source] = [s for s in dupbench.sources() if s.name == "astronaut.png"]
    astronaut = Image.open(source.path).convert("RGB")
    astronaut.thumbnail((512, 512))
    astronaut.save(tmp_path / "astronaut.png")
    w, h = astronaut.size
    astronaut.crop((20, 20, w - 20, h - 20)).save(tmp_path / "astronaut_cut.png")
    photo_tile("grass.png", 1, 3).save(tmp_path / "grass.png")
    photo_tile("china.jpg", 2, 4).save(tmp_path / "china.png")

    fps = {p.stem: fingerprint(p) for p in tmp_path.glob("*.png")}
    full = {pair: (fps[pair[0]].bits ^ fps[pair[1]].bits).bit_count()
            for pair in (("astronaut", "astronaut_cut"), ("grass", "china"))}  # fmt: skip
    assert full == {("astronaut", "astronaut_cut"): 12, ("grass", "china"): 12}
    assert match_distance(12, fps["grass"].centre, fps["china"].centre) > DEFAULT_RADIUS
    assert match_distance(12, fps["astronaut"].centre, fps["astronaut_cut"].centre) <= 12

    with Index.open(tmp_path / "index") as index:
        assert index.radius == DEFAULT_RADIUS == 12
        for stem in ("astronaut", "grass"):
            assert index.add(tmp_path / f"{stem}.png").matches == []
        [cut] = index.add(tmp_path / "astronaut_cut.png").matches
        assert (Path(cut.record.fspath).name, str(cut.kind)) == ("astronaut.png", "near")
        assert index.add(tmp_path / "china.png").matches == []
        by_hash = index.query(fps["china"].bits)  # by hash alone there is no centre to ask
        assert [(Path(m.record.fspath).name, m.distance) for m in by_hash] == [
            ("china.png", 0),
            ("grass.png", 12),
        ]

    compared = dupwatch("compare", "--json", tmp_path / "china.png", tmp_path / "grass.png")
    assert compared.returncode == 1, compared.stderr
    result = json.loads(compared.stdout)
    assert result["distances"]["full"] == 12 and result["distances"]["centre"] > 20
    assert result["smallest_radius"] == result["distances"]["dupwatch"] > DEFAULT_RADIUS


def test_match_distance_is_the_full_distance_raised_to_the_mean_with_the_centre() -> None:
    assert match_distance(10) == 10  # a centre unknown on either side
    assert match_distance(10, 0b1111, None) == 10
    assert match_distance(10, 0, 0) == 10  # the centre agrees: the full distance
    assert match_distance(10, 0, (1 << 14) - 1) == 12  # mean of 10 and 14
    assert match_distance(10, 0, (1 << 15) - 1) == 13  # rounded up: never below the mean
    assert match_distance(12, 0, (1 << 28) - 1) == 20
