"""What every command shares: the settings from the command line over the config file, the
index they name, and the exit status.

Light on purpose (no numpy, Pillow or LMDB until an index is opened): the commands that only
talk to the service use it too.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from dupwatch.daemon.config import Config
from dupwatch.daemon.render import printable
from dupwatch.index.errors import FingerprintError, StoreError
from dupwatch.index.fingerprint.transforms import parse_transforms
from dupwatch.index.store.location import default_index_path

if TYPE_CHECKING:
    from dupwatch.index.index import Index

EXIT_FOUND = 0
EXIT_NONE = 1
EXIT_ERROR = 2


def settings(args: argparse.Namespace) -> Config:
    radius = getattr(args, "radius", None)
    given = getattr(args, "transforms", None)
    transforms = tuple(parse_transforms(given)) if given is not None else None
    return args.config_values.replace(
        index=args.index, socket=args.socket, radius=radius, transforms=transforms
    )


def index_path(args: argparse.Namespace) -> str:
    config = settings(args)
    return os.fspath(config.index) if config.index is not None else default_index_path()


def open_index(args: argparse.Namespace, *, readonly: bool = False) -> Index:
    from dupwatch.index.index import Index

    config = settings(args)
    index = Index.open(
        index_path(args), radius=config.radius, readonly=readonly, transforms=config.transforms
    )
    cluster = getattr(args, "cluster", None) or config.cluster
    if cluster:
        # Finding every pair again (a larger --radius, --repair) runs on its workers.
        from dupwatch.index.cluster_join import ClusterJoin

        index.pairs.join = ClusterJoin(cluster)
    return index


def existing_index(args: argparse.Namespace) -> Index:
    """The index, which must exist already; writable when the folder allows it."""
    path = index_path(args)
    if not os.path.exists(os.path.join(path, "data.mdb")):
        raise StoreError(f"{path}: no index here yet (run `dupwatch scan DIR` first)")
    return open_index(args, readonly=not os.access(path, os.W_OK))


def index_if_any(args: argparse.Namespace) -> Index | None:
    """The index when one exists (undo still works without it)."""
    if not os.path.exists(os.path.join(index_path(args), "data.mdb")):
        return None
    return open_index(args)


def print_failures(failures: list[FingerprintError]) -> None:
    for error in failures:
        print(f"dupwatch: {printable(error.path)}: {error.reason}", file=sys.stderr)


def output_format(args: argparse.Namespace) -> str:
    if getattr(args, "format", None):
        return args.format
    return "json" if args.json else "csv" if getattr(args, "csv", False) else "text"
