"""Where the bridge's token comes from: options, environment, config file, a file of its own.

No SDK here: the unit installer and the command line read it with or without the extra.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from dupwatch.daemon.config import LabelStudioConfig
from dupwatch.index.errors import DupwatchError

TOKEN_ENV = ("DUPWATCH_LABELSTUDIO_TOKEN", "LABEL_STUDIO_API_KEY")
TOKEN_FILE_NAME = "labelstudio-token"  # beside the config file: what the systemd unit reads


class TokenMissing(DupwatchError):
    """No token anywhere the bridge looks; the message lists the places."""


def read_token(
    *,
    token: str | None = None,
    token_file: str | os.PathLike | None = None,
    config: LabelStudioConfig | None = None,
    environ: Mapping[str, str] = os.environ,
) -> str:
    """The API token: --token, else --token-file, else the environment, else the config's
    token_file, else default_token_file() if it exists. Raises TokenMissing or DupwatchError."""
    if token:
        return token.strip()
    if token_file:
        return _from_file(Path(token_file))
    for name in TOKEN_ENV:
        if environ.get(name, "").strip():
            return environ[name].strip()
    if config is not None and config.token_file is not None:
        return _from_file(config.token_file)
    if default_token_file(environ).exists():
        return _from_file(default_token_file(environ))
    raise TokenMissing(
        f"no Label Studio token: put it in {default_token_file(environ)} (mode 0600), give "
        f"--token-file FILE, set {' or '.join(TOKEN_ENV)}, or token_file under [labelstudio] "
        "in the config file (the token is on your Label Studio account page)"
    )


def default_token_file(environ: Mapping[str, str] = os.environ) -> Path:
    """$XDG_CONFIG_HOME/dupwatch/labelstudio-token (~/.config when unset)."""
    base = environ.get("XDG_CONFIG_HOME") or os.path.join(Path.home(), ".config")
    return Path(base) / "dupwatch" / TOKEN_FILE_NAME


def _from_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise DupwatchError(f"{path}: cannot read the token: {error.strerror}") from None
    if not text:
        raise DupwatchError(f"{path}: the token file is empty")
    return text
