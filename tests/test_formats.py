"""Formats by content, not by name: every picture Pillow decodes safely is indexed (PGM, PPM,
TGA, JPEG 2000, ICO, QOI, PCX, SGI, DDS...), a picture without a suffix too, and a file named
like a picture that is not one is counted apart from the damaged ones."""

from __future__ import annotations

import json
import shutil
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from support import Daemon, dupwatch, photo, wait_for

# Each written by Pillow itself from a real photograph: suffix -> save options.
FORMATS = {
    ".pgm": {},
    ".ppm": {},
    ".pbm": {},
    ".tga": {},
    ".jp2": {},
    ".ico": {"sizes": [(256, 170)]},
    ".qoi": {},
    ".pcx": {},
    ".sgi": {},
    ".dds": {},
}


def write_formats(folder: Path) -> None:
    cat = photo("chelsea.png").resize((384, 256))
    cat.save(folder / "cat.jpg", quality=92)
    for suffix, options in FORMATS.items():
        picture = cat.convert("L") if suffix == ".pgm" else cat
        picture = cat.convert("1") if suffix == ".pbm" else picture
        picture.save(folder / f"cat{suffix}", **options)


def test_every_safe_format_is_indexed_and_non_images_are_counted_apart(tmp_path: Path) -> None:
    pics = tmp_path / "pics"
    (pics / "labels").mkdir(parents=True)
    write_formats(pics)
    cat = Image.open(pics / "cat.jpg")
    cat.save(pics / "scan0001", format="PNG")  # no suffix: a PNG by its first bytes
    cat.save(pics / "cat.data", format="JPEG")  # an odd suffix: a JPEG by its first bytes
    (pics / "notes.jpg").write_text("a shopping list, not a picture\n")
    cat.convert("L").save(pics / "poster.jpg", format="EPS")  # never given to ghostscript
    (pics / "README").write_text("P1 is the first plate\n")  # no signature: not a candidate
    for n in range(50):
        (pics / "labels" / f"cat{n}.txt").write_text("0 0.5 0.5 0.4 0.4\n")
    result = dupwatch("scan", pics, "--json", index=tmp_path / "index")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    [group] = out["groups"]
    names = sorted(Path(f["path"]).name for f in group["files"])
    expected = ["cat.data", "cat.jpg", "scan0001", *(f"cat{suffix}" for suffix in FORMATS)]
    assert names == sorted(expected)
    summary = out["summary"]
    assert summary["failed"] == []
    assert sorted(Path(f["path"]).name for f in summary["not_images"]) == [
        "notes.jpg", "poster.jpg"
    ]  # fmt: skip
    assert summary["seen"] == len(expected) + 2
    assert ", 0 unreadable, 2 not images;" in result.stderr
    again = json.loads(dupwatch("scan", pics, "--json", index=tmp_path / "index").stdout)
    assert len(again["summary"]["not_images"]) == 2 and again["summary"]["failed"] == []


def python_test_pictures() -> list[Path]:
    """Real PGM/PBM/PPM/SGI files and an ICO that CPython ships (its test data and IDLE's
    icon), beside the PNG of the same picture."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    folders = [stdlib / "test" / "imghdrdata", stdlib / "test" / "test_email" / "data"]
    folder = next((f for f in folders if (f / "python.pgm").exists()), None)
    assert folder is not None, (
        "CPython's test data is missing (Debian: apt-get install libpython3-testsuite)"
    )
    return [folder / f"python.{suffix}" for suffix in ("png", "pgm", "pbm", "ppm", "sgi")]


def test_real_pgm_ppm_pbm_and_sgi_files(tmp_path: Path) -> None:
    pics = tmp_path / "pics"
    pics.mkdir()
    for path in python_test_pictures():
        shutil.copy(path, pics / path.name)
    result = dupwatch("scan", pics, "--json", index=tmp_path / "index")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    indexed = {Path(f["path"]).name for g in out["groups"] for f in g["files"]}
    assert {"python.png", "python.pgm", "python.ppm", "python.sgi"} <= indexed
    assert out["summary"]["hashed"] == 5 and out["summary"]["not_images"] == []


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    base = Path(tempfile.mkdtemp(dir="/tmp", prefix="dwf"))
    daemon = Daemon(base)
    yield daemon
    if daemon.process is not None:
        daemon.kill()
    shutil.rmtree(base, ignore_errors=True)


def test_the_service_takes_pictures_by_content_too(daemon: Daemon, tmp_path: Path) -> None:
    cat = photo("chelsea.png").resize((384, 256))
    cat.save(daemon.root / "cat.jpg", quality=92)
    daemon.start()
    cat.convert("L").save(tmp_path / "cat.pgm")
    cat.save(tmp_path / "frame", format="PNG")
    (tmp_path / "frame.txt").write_text("0 0.5 0.5 0.4 0.4\n")
    for name in ("cat.pgm", "frame", "frame.txt"):
        shutil.copy(tmp_path / name, daemon.root / name)
    wait_for(lambda: daemon.status()["files"] == 3 and daemon.status()["queue"] == 0)
    status = daemon.status()
    alerted = {Path(alert["path"]).name for alert in status["last_alerts"]}
    assert alerted == {"cat.pgm", "frame"} and status["failed"] == 0
    assert daemon.stop() == 0
