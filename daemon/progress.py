"""Progress of a long hashing run (`scan`, `reindex`), drawn by tqdm on stderr.

On a terminal: a bar with files done / total, the rate and the time left. Without one,
nothing, unless asked (`--progress`): then one plain line every few seconds, for a log.
Never on stdout, so `--json` output stays clean. A cluster engine tells the workers it has
with `set_workers(n)`; they are shown beside the rate.
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO

from tqdm import tqdm

# Without a terminal, one line this often (DUPWATCH_PROGRESS_EVERY_S: for a log's taste).
PLAIN_EVERY_S = float(os.environ.get("DUPWATCH_PROGRESS_EVERY_S") or 5.0)
UNIT = " files"  # tqdm writes the rate as "12.5 files/s"
PLAIN_FORMAT = "{desc}: {n_fmt}/{total_fmt} files ({percentage:.0f}%), {rate_fmt}, {remaining} left{postfix}"  # fmt: skip # noqa: E501
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"  # fmt: skip # noqa: E501


class Progress:
    """A progress callback, `progress(done, total)`, for Index.update and Index.reindex.

    `enabled`: True draws even without a terminal (plain lines), False never, None (the
    default) only on a terminal.
    """

    def __init__(
        self,
        label: str,
        *,
        enabled: bool | None = None,
        stream: IO[str] | None = None,
        every_s: float = PLAIN_EVERY_S,
    ) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        terminal = self.stream.isatty()
        self.plain = bool(enabled) and not terminal
        self.every_s = every_s
        self.started = time.monotonic()
        self.last_line = self.started  # the first line comes after every_s, with a real rate
        self.shown = (0, 0)  # (done, total) of the last plain line
        self.done = self.total = 0
        self.workers: int | None = None
        self.bar: tqdm | None = None
        if terminal and enabled is not False:
            self.bar = tqdm(
                desc=label,
                unit=UNIT,
                file=self.stream,
                bar_format=BAR_FORMAT,
                ncols=None if _width(self.stream) else 80,  # a terminal of no size: 80
                dynamic_ncols=bool(_width(self.stream)),
                mininterval=0.1,
            )

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        if self.bar is not None:
            if self.bar.total != total:
                self.bar.total = total
            self.bar.update(done - self.bar.n)
        elif self.plain and total and time.monotonic() - self.last_line >= self.every_s:
            self._line()

    def set_workers(self, count: int) -> None:
        """The workers hashing now (a cluster's come and go); shown beside the rate."""
        self.workers = count
        if self.bar is not None:
            self.bar.set_postfix_str(self._postfix(), refresh=True)

    def finish(self) -> None:
        """Close the bar; without a terminal, the last line when it has not been shown."""
        if self.bar is not None:
            self.bar.close()
        elif self.plain and self.total and self.shown != (self.done, self.total):
            self._line()

    def _line(self) -> None:
        self.last_line = time.monotonic()
        self.shown = (self.done, self.total)
        line = tqdm.format_meter(
            self.done,
            self.total,
            self.last_line - self.started,
            prefix=self.label,
            unit=UNIT,
            bar_format=PLAIN_FORMAT,
            postfix=self._postfix(),
        )
        self.stream.write(" ".join(line.split()) + "\n")  # tqdm pads the rate for a bar
        self.stream.flush()

    def _postfix(self) -> str:
        return "" if self.workers is None else f"{self.workers} workers"


def _width(stream: IO[str]) -> int:
    """The terminal's width in columns; 0 when it does not say (a bare pseudo-terminal)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 0
