"""The duplicate benchmark at a small size: a regression in hashing or matching fails here.

The generator is tests/bench/dupbench.py (the full run is tests/bench/accuracy.py); here 16
originals from real photographs and 4 copies per transform, indexed by the real Index.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from dupwatch.index import DEFAULT_RADIUS, Index

_SPEC = importlib.util.spec_from_file_location(
    "dupbench", Path(__file__).parent / "bench" / "dupbench.py"
)
assert _SPEC is not None and _SPEC.loader is not None
dupbench = importlib.util.module_from_spec(_SPEC)
sys.modules["dupbench"] = dupbench  # dataclasses look their module up by name
_SPEC.loader.exec_module(dupbench)


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
