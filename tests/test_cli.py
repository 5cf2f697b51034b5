"""The real `dupwatch` command in a subprocess, as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dupwatch.index import Index, StoreError

from support import DUPWATCH, SKIMAGE_DATA, dupwatch


@pytest.fixture
def pics(tmp_path: Path) -> Path:
    pics = tmp_path / "pics"
    pics.mkdir()
    astronaut = Image.open(SKIMAGE_DATA / "astronaut.png").convert("RGB")
    astronaut.save(pics / "astronaut.jpg", quality=90)
    astronaut.resize((300, 300)).save(pics / "astronaut_small.jpg", quality=75)
    shutil.copy(pics / "astronaut.jpg", pics / "astronaut_copy.jpg")
    Image.open(SKIMAGE_DATA / "coffee.png").convert("RGB").save(pics / "coffee.png")
    Image.open(SKIMAGE_DATA / "rocket.jpg").save(pics / "rocket.jpg")
    return pics


def test_scan_prints_the_groups_in_the_documented_json(pics: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    result = dupwatch("scan", pics, "--index", index, "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    [group] = out["groups"]
    assert group["keep"] == str(pics / "astronaut.jpg")
    files = {Path(f["path"]).name: f for f in group["files"]}
    assert set(files) == {"astronaut.jpg", "astronaut_copy.jpg", "astronaut_small.jpg"}
    assert files["astronaut.jpg"]["kind"] == "keep"
    assert files["astronaut_copy.jpg"]["kind"] == "exact"
    assert files["astronaut_small.jpg"]["kind"] == "near"
    small = files["astronaut_small.jpg"]
    assert (small["width"], small["height"]) == (300, 300)
    assert small["bytes"] == (pics / "astronaut_small.jpg").stat().st_size
    assert out["summary"]["hashed"] == 5 and out["summary"]["failed"] == []
    assert "; 1 duplicate group; 0 blank or near-blank images" in result.stderr


def test_a_second_scan_hashes_nothing(pics: Path, tmp_path: Path) -> None:
    dupwatch("scan", pics, "--index", tmp_path / "index", check=True)
    again = json.loads(dupwatch("scan", pics, "--index", tmp_path / "index", "--json").stdout)
    assert again["summary"]["hashed"] == 0 and again["summary"]["unchanged"] == 5


def test_exit_status_is_one_without_duplicates(tmp_path: Path) -> None:
    pics = tmp_path / "distinct"
    pics.mkdir()
    Image.open(SKIMAGE_DATA / "coffee.png").convert("RGB").save(pics / "coffee.png")
    Image.open(SKIMAGE_DATA / "chelsea.png").convert("RGB").save(pics / "chelsea.jpg")
    result = dupwatch("scan", pics, "--index", tmp_path / "index")
    assert result.returncode == 1 and result.stdout == ""
    assert "2 images: 2 hashed" in result.stderr


def test_query_finds_a_resized_copy(pics: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    dupwatch("scan", pics, "--index", index, check=True)
    outside = tmp_path / "incoming.png"
    Image.open(pics / "astronaut.jpg").resize((128, 128)).save(outside)
    result = dupwatch("query", outside, "--index", index, "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["query"] == str(outside)
    names = {Path(m["path"]).name: m["kind"] for m in answer["matches"]}
    assert names == {"astronaut.jpg": "near", "astronaut_copy.jpg": "near",
                     "astronaut_small.jpg": "near"}  # fmt: skip
    assert all(isinstance(m["distance"], int) for m in answer["matches"])


def test_query_of_an_indexed_file_lists_itself_and_counts_only_others(
    pics: Path, tmp_path: Path
) -> None:
    index = tmp_path / "index"
    dupwatch("scan", pics, "--index", index, check=True)
    result = dupwatch("query", pics / "coffee.png", "--index", index, "--json")
    assert result.returncode == 1
    answer = json.loads(result.stdout)
    assert answer["matches"] == [
        {"path": str(pics / "coffee.png"), "distance": 0, "kind": "exact", "self": True}
    ]


def test_groups_and_check_read_the_index(pics: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    dupwatch("scan", pics, "--index", index, check=True)
    groups = dupwatch("groups", "--json", "--index", index)
    assert groups.returncode == 0
    assert len(json.loads(groups.stdout)["groups"]) == 1
    check = dupwatch("check", "--index", index)
    assert check.returncode == 0 and "0 problems" in check.stderr


def test_index_from_the_environment(pics: Path, tmp_path: Path) -> None:
    env = {**os.environ, "DUPWATCH_INDEX": str(tmp_path / "from_env")}
    result = subprocess.run([DUPWATCH, "scan", pics], env=env, capture_output=True, timeout=120)
    assert result.returncode == 0
    assert (tmp_path / "from_env" / "data.mdb").exists()


def test_bad_files_are_reported_and_the_good_ones_indexed(pics: Path, tmp_path: Path) -> None:
    (pics / "empty.jpg").write_bytes(b"")
    (pics / "notes.png").write_text("this is not a picture")
    data = (pics / "astronaut.jpg").read_bytes()
    (pics / "truncated.jpg").write_bytes(data[: len(data) // 3])
    png = (pics / "coffee.png").read_bytes()
    (pics / "corrupt.png").write_bytes(png[:200] + bytes(len(png) - 200))
    weird = os.fsencode(pics) + b"/caf\xe9-\xff.jpg"  # Latin-1 bytes: not UTF-8
    with open(weird, "wb") as out:
        out.write(data)
    result = dupwatch("scan", pics, "--index", tmp_path / "index", "--json")
    assert result.returncode == 0
    summary = json.loads(result.stdout)["summary"]
    failed = {Path(f["path"]).name: f["error"] for f in summary["failed"]}
    assert set(failed) == {"empty.jpg", "truncated.jpg", "corrupt.png"}
    assert "zero bytes" in failed["empty.jpg"]
    [not_image] = summary["not_images"]  # named like a picture, but none: counted apart
    assert not_image["path"] == str(pics / "notes.png") and "not an image" in not_image["error"]
    for name in ("empty.jpg", "notes.png", "truncated.jpg", "corrupt.png"):
        assert str(pics / name) in result.stderr  # the message names the file
    assert summary["hashed"] == 6
    with Index.open(tmp_path / "index", readonly=True) as index:
        record = index.get(weird)
        assert record is not None and record.path == weird
    group = json.loads(result.stdout)["groups"][0]
    assert os.fsencode(str(pics / "caf")) + b"\xe9-\xff.jpg" in {
        os.fsencode(f["path"]) for f in group["files"]
    }


def test_errors_name_the_cause_and_exit_2(tmp_path: Path) -> None:
    result = dupwatch("scan", tmp_path / "absent", "--index", tmp_path / "index")
    assert result.returncode == 2 and "absent: not a folder" in result.stderr
    result = dupwatch("query", tmp_path / "x.jpg", "--index", tmp_path / "none")
    assert result.returncode == 2 and "no index here yet" in result.stderr
    (tmp_path / "pics").mkdir()
    dupwatch("scan", tmp_path / "pics", "--index", tmp_path / "index", check=True)
    result = dupwatch("query", tmp_path / "missing.jpg", "--index", tmp_path / "index")
    assert result.returncode == 2
    assert f"{tmp_path / 'missing.jpg'}: " in result.stderr
    assert "Traceback" not in result.stderr


def many_pictures(folder: Path, count: int) -> None:
    """Distinct pictures: smooth random fields, big enough that hashing takes a while."""
    rng = np.random.default_rng(7)
    folder.mkdir()
    for i in range(count):
        small = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
        big = Image.fromarray(small).resize((900, 900), Image.Resampling.BICUBIC)
        big.save(folder / f"{i:04d}.jpg", quality=85)


def test_a_scan_killed_midway_leaves_a_consistent_index(tmp_path: Path) -> None:
    pics = tmp_path / "many"
    many_pictures(pics, 240)
    index = tmp_path / "index"
    scan = subprocess.Popen(
        [DUPWATCH, "scan", pics, "--index", index], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    indexed = 0
    while time.monotonic() < deadline and scan.poll() is None:
        try:
            with Index.open(index, readonly=True) as partial:
                indexed = len(partial)
        except StoreError:
            pass  # not created yet
        if indexed:
            break
        time.sleep(0.01)
    os.killpg(scan.pid, signal.SIGKILL)  # the scan and its hashing workers
    scan.wait()
    assert 0 < indexed < 240, "the scan should have been killed part-way"
    with Index.open(index, readonly=True) as partial:
        assert partial.check() == []
    check = dupwatch("check", "--index", index)
    assert check.returncode == 0, check.stdout
    rerun = json.loads(dupwatch("scan", pics, "--index", index, "--json").stdout)["summary"]
    assert rerun["hashed"] + rerun["unchanged"] == 240 and rerun["unchanged"] >= indexed
    with Index.open(index, readonly=True) as done:
        assert len(done) == 240 and done.check() == []


def test_help_lists_the_commands() -> None:
    result = subprocess.run([sys.executable, "-m", "dupwatch.daemon.cli.main", "--help"],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0
    for command in ("scan", "query", "groups", "check"):
        assert command in result.stdout


def test_version_comes_from_the_installed_package() -> None:
    from importlib.metadata import version

    result = dupwatch("--version")
    assert result.returncode == 0 and result.stdout == f"dupwatch {version('dupwatch')}\n"
    script = (  # and it loads no numpy (nor Pillow, nor the index) to say it
        "import sys\nfrom dupwatch.daemon.cli.main import main\n"
        "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('numpy', 'PIL') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.stdout.splitlines()[-1] == "[]"


def test_a_bare_dupwatch_prints_the_help() -> None:
    result = dupwatch()
    assert result.returncode == 2  # nothing was done: 0 would read as "duplicates found"
    assert result.stdout.startswith("usage: dupwatch") and "examples:" in result.stdout
    assert "error" not in result.stderr


def test_each_command_help_shows_defaults_and_examples() -> None:
    for command in ("scan", "query", "groups", "report", "dedupe", "status", "alerts"):
        result = dupwatch(command, "--help")
        assert result.returncode == 0
        assert "examples:" in result.stdout and f"  dupwatch {command}" in result.stdout
    groups = dupwatch("groups", "--help").stdout
    assert "(default: labelled)" in groups and "else 12)" in groups
    assert "(default: None)" not in groups and "(default: False)" not in groups
    assert "$XDG_CACHE_HOME/dupwatch/report.html" in dupwatch("report", "--help").stdout


def test_query_takes_a_folder_and_queries_every_image_in_it(pics: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    dupwatch("scan", pics, "--index", index, check=True)
    batch = tmp_path / "batch"
    (batch / "sub").mkdir(parents=True)
    Image.open(pics / "astronaut.jpg").resize((128, 128)).save(batch / "a.png")
    Image.open(SKIMAGE_DATA / "chelsea.png").convert("RGB").save(batch / "sub" / "cat.jpg")
    (batch / "notes.txt").write_text("not a picture\n")
    result = dupwatch("query", batch, "--index", index, "--json")
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert [a["query"] for a in answers] == [str(batch / "a.png"), str(batch / "sub" / "cat.jpg")]
    assert len(answers[0]["matches"]) == 3 and answers[1]["matches"] == []
    text = dupwatch("query", batch / "sub", "--index", index)
    assert text.returncode == 1 and "cat.jpg: no duplicates in the index" in text.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = dupwatch("query", empty, "--index", index)
    assert nothing.returncode == 2 and f"{empty}: no images in this folder" in nothing.stderr
