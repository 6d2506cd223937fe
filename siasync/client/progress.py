"""Showing a fetch's progress: one updating line on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from siasync.client.fetch import FetchProgress

#: seconds between redraws on a terminal, and between log lines otherwise
TTY_EVERY, LOG_EVERY = 0.1, 2.0


def progress_line(p: FetchProgress) -> str:
    """``fields 120/200 | files 240 | 3.1 MB | 85.2 files/s | EXECUTING``."""
    total = "?" if p.fields_total is None else str(p.fields_total)
    done = str(p.fields_done) if p.fields_done is not None else "0" if p.fields_total is not None else "?"
    failed = f" | {len(p.failures)} failed" if p.failures else ""
    return (f"fields {done}/{total} | files {p.files} | {p.bytes / 1e6:.1f} MB | {p.rate:.1f} files/s"
            f"{failed} | {p.phase}")


def summary_line(p: FetchProgress) -> str:
    """The last line of a fetch: what is in the directory, and how the job ended."""
    found = f", {p.skipped} already complete" if p.skipped else ""
    failed = f"; {len(p.failures)} failed" if p.failures else ""
    table = f"; table in {p.table}" if p.table else ""
    return (f"fetched {p.files} files ({p.downloaded} downloaded{found}{failed}), {p.bytes / 1e6:.1f} MB "
            f"in {p.elapsed:.1f} s; job {p.job_url.rsplit('/', 1)[-1]} {p.phase}{table}")


class ProgressPrinter:
    """A ``progress`` callback for `fetch` that writes to a text stream.

    On a terminal it redraws one line in place (at most every `TTY_EVERY` seconds, and at
    each phase change); otherwise it writes a line every `LOG_EVERY` seconds and one at each
    phase change. Call `close` at the end.
    """

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._phase: str | None = None
        self._last = float("-inf")
        self._drawn = False

    def __call__(self, p: FetchProgress) -> None:
        now = time.monotonic()
        changed = p.phase != self._phase
        if not changed and now - self._last < (TTY_EVERY if self.tty else LOG_EVERY):
            return
        self._phase, self._last = p.phase, now
        if self.tty:
            self.stream.write(f"\r{progress_line(p)}\x1b[K")
            self._drawn = True
        else:
            self.stream.write(f"[{p.elapsed:6.1f} s] {progress_line(p)}\n")
        self.stream.flush()

    def close(self, p: FetchProgress | None = None) -> None:
        """On a terminal, draw the final state (``p``) and end the line."""
        if self.tty and p is not None:
            self._last = float("-inf")
            self(p)
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
