"""The README stays true: every command and socket operation is in it, and its examples run."""

from __future__ import annotations

import re
from pathlib import Path

from dupwatch.daemon.cli.main import build_parser
from dupwatch.daemon.config import SETTINGS, load_config
from dupwatch.daemon.wire.protocol import OPS, ErrorCode

README = (Path(__file__).parent.parent / "README.md").read_text()


def commands() -> list[str]:
    parser = build_parser()
    [subparsers] = [a for a in parser._actions if a.dest == "command"]
    return list(subparsers.choices)


def test_every_command_is_documented() -> None:
    missing = [name for name in commands() if f"dupwatch {name}" not in README]
    assert missing == []


def test_every_socket_operation_and_error_code_is_documented() -> None:
    assert [op for op in OPS if f'"op":"{op}"' not in README.replace(" ", "")] == []
    assert [code for code in ErrorCode if f"`{code}`" not in README] == []


def test_the_two_setup_commands_are_there() -> None:
    assert "pip install . && dupwatch scan" in README
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    test_command = re.search(r"^sudo (apt-get install .*) && pip install", README, re.M)
    assert test_command is not None
    packages = test_command.group(1).split()[3:]
    assert all(package in ci for package in packages)  # CI installs what the README says


def test_the_library_example_runs(tmp_path: Path, photo) -> None:
    block = re.search(r"## The library\n\n```python\n(.*?)```", README, re.S)
    assert block is not None
    labels = tmp_path / "labels"
    labels.mkdir()
    type(photo)(labels)("astronaut.png")  # the same fixture, writing into labels/
    incoming = photo("astronaut.png", size=(128, 128), filename="new.jpg")
    code = (
        block.group(1)
        .replace('"/tmp/my-index"', repr(str(tmp_path / "index")))
        .replace('"/data/labels"', repr(str(labels)))
        .replace('"/tmp/new.jpg"', repr(str(incoming)))
        .replace('"/tmp/tree"', repr(str(tmp_path / "tree")))
        .replace('"/tmp/hashes"', repr(str(tmp_path / "hashes")))
    )
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["tree"].find(0x0F0F, 1) == [(0, 3855), (1, 3854)]
    assert namespace["table"].find(0x0F0F, 1) == [(0, 3855), (1, 3854)]
    assert namespace["report"].hashed == 1


def test_the_config_example_loads_and_names_every_setting(tmp_path: Path) -> None:
    block = re.search(r"### The config file\n.*?```toml\n(.*?)```", README, re.S)
    assert block is not None
    config_file = tmp_path / "config.toml"
    config_file.write_text(block.group(1))
    config = load_config(config_file)
    assert config.radius == 12 and config.hash_timeout_s == 30
    assert config.transforms == ("flip", "rotate") and set(config.splits) == {"train", "val"}
    named = set(re.findall(r"^(\w+) =", block.group(1), re.M))
    assert named == set(SETTINGS)
