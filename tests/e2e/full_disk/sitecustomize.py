"""A full disk, injected at the storage layer, for servers started with this directory first on PYTHONPATH.

Where the tests cannot mount a small tmpfs (not root), `tests/e2e/test_process_faults.py`
starts the server with this module as ``sitecustomize``, so that every process of it (the
server, the forkserver and the workers) loads it. While the file named by
``SIASYNC_TEST_FULL_DISK`` exists, the writes a full disk refuses fail as they fail there:

* result files: `storage.files.ResultFiles.write` raises ``OSError(ENOSPC)``;
* the job store: every statement but a read raises SQLite's ``SQLITE_FULL`` error, which
  the store reports as it reports the real one (`storage.jobs.StoreFull`).
"""

from __future__ import annotations

import errno
import os

FLAG = os.environ.get("SIASYNC_TEST_FULL_DISK")

if FLAG:
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from storage.files import ResultFiles

    _write = ResultFiles.write

    def _full_write(self: ResultFiles, job_id: str, name: str, data: bytes) -> int:
        if os.path.exists(FLAG):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return _write(self, job_id, name, data)

    ResultFiles.write = _full_write

    @event.listens_for(Engine, "before_cursor_execute")
    def _full_store(conn, cursor, statement: str, *args: object) -> None:
        if os.path.exists(FLAG) and not statement.lstrip().upper().startswith(("SELECT", "PRAGMA")):
            error = sqlite3.OperationalError("database or disk is full")
            error.sqlite_errorcode = sqlite3.SQLITE_FULL
            raise error
