"""Recall and false pairs of the groups `dupwatch scan --json` prints, on a benchmark folder.

    python tests/bench/group_recall.py FOLDER [--transforms rotate,flip] [--radius 12]

FOLDER is one made by tests/bench/accuracy.py --keep (or dupbench.generate). A true pair
(an original and its copy) is found when both files are in one group; a false pair is two
files of different originals in one group. This is what a user sees: a copy matched by
`query` or `compare` but left out of every group counts as missed here, while the pairs
accuracy.py scores are those the index reports as each file arrives.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import dupbench  # noqa: E402


def group_pairs(folder: Path, transforms: str, radius: int) -> set[frozenset[str]]:
    index = tempfile.mkdtemp(prefix="group-recall-")
    # The dupwatch this Python installed (its bin/ need not be on PATH).
    command = shutil.which("dupwatch", path=os.path.dirname(sys.executable)) or "dupwatch"
    cmd = [command, "--index", index, "scan", "--json", "--radius", str(radius)]
    if transforms:
        cmd += ["--transforms", transforms]
    done = subprocess.run([*cmd, str(folder)], capture_output=True, text=True)
    if done.returncode not in (0, 1):
        sys.exit(done.stderr)
    pairs = set()
    for group in json.loads(done.stdout)["groups"]:
        names = [Path(f["path"]).name for f in group["files"]]
        pairs |= {frozenset(p) for p in itertools.combinations(names, 2)}
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--transforms", default="")
    parser.add_argument("--radius", type=int, default=12)
    args = parser.parse_args()
    bench = dupbench.load(args.folder)
    score = dupbench.score(bench, group_pairs(args.folder, args.transforms, args.radius))
    label = args.transforms or "plain"
    print(f"groups of dupwatch scan ({label}, radius {args.radius}) on {args.folder}")
    for t in dupbench.ALL_TRANSFORMS:
        if t.name in score.recall:
            print(f"  {t.name:16} {t.kind:6} {score.recall[t.name]:.3f}")
    print(f"  near F1 {score.near_f1:.4f}; near false {score.near_false}; all false"
          f" {score.false_pairs}")  # fmt: skip


if __name__ == "__main__":
    main()
