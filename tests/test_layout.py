"""The layout stays honest: imports flow one way (no circle, no import of a higher layer, the
library never imports the service), no module grows past ~450 lines without saying why, and a
plain `pip install .` installs every module.

The imports are read from the source (every `import`, also inside functions and under
TYPE_CHECKING), not from a running program.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"dupwatch.index": ROOT / "index", "dupwatch.daemon": ROOT / "daemon"}
MAX_LINES = 450
LONG_REASON = "longer than 450 lines because"  # what a longer module's docstring must say

# The layers, lowest first: a module may import its own layer or a lower one. A prefix names
# a package and everything in it; the longest matching prefix decides.
LAYERS = {
    "dupwatch.index.errors": 0,
    "dupwatch.index.lazy": 0,
    "dupwatch.index.fingerprint": 1,
    "dupwatch.index.hashing": 2,
    "dupwatch.index.store": 3,
    "dupwatch.index": 4,  # the Index API: index.py and the modules beside it
    "dupwatch.index.cleanup": 5,
    "dupwatch.daemon": 10,  # config, render, splits: shared by the daemon's sub-packages
    "dupwatch.daemon.wire": 11,
    "dupwatch.daemon.service": 12,
    "dupwatch.daemon.review": 12,
    "dupwatch.daemon.desktop": 12,
    "dupwatch.daemon.labelstudio": 12,
    "dupwatch.daemon.cli": 13,
}


def read_sources() -> dict[str, str]:
    """Every module of the two packages: dotted name -> source."""
    sources = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            sources[".".join((package, *parts))] = path.read_text()
    return sources


def layer_of(module: str) -> tuple[int, str]:
    """(layer, the package that gives it) of a module."""
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best], best


def lazy_exports(source: str) -> dict[str, str]:
    """A package's `_EXPORTS = {name: submodule}` (names loaded on first use), if any."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets
        ):
            return ast.literal_eval(node.value)
    return {}


def imports_of(module: str, source: str, sources: dict[str, str]) -> set[str]:
    """The dupwatch modules `module` imports; a name taken from a package resolves to its
    submodule (or, for a lazily exported name, the submodule that defines it)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("dupwatch.")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dupwatch."):
            exports = lazy_exports(sources.get(node.module, ""))
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if submodule in sources:
                    found.add(submodule)
                elif alias.name in exports:
                    found.add(f"{node.module}.{exports[alias.name]}")
                else:
                    found.add(node.module)
    found.discard(module)
    return {name for name in found if name in sources}


def layering_problems(sources: dict[str, str]) -> list[str]:
    """Every import that goes up a layer or across to a sibling package of the same layer,
    and every circle of imports."""
    graph = {module: imports_of(module, source, sources) for module, source in sources.items()}
    problems = []
    for module, targets in sorted(graph.items()):
        layer, package = layer_of(module)
        for target in sorted(targets):
            target_layer, target_package = layer_of(target)
            if target_layer > layer:
                problems.append(f"{module} imports {target}, a higher layer")
            elif target_layer == layer and target_package != package and layer != 4:
                problems.append(f"{module} imports {target}, a sibling package")
    problems += [f"circle: {' -> '.join(circle)}" for circle in circles(graph)]
    return problems


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle through each strongly connected group of modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group) + [sorted(group)[0]])

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_imports_flow_one_way() -> None:
    assert layering_problems(read_sources()) == []


def test_an_upward_import_is_caught() -> None:
    sources = read_sources()
    sources["dupwatch.index.store.records"] += "\nfrom dupwatch.index.index import Index\n"
    sources["dupwatch.index.errors"] += "\nimport dupwatch.daemon.config\n"
    problems = layering_problems(sources)
    assert "dupwatch.index.store.records imports dupwatch.index.index, a higher layer" in problems
    assert "dupwatch.index.errors imports dupwatch.daemon.config, a higher layer" in problems


def test_a_circle_is_caught() -> None:
    sources = read_sources()
    sources["dupwatch.index.groups"] += "\nfrom dupwatch.index import grouping\n"
    problems = layering_problems(sources)
    assert any(p.startswith("circle:") and "dupwatch.index.groups" in p for p in problems)


def test_no_module_is_long_without_a_reason() -> None:
    long = [
        f"{module}: {source.count(chr(10))} lines"
        for module, source in read_sources().items()
        if source.count("\n") > MAX_LINES
        and LONG_REASON not in (ast.get_docstring(ast.parse(source)) or "").lower()
    ]  # fmt: skip
    assert long == []


def test_every_package_has_a_docstring_that_says_what_it_holds() -> None:
    for module, source in read_sources().items():
        if (ROOT / Path(*module.split(".")[1:])).is_dir():
            assert ast.get_docstring(ast.parse(source)), f"{module} has no docstring"


def test_a_plain_install_has_every_module(tmp_path: Path) -> None:
    """`pip install .` (not -e) must install every sub-package: import each module from it."""
    source, target = tmp_path / "source", tmp_path / "site"
    # A copy, so that the build leaves nothing (build/, *.egg-info) in the checkout.
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "build", "*.egg-info"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps",
         "--target", str(target), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    modules = sorted(read_sources())
    script = (  # each module from the install, none from this checkout
        "import importlib, sys\n"
        "for name in sys.argv[2:]:\n"
        "    assert importlib.import_module(name).__file__.startswith(sys.argv[1]), name\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(target), *modules],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(target)},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    installed = {
        ".".join(p.relative_to(target).with_suffix("").parts).removesuffix(".__init__")
        for p in (target / "dupwatch").rglob("*.py")
    }
    assert set(modules) <= installed


def test_the_command_line_starts_light() -> None:
    """`dupwatch --help`, `status`, `alerts`, `watch`, `notify` and a `query` the service
    answers load no numpy, Pillow, LMDB, tqdm or SDK: the modules that parse and talk to the
    service import none at the top."""
    heavy = ("lmdb", "numpy", "PIL", "scipy", "tqdm", "label_studio_sdk", "jeepney")
    script = (
        "import sys\n"
        "import dupwatch.daemon.cli.main, dupwatch.daemon.cli.remote, dupwatch.daemon.cli.query\n"
        f"print(' '.join(m for m in {heavy!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == []
