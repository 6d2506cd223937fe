"""The whole resumable download of a job: every product as soon as it is listed, then the table.

`fetch` follows the job (`AsyncJob.updates`), skips products whose files are already
complete, downloads the others with a few concurrent transfers, refreshes ``table.xml``
now and then and writes it once more at the end. Killed at any moment, it leaves no file
under its final name that is not complete; run again on the same directory, it picks up
where it stopped.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from siasync.client._async import AsyncJob
from siasync.client._files import TABLE_FILE, Output, write_atomic
from siasync.client._models import ClientError, Product, Progress, ServiceError

#: concurrent downloads
PARALLEL = 4
#: seconds between refreshes of ``table.xml`` while the job runs
TABLE_EVERY = 30.0
#: the window of the download rate, in seconds
RATE_WINDOW = 5.0


@dataclass
class FetchProgress:
    """Where a fetch stands; handed to the ``progress`` callback on every change."""

    job_url: str
    directory: Path
    phase: str = "UNKNOWN"
    fields_done: int | None = None
    fields_total: int | None = None
    #: products whose file is complete in the directory (downloaded now, or found complete)
    files: int = 0
    #: of those, the ones found complete (a resumed fetch)
    skipped: int = 0
    #: bytes of the complete files
    bytes: int = 0
    failures: list[str] = field(default_factory=list)
    table: Path | None = None
    started: float = field(default_factory=time.monotonic)
    _recent: deque[float] = field(default_factory=deque, repr=False)

    @property
    def downloaded(self) -> int:
        """Files downloaded by this fetch."""
        return self.files - self.skipped

    @property
    def elapsed(self) -> float:
        """Seconds since the fetch started."""
        return time.monotonic() - self.started

    @property
    def rate(self) -> float:
        """Files downloaded per second, over the last few seconds."""
        now = time.monotonic()
        self._forget(now)
        return len(self._recent) / max(min(RATE_WINDOW, now - self.started), 1e-3)

    def add(self, size: int, skipped: bool) -> None:
        """Count one complete file."""
        self.files += 1
        self.bytes += size
        if skipped:
            self.skipped += 1
        else:
            now = time.monotonic()
            self._recent.append(now)
            self._forget(now)

    def _forget(self, now: float) -> None:
        while self._recent and self._recent[0] < now - RATE_WINDOW:
            self._recent.popleft()

    def update(self, progress: Progress) -> None:
        """Take the job's phase and progress."""
        self.phase = progress.phase
        self.fields_done = progress.fields_done if progress.fields_done is not None else self.fields_done
        self.fields_total = progress.fields_total if progress.fields_total is not None else self.fields_total


ProgressCallback = Callable[[FetchProgress], None]


async def fetch(job: AsyncJob, directory: Path | str, progress: ProgressCallback | None = None,
                parallel: int = PARALLEL) -> FetchProgress:
    """Download every product of a job into ``directory``, as they come, and the table as ``table.xml``.

    Parameters
    ----------
    job : AsyncJob
        The job (it may still be queued or running; it is followed until it is final).
    directory : path
        Where the files go, named by result id. It is bound to the job (``.siasync-job``):
        run again on it to resume.
    progress : callable, optional
        Called with the `FetchProgress` on every change.
    parallel : int
        Concurrent downloads.

    Returns
    -------
    FetchProgress
        The final state: ``phase`` is the job's final phase; ``failures`` lists the products
        that could not be downloaded (a later fetch retries them).

    Raises
    ------
    ClientError
        When the job cannot be followed (it is gone, the service is unreachable, the directory
        belongs to another job).
    OSError
        When a file cannot be written.
    """
    if parallel < 1:
        raise ValueError(f"parallel must be at least 1, got {parallel}")
    state = FetchProgress(job.url, Path(directory))
    notify = progress or (lambda _: None)
    queue: asyncio.Queue[Product | None] = asyncio.Queue()

    async def download(out: Output) -> None:
        while (product := await queue.get()) is not None:
            try:
                written = await job.download_into(out, product)
            except ClientError as exc:
                state.failures.append(str(exc))
            else:
                size = written if written is not None else out.target(product).stat().st_size
                state.add(size, skipped=written is None)
            notify(state)

    async def follow(out: Output) -> None:
        queued: set[str] = set()
        refreshed = time.monotonic()
        async for update in job.updates():
            if isinstance(update, Progress):
                state.update(update)
                if not update.final and time.monotonic() - refreshed > TABLE_EVERY:
                    await _write_table(job, out, state)
                    refreshed = time.monotonic()
            elif update.id not in queued:
                queued.add(update.id)
                try:
                    complete = out.complete(update)
                except ClientError as exc:  # a result id that is no safe file name
                    state.failures.append(str(exc))
                    continue
                if complete:  # a resumed fetch: this one is already here
                    state.add(update.size or 0, skipped=True)
                else:
                    queue.put_nowait(update)
            notify(state)
        for _ in range(parallel):
            queue.put_nowait(None)

    with Output(directory, job.url) as out:
        tasks = [asyncio.create_task(follow(out)), *(asyncio.create_task(download(out)) for _ in range(parallel))]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if state.phase == "DESTROYED":
            raise ClientError(f"job {job.url} was destroyed while its results were being fetched")
        await _write_table(job, out, state)
    notify(state)
    return state


async def _write_table(job: AsyncJob, out: Output, state: FetchProgress) -> None:
    """Write the job's table as ``table.xml`` (no table yet, before the job starts, is not an error)."""
    try:
        data = await job.table()
    except ServiceError as exc:
        if exc.status == 404:
            return
        raise
    write_atomic(out.path / TABLE_FILE, data)
    state.table = out.path / TABLE_FILE
