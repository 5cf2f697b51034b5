"""`dupwatch query`: asked of the running service when there is one, else of the index.

Kept apart from the other commands so that a query the service answers starts light: the
index (numpy, LMDB, Pillow) is imported only when there is no service to ask.
"""

from __future__ import annotations

import argparse
import os
import sys

from dupwatch.daemon.cli.remote import query_via_service
from dupwatch.daemon.cli.settings import (
    EXIT_ERROR,
    EXIT_FOUND,
    EXIT_NONE,
    existing_index,
    settings,
)
from dupwatch.daemon.render import printable, show_query
from dupwatch.index.errors import DupwatchError, FingerprintError
from dupwatch.index.folders import absolute, walk
from dupwatch.index.hashing.limits import bounded


def query_images(given: list[str], ignore: tuple[str, ...]) -> list[str | bytes]:
    """The images to query: each file given, and every image under each folder given (in
    name order). Raises DupwatchError for a folder without a single image."""
    images: list[str | bytes] = []
    for name in given:
        if not os.path.isdir(name):
            images.append(name)
            continue
        found = sorted(path for path, _st in walk(absolute(name), ignore=ignore))
        if not found:
            raise DupwatchError(f"{printable(absolute(name))}: no images in this folder")
        images += found
    return images


def query(args: argparse.Namespace) -> int:
    config = settings(args)
    images = query_images(args.images, config.ignore)
    # The service answers unless an index is named (option, environment, config) that it
    # does not serve; with none named, it is the index the user means.
    named = os.fspath(config.index) if config.index is not None else None
    served = query_via_service(
        config.socket_path, images, radius=args.radius, as_json=args.json, index_path=named
    )
    if served is not None:
        return served
    found = False
    failed = False
    with existing_index(args) as index:
        for image in images:
            try:
                with bounded(image, config.hash_timeout_s):  # as in the hashing processes
                    matches = index.query(image, args.radius)
            except FingerprintError as error:
                print(f"dupwatch: {printable(error.path)}: {error.reason}", file=sys.stderr)
                failed = True
                continue
            shown = [m.to_json() for m in matches]
            found = show_query(image, shown, as_json=args.json) or found
    if failed:
        return EXIT_ERROR
    return EXIT_FOUND if found else EXIT_NONE
