"""The values the command line accepts, checked as it is parsed: a bad one is a one-line
usage error with exit status 2, never a traceback deep in a command.

Each function is an argparse `type=`: it returns the value or raises ArgumentTypeError with
a message that says what was wrong and what is allowed. Light (no numpy, Pillow or LMDB).
"""

from __future__ import annotations

import argparse
import os

from dupwatch.daemon.config import MAX_WORKERS, check_cluster
from dupwatch.index.errors import DupwatchError
from dupwatch.index.fingerprint.transforms import parse_transforms
from dupwatch.index.matches import MAX_RADIUS


def radius(text: str) -> int:
    """A Hamming distance from 0 to MAX_RADIUS (the same range as the config file and the
    socket's requests)."""
    value = _integer(text)
    if not 0 <= value <= MAX_RADIUS:
        raise argparse.ArgumentTypeError(f"must be from 0 to {MAX_RADIUS}, not {value}")
    return value


def workers(text: str) -> int:
    """A number of hashing processes, 1 to MAX_WORKERS (as the config's `workers`)."""
    value = _integer(text)
    if not 1 <= value <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_WORKERS}, not {value}")
    return value


def cluster(text: str) -> str:
    """A Dask scheduler's address, by its form (as the config's `cluster`)."""
    try:
        return check_cluster(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def folder(text: str) -> str:
    """A folder that exists: a misspelt one would select nothing and read as "no duplicates"."""
    if not os.path.isdir(text):
        what = "not a folder" if os.path.exists(text) else "no such folder"
        raise argparse.ArgumentTypeError(f"{text}: {what}")
    return text


def existing(text: str) -> str:
    """A file or folder that exists (a folder to prefer must be spelt right, or nothing in
    it would ever be preferred)."""
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"{text}: no such file or folder")
    return text


def transforms(text: str) -> str:
    """A comma-separated list of rotate, flip and crop (kept as text: settings parses it)."""
    try:
        parse_transforms(text)
    except DupwatchError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def sidecar(text: str) -> str:
    """A label file pattern with no other fields than {stem} and {labels_dir}."""
    from dupwatch.index.cleanup.sidecars import check_pattern  # reads XML: loaded when used

    try:
        return check_pattern(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
