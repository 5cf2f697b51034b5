"""Bad values on the command line and in the config file: one line that says what is wrong,
exit status 2 (never a traceback, never the 1 that means "no duplicates")."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from support import SKIMAGE_DATA, dupwatch


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(index, folder): a folder with one picture and its copy, scanned."""
    base = tmp_path_factory.mktemp("options")
    pics = base / "pics"
    pics.mkdir()
    Image.open(SKIMAGE_DATA / "chelsea.png").convert("RGB").save(pics / "cat.jpg")
    shutil.copy(pics / "cat.jpg", pics / "cat-copy.jpg")
    dupwatch("scan", pics, index=base / "index", check=True)
    return base / "index", pics


def error_line(result) -> str:
    """The one line that says what went wrong (argparse puts its usage lines first)."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("dupwatch")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["groups", "--radius", "99"], "argument --radius: must be from 0 to 32, not 99"),
        (["groups", "--radius", "-1"], "argument --radius: must be from 0 to 32, not -1"),
        (["query", "{pics}/cat.jpg", "--radius", "40"], "must be from 0 to 32, not 40"),
        (["compare", "{pics}/cat.jpg", "{pics}/cat.jpg", "--radius", "33"], "from 0 to 32"),
        (["groups", "--radius", "twelve"], "argument --radius: not a whole number: 'twelve'"),
        (["scan", "{pics}", "--workers", "0"], "argument --workers: must be from 1 to 64, not 0"),
        (["reindex", "--workers", "-2"], "argument --workers: must be from 1 to 64, not -2"),
        (["scan", "{pics}", "--workers", "5000"], "must be from 1 to 64, not 5000"),
        (["groups", "{pics}/nope"], "argument DIR: {pics}/nope: no such folder"),
        (["report", "{pics}/cat.jpg"], "argument DIR: {pics}/cat.jpg: not a folder"),
        (["dedupe", "--to", "{pics}/../q", "{pics}/nope"], "{pics}/nope: no such folder"),
        (["ignore", "--list", "--remove"], "ignore --list takes no IMG, --group or --remove"),
        (["--index", "{pics}/cat.jpg", "scan", "{pics}"], "cannot make the index folder"),
        (["groups", "--prefer", "{pics}/nope"], "argument --prefer: {pics}/nope: no such file"),
        (["groups", "--json", "--csv"], "argument --csv: not allowed with argument --json"),
        (["scan", "{pics}", "--json", "--format", "csv"], "--format: not allowed with"),
        (["groups", "--transforms", "rotate,spin"], "unknown transform 'spin'"),
        (["report", "--out", "{pics}/no/such/r.html"], "{pics}/no/such: no such folder"),
        (["report", "--out", "{pics}"], "{pics}: a folder; name the report file"),
        (["report", "--sidecar", "{name}.txt"], "'{name}.txt' is not a label file pattern"),
        (["dedupe", "--to", "{pics}/cat.jpg"], "{pics}/cat.jpg: not a folder"),
        (["dedupe", "--to", "{pics}/cat.jpg/q", "--dry-run"], "cannot be made: {pics}/cat.jpg"),
        (["scan", "{pics}", "--cluster", "scheduler"], "argument --cluster: not a Dask sched"),
        (["reindex", "--cluster", "tcp://scheduler"], "'tcp://scheduler'"),
        (["scan", "{pics}", "--cluster", "http://scheduler:8786"], "not a Dask scheduler addr"),
        (["scan", "{pics}", "--cluster", "tcp://scheduler:99999"], "e.g. tcp://scheduler:8786"),
        (["labelstudio", "--project", "0"], "argument --project: a project id (1 or above), not 0"),
        (["labelstudio", "--project", "x"], "argument --project: not a whole number: 'x'"),
        (["labelstudio", "--url", "localhost:8080"], "argument --url: not a server address"),
    ],
)
def test_a_bad_option_is_one_line_and_exit_2(
    indexed: tuple[Path, Path], args: list[str], said: str
) -> None:
    index, pics = indexed
    filled = [arg.replace("{pics}", str(pics)) for arg in args]
    line = error_line(dupwatch(*filled, index=index))
    assert said.replace("{pics}", str(pics)) in line


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ("radius = 33", "radius must be from 0 to 32, not 33"),
        ("radius = 64", "radius must be from 0 to 32, not 64"),
        ("workers = 0", "workers must be positive, not 0"),
        ("workers = 1000", "workers must be from 1 to 64, not 1000"),
        ('log_level = "LOUD"', "log_level must be one of DEBUG, INFO"),
        ("ignore = [1]", "ignore must hold names (strings), not 1"),
        ('sidecars = ["{name}.txt"]', "sidecars: '{name}.txt' is not a label file pattern"),
        ('index = ""', "index is empty"),
        ('cluster = "scheduler"', "cluster: not a Dask scheduler address"),
        ("cluster = 8786", "cluster has the wrong type (int)"),
        ("[labelstudio]\nproject = -3", "labelstudio.project must be a project id (1 or above)"),
        ('[labelstudio]\nurl = "ftp://x"', "labelstudio.url: not a server address: 'ftp://x'"),
    ],
)
def test_a_bad_config_value_is_one_line_naming_the_file_and_key(
    indexed: tuple[Path, Path], tmp_path: Path, setting: str, said: str
) -> None:
    index, _ = indexed
    config = tmp_path / "config.toml"
    config.write_text(setting + "\n")
    line = error_line(dupwatch("--config", config, "groups", index=index))
    assert line.startswith(f"dupwatch: {config}: ") and said in line


def test_the_radius_range_is_the_same_everywhere(indexed: tuple[Path, Path]) -> None:
    index, _ = indexed
    for radius in ("0", "32"):
        assert dupwatch("groups", "--radius", radius, index=index).returncode == 0
