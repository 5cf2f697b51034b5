"""A real Label Studio server for the bridge's tests: the `label-studio` of the test extra,
its SQLite database and files in a temporary folder, a user with a fixed API token, local
files served from one document root, and no call to the internet (no version check, no
analytics).

Starting it takes most of a minute (database migrations), so a test session starts it once.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

LABEL_STUDIO = shutil.which("label-studio", path=os.path.dirname(sys.executable)) or shutil.which(
    "label-studio"
)
START_TIMEOUT_S = 240.0
USER = "annotator@example.com"
PASSWORD = "dupwatch-test-password"
TOKEN = "dupwatch-test-token-5f1c2a9e7b"  # a legacy API token, set with --user-token
LABEL_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="label" toName="image"><Choice value="cat"/><Choice value="other"/></Choices>
</View>"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LabelStudioServer:
    """`label-studio start` on 127.0.0.1 with everything under `base`; files under
    `document_root` are what local-files storages may serve."""

    def __init__(self, base: Path) -> None:
        assert LABEL_STUDIO, "label-studio is missing: pip install -e '.[test]'"
        self.base = base
        self.document_root = base / "files"
        self.document_root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = TOKEN
        self.log = base / "label-studio.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.start_times_s: list[float] = []
        self.env = {
            **os.environ,
            "HOME": str(base / "home"),  # nothing of it lands in the real home folder
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(self.document_root),
            "LATEST_VERSION_CHECK": "false",
            "COLLECT_ANALYTICS": "false",
            "PYTHONUNBUFFERED": "1",
        }

    def start(self) -> float:
        """Start it and wait until its API answers the token; returns the seconds taken."""
        started = time.monotonic()
        command = [
            LABEL_STUDIO,
            "start",
            "--no-browser",
            "--data-dir",
            str(self.base / "data"),
            "--internal-host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--username",
            USER,
            "--password",
            PASSWORD,
            "--user-token",
            TOKEN,
            "--enable-legacy-api-token",
        ]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=log, start_new_session=True
            )
        while not self.answers():
            if self.process.poll() is not None:
                raise AssertionError(
                    f"label-studio exited {self.process.returncode}: {self.tail()}"
                )
            if time.monotonic() - started > START_TIMEOUT_S:
                raise AssertionError(f"label-studio did not answer in {START_TIMEOUT_S} s")
            time.sleep(0.5)
        took = time.monotonic() - started
        self.start_times_s.append(took)
        return took

    def answers(self) -> bool:
        request = urllib.request.Request(
            f"{self.url}/api/current-user/whoami", headers={"Authorization": f"Token {TOKEN}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        """SIGTERM to its process group (the dev server has children), then wait."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)
        except ProcessLookupError:
            pass
        self.process = None

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])
