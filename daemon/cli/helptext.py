"""What `dupwatch --help` and `dupwatch COMMAND --help` say beyond the options: the defaults
and a few examples of each command; and `--version`. Light (standard library only)."""

from __future__ import annotations

import argparse
from typing import Any

EXAMPLES = {
    "": """\
examples:
  dupwatch scan ~/labels                      index a folder, print its duplicate groups
  dupwatch query ~/Downloads/new/             what in the index duplicates these images
  dupwatch daemon ~/labels & dupwatch alerts  watch a folder, follow the alerts

`dupwatch COMMAND --help` shows a command's options, defaults and examples.
exit status: 0 duplicates found, 1 none found, 2 error""",
    "scan": """\
examples:
  dupwatch scan ~/labels
  dupwatch scan data/train data/val --across     only duplicates between the folders
  dupwatch scan ~/labels --json > groups.json
  dupwatch scan /mnt/share/labels --cluster tcp://scheduler:8786   hash on a Dask cluster""",
    "query": """\
examples:
  dupwatch query ~/Downloads/cat.jpg
  dupwatch query ~/incoming/batch7/             every image in the folder, in one go
  dupwatch query new.png --radius 6 --json""",
    "groups": """\
examples:
  dupwatch groups
  dupwatch groups ~/labels/val --csv > groups.csv
  dupwatch groups --keep newest --prefer ~/labels/train
  dupwatch groups --radius 14 --cluster tcp://scheduler:8786   find the new pairs there""",
    "report": """\
examples:
  dupwatch report --open
  dupwatch report ~/labels --out /tmp/dupes.html""",
    "dedupe": """\
examples:
  dupwatch dedupe --to ~/dupes --dry-run        print the moves, move nothing
  dupwatch dedupe --to ~/dupes ~/labels         then put them back: dupwatch undo MANIFEST""",
    "undo": """\
example:
  dupwatch undo ~/dupes/manifest-20261123-002516.jsonl""",
    "ignore": """\
examples:
  dupwatch ignore a.jpg b.jpg                   a and b are different pictures
  dupwatch ignore --group a.jpg                 so is every picture of a's group
  dupwatch ignore --list""",
    "compare": """\
example:
  dupwatch compare a.jpg b.jpg                  the distances, and the radius that matches""",
    "check": """\
examples:
  dupwatch check
  dupwatch check --repair""",
    "reindex": """\
examples:
  dupwatch reindex --workers 2
  dupwatch reindex --cluster tcp://scheduler:8786""",
    "daemon": """\
examples:
  dupwatch daemon ~/labels                      (systemd runs it: dupwatch service install)
  dupwatch daemon --radius 8""",
    "alerts": """\
examples:
  dupwatch alerts
  dupwatch alerts --json | jq .path""",
    "status": """\
examples:
  dupwatch status
  dupwatch status --json
exit status: 0 the service answers, 1 it is not running (the index's summary is printed)""",
    "watch": """\
example:
  dupwatch watch ~/more-labels""",
    "unwatch": """\
example:
  dupwatch unwatch ~/more-labels""",
    "notify": """\
example:
  dupwatch notify &                             (or: systemctl --user start dupwatch-notify)""",
    "service": """\
examples:
  dupwatch service install
  dupwatch service uninstall""",
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks, and adds "(default: X)" to an option whose default
    says something (not None, False or an empty list) unless its help names it already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        quiet = default is None or default is False or default == [] or default == argparse.SUPPRESS
        if quiet or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


class VersionAction(argparse.Action):
    """`--version`: the installed package's version, read from its metadata when asked."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("help", "print the version and exit")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("dupwatch")
        except PackageNotFoundError:
            number = "unknown (not installed)"
        print(f"dupwatch {number}")
        parser.exit()
