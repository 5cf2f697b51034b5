"""A real-world corpus: images that installed Debian and PyPI packages ship, nobody made for us.

Icon themes (many sizes of one icon, transparent PNGs: RGBA, LA, palettes with tRNS), the GIMP
manual's screenshots, diagrams and photographs, game sprites and palette GIFs, wallpapers and
boot splashes, scikit-image's, matplotlib's, scikit-learn's and pygame's pictures. The
selection is deterministic: within each source, icon names (file stems) are taken in the order
of a hash of their name until the source's cap is reached, so every size of a chosen icon
comes along and the same packages always give the same folder.

    python tests/bench/corpus.py OUT [--half a|b] [--list]

hard-links (or copies, across file systems) the chosen files into OUT/<source>/<path>; dupwatch
does not follow symbolic links. `--half` keeps the stems whose hash falls in one half: choose
thresholds on one half, report on the other.

Needs (Debian, ~200 MB to download, ~30 s to install with --no-install-recommends):
    apt-get install -y --no-install-recommends adwaita-icon-theme oxygen-icon-theme
        gnome-icon-theme tango-icon-theme mate-icon-theme desktop-base gnome-backgrounds
        gimp-help-en pingus-data frozen-bubble-data lbreakout2-data pioneers-data
        neverball-data tk8.6-doc
and (PyPI) scikit-image scikit-learn matplotlib pygame. A missing source is skipped and named.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

# What dupwatch reads (dupwatch.index.fingerprint.IMAGE_SUFFIXES); kept here so the corpus
# does not move when the product's list does.
SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Source:
    name: str
    roots: tuple[str, ...]  # absolute folders, or "py:<module>/<sub folder>"
    cap: int  # at most this many files (whole stems: a stem's files all come or none)
    package: str  # what installs it


SOURCES = (
    Source("adwaita", ("/usr/share/icons/Adwaita",), 800, "apt adwaita-icon-theme"),
    Source("oxygen", ("/usr/share/icons/oxygen",), 800, "apt oxygen-icon-theme"),
    Source("gnome", ("/usr/share/icons/gnome",), 800, "apt gnome-icon-theme"),
    Source("tango", ("/usr/share/icons/Tango",), 800, "apt tango-icon-theme"),
    Source("mate", ("/usr/share/icons/mate",), 800, "apt mate-icon-theme"),
    Source(
        "gimp-help",
        ("/usr/share/gimp/2.0/help/en", "/usr/share/gimp/2.0/help/images"),
        2000,
        "apt gimp-help-en",
    ),  # fmt: skip
    Source("frozen-bubble", ("/usr/share/games/frozen-bubble",), 700, "apt frozen-bubble-data"),
    Source("pingus", ("/usr/share/games/pingus",), 600, "apt pingus-data"),
    Source("lbreakout2", ("/usr/share/games/lbreakout2",), 200, "apt lbreakout2-data"),
    Source(
        "pioneers",
        ("/usr/share/games/pioneers", "/usr/share/help/C/pioneers", "/usr/share/pixmaps/pioneers"),
        200,
        "apt pioneers-data",
    ),  # fmt: skip
    Source("neverball", ("/usr/share/games/neverball",), 300, "apt neverball-data"),
    Source(
        "desktop-base",
        ("/usr/share/desktop-base", "/usr/share/plymouth/themes"),
        300,
        "apt desktop-base",
    ),  # fmt: skip
    Source("gnome-backgrounds", ("/usr/share/backgrounds/gnome",), 50, "apt gnome-backgrounds"),
    Source("tk-demos", ("/usr/share/doc/tk8.6-doc/demos/images",), 20, "apt tk8.6-doc"),
    Source("skimage", ("py:skimage/data",), 100, "pip scikit-image"),
    Source("matplotlib", ("py:matplotlib/mpl-data",), 100, "pip matplotlib"),
    Source("sklearn", ("py:sklearn/datasets/images",), 10, "pip scikit-learn"),
    Source("pygame", ("py:pygame",), 300, "pip pygame"),
)


def resolve(root: str) -> Path | None:
    """An absolute folder, or a folder inside an installed Python package ("py:pkg/sub")."""
    if not root.startswith("py:"):
        return Path(root) if os.path.isdir(root) else None
    module, _, sub = root[3:].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / sub
    return folder if folder.is_dir() else None


def regular_images(folder: Path) -> list[Path]:
    """Image files under `folder`, symbolic links left out (a theme links one icon under many
    names; dupwatch does not follow them either), sorted."""
    found = []
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = Path(dirpath) / name
            if name.lower().endswith(SUFFIXES) and not path.is_symlink() and path.is_file():
                found.append(path)
    return sorted(found)


def stem_key(source: str, path: Path) -> bytes:
    """The stable order of a file's stem within its source (sizes of one icon share it)."""
    return hashlib.blake2b(f"{source}/{path.stem}".encode(), digest_size=8).digest()


