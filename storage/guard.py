"""A lock on a state directory: one server process at a time serves a SQLite store.

The lock is an exclusive ``flock`` on ``siasync.lock`` in the directory, taken without
waiting and held as long as the process lives: the kernel releases it when the process
dies, however it dies, so a crashed server never leaves a stale lock behind. The file
names its holder (host and PID), so that a second server can say who serves the directory.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

NAME = "siasync.lock"


class StateLocked(RuntimeError):
    """Another process serves the state directory."""


class StateLock:
    """The lock of one state directory."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise `StateLocked` naming the holder (nothing in the directory is touched)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 512).decode(errors="replace").strip() or "an unknown process"
            os.close(fd)
            raise StateLocked(f"the state directory {self.path.parent} is already served by {holder}; "
                              "stop that server first (several servers need a PostgreSQL store)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"PID {os.getpid()} on host {socket.gethostname()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Let the lock go (it also goes with the process)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def probe(self) -> None:
        """Raise `StateLocked` if another process holds the lock; take it and let it go at once otherwise."""
        if not self.path.parent.is_dir():
            return
        self.acquire()
        self.release()
