"""Change notifications between servers sharing a PostgreSQL store: ``LISTEN``, kept connected.

Each write of `storage.jobs.JobStore` sends ``NOTIFY siasync_jobs, 'ORIGIN JOB WHAT'`` in its
transaction, so PostgreSQL delivers it when (and only if) the change commits, to every
server listening. A `Listener` holds one connection of its own (outside the pool) that
listens, passes each notification of another server to the store's subscribers, and
checks every `CHECK_EVERY` seconds that the database answers. When the connection is
lost it says so (`Listener.problem`), connects again, and then calls ``resumed``:
notifications sent meanwhile are lost, so whoever waits on them must look again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from storage.jobs import CHANNEL, JobStore

log = logging.getLogger(__name__)

#: seconds between checks that the database answers (and between attempts to reconnect)
CHECK_EVERY = 1.0
#: seconds a check may take before the database counts as unreachable
CHECK_TIMEOUT = 3.0


def asyncpg_dsn(url: str) -> str:
    """The libpq-style DSN of a SQLAlchemy ``postgresql+asyncpg://`` URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Listener:
    """Delivers the other servers' change notifications to ``store``'s subscribers."""

    def __init__(self, url: str, store: JobStore, resumed: Callable[[], None]) -> None:
        self.dsn = asyncpg_dsn(url)
        self.store = store
        self.resumed = resumed
        #: why the database cannot be used now, or None
        self.problem: str | None = None
        self._connection: Any = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Connect and listen (raises when the database cannot be reached), then keep listening."""
        await self._connect()
        self._task = asyncio.create_task(self._watch(), name="notify-listener")

    async def close(self) -> None:
        """Stop listening."""
        # cancelled until it ends: before Python 3.12 a timeout may swallow a cancellation that comes as it expires
        while self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait([self._task], timeout=0.5)
        await self._disconnect()

    async def _connect(self) -> None:
        async with asyncio.timeout(CHECK_TIMEOUT):
            self._connection = await asyncpg.connect(self.dsn)
        await self._connection.add_listener(CHANNEL, self._received)

    async def _disconnect(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), CHECK_TIMEOUT)
            connection.terminate()

    def _received(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        origin, _, rest = payload.partition(" ")
        job_id, _, what = rest.partition(" ")
        if origin != self.store.origin:  # this server announced its own changes as it made them
            self.store.forget(job_id)
            self.store.announce(job_id, what)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(CHECK_EVERY)
            try:
                if self._connection is None:
                    await self._connect()
                    log.warning("the database answers again; listening for changes")
                    self.problem = None
                    self.resumed()
                else:
                    async with asyncio.timeout(CHECK_TIMEOUT):
                        await self._connection.fetchval("SELECT 1")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                if self.problem is None:
                    log.error("the database cannot be reached: %s", exc)
                self.problem = f"the database cannot be reached: {exc or type(exc).__name__}"
                await self._disconnect()
