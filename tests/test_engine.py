"""The local hashing engine: batches of files to capped worker processes, outcomes back a
batch at a time, the same outcome for every file as in this process; a crash or an overrun
blamed on the one file that caused it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from PIL import Image

from dupwatch.index import Fingerprint, Index
from dupwatch.index.errors import FingerprintError, UnreadableFile
from dupwatch.index.hashing.engine import MAX_BATCH, batches
from dupwatch.index.hashing.local import LocalEngine, map_bounded
from dupwatch.index.hashing.tasks import hash_file

from poison import hash_or_die
from support import photo


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """Tiles of real photographs, and files that cannot be fingerprinted."""
    folder = tmp_path_factory.mktemp("engine")
    paths = []
    for i, name in enumerate(("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")):
        img = photo(name)
        for k in range(24):
            x, y = k % 6 * 40, k // 6 * 40
            path = folder / f"{i}-{k}.{'jpg' if k % 2 else 'png'}"
            img.crop((x, y, x + 120, y + 100)).save(path)
            paths.append(path)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.png").write_bytes(b"not a picture" * 20)
    Image.new("RGB", (64, 64)).save(folder / "whole.png")
    (folder / "truncated.png").write_bytes((folder / "whole.png").read_bytes()[:60])
    os.symlink(folder / "0-0.png", folder / "link.png")
    paths += [folder / n for n in ("empty.jpg", "text.png", "truncated.png", "link.png")]
    paths.append(folder / "missing.png")
    return [os.fsencode(p) for p in paths]


def test_batches_cover_every_path_once_and_shrink_at_the_end() -> None:
    paths = [b"%d" % i for i in range(1000)]
    sizes = [len(batch) for batch in batches(paths, workers=2)]
    assert [p for batch in batches(paths, workers=2) for p in batch] == paths
    assert sizes[0] == MAX_BATCH and sizes[-1] == 1
    assert sizes == sorted(sizes, reverse=True)


def test_every_file_has_the_outcome_it_has_in_this_process(pictures: list[bytes]) -> None:
    with LocalEngine(2) as engine:
        outcomes = [o for batch in engine.hash(pictures) for o in batch]
    assert sorted(path for path, _o, _st in outcomes) == sorted(pictures)
    for path, outcome, st in outcomes:
        _path, here, here_st = hash_file(path)
        if isinstance(here, FingerprintError):
            assert (type(outcome), outcome.reason) == (type(here), here.reason)
        else:
            assert isinstance(outcome, Fingerprint) and outcome == here
        assert (st is None) == (here_st is None)


def test_a_file_that_kills_its_process_is_found_among_its_batch(pictures: list[bytes]) -> None:
    poison = os.path.join(os.path.dirname(pictures[0]), b"poison.png")
    with open(poison, "wb") as f:
        f.write(open(pictures[0], "rb").read())
    paths = [*pictures[:40], poison, *pictures[40:96]]
    outcomes = {p: o for p, o, _st in map_bounded(hash_or_die, paths, workers=2, timeout_s=30)}
    assert sorted(outcomes) == sorted(paths)
    assert isinstance(outcomes.pop(poison), UnreadableFile)
    assert all(isinstance(o, Fingerprint) for o in outcomes.values())


def test_ctrl_c_in_a_scan_leaves_the_index_consistent(pictures: list[bytes], tmp_path) -> None:
    folder = Path(os.fsdecode(pictures[0])).parent

    def interrupt(done: int, total: int) -> None:
        if done < total:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, in the middle of the scan

    with Index.open(tmp_path / "index") as index:
        with pytest.raises(KeyboardInterrupt):
            index.update([folder], workers=2, progress=interrupt)
        assert index.check() == []
        report = index.update([folder], workers=2)  # the next scan hashes the rest
        assert index.check() == []
        assert report.unchanged + report.hashed + len(report.failed) == report.seen
        files = {r.path: r for r in index.files()}
    with Index.open(tmp_path / "in-one-go") as fresh:
        fresh.update([folder], workers=2)
        assert {r.path: (r.bits, r.digest) for r in fresh.files()} == {
            path: (r.bits, r.digest) for path, r in files.items()
        }