def select(source: Source) -> list[tuple[Path, Path]]:
    """(file, its path under the corpus folder) of one source, at most source.cap files."""
    files: list[tuple[Path, Path]] = []
    seen: set[tuple[int, int]] = set()
    for root in source.roots:
        folder = resolve(root)
        if folder is None:
            continue
        for path in regular_images(folder):
            st = path.stat()
            if (st.st_dev, st.st_ino) in seen:  # a hard link already taken
                continue
            seen.add((st.st_dev, st.st_ino))
            files.append((path, Path(source.name) / folder.name / path.relative_to(folder)))
    by_stem: dict[bytes, list[tuple[Path, Path]]] = {}
    for item in files:
        by_stem.setdefault(stem_key(source.name, item[0]), []).append(item)
    chosen: list[tuple[Path, Path]] = []
    for key in sorted(by_stem):
        if len(chosen) + len(by_stem[key]) > source.cap:
            continue  # a smaller stem later may still fit
        chosen += by_stem[key]
    return sorted(chosen, key=lambda item: item[1])


def in_half(source: str, path: Path, half: str | None) -> bool:
    """Whether a file's stem falls in `half` ("a" or "b"; None: both), by a hash of its own:
    the selection takes the stems of lowest stem_key, so that one would put most in "a"."""
    if half is None:
        return True
    key = hashlib.blake2b(f"half/{source}/{path.stem}".encode(), digest_size=1).digest()
    return (key[0] < 128) == (half == "a")


def corpus_files(half: str | None = None) -> tuple[list[tuple[Path, Path]], list[Source]]:
    """Every chosen (file, corpus path), and the sources that are not installed."""
    chosen, missing = [], []
    for source in SOURCES:
        files = select(source)
        if not files:
            missing.append(source)
        chosen += [(f, rel) for f, rel in files if in_half(source.name, f, half)]
    return chosen, missing


def collect(out: Path, half: str | None = None) -> list[Path]:
    """Link (or copy) the corpus into `out`; returns the paths made."""
    chosen, missing = corpus_files(half)
    for source in missing:
        print(f"corpus: {source.name} is missing ({source.package})", file=sys.stderr)
    made = []
    for path, rel in chosen:
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)
        made.append(target)
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--half", choices=("a", "b"))
    parser.add_argument("--list", action="store_true", help="print the files, link nothing")
    args = parser.parse_args()
    if args.list:
        chosen, _ = corpus_files(args.half)
        for path, rel in chosen:
            print(f"{rel}\t{path}")
        return
    made = collect(args.out, args.half)
    counts: dict[str, int] = {}
    for path in made:
        name = path.relative_to(args.out).parts[0]
        counts[name] = counts.get(name, 0) + 1
    for name, count in counts.items():
        print(f"{name:20} {count:5}")
    print(f"{'total':20} {len(made):5}  in {args.out}")


if __name__ == "__main__":
    main()
