"""Running jobs: each (field, image) pair is cut in a worker thread, never on the event loop.

A job runs as one asyncio task. Cutouts and file writes happen in threads; the
task registers each product in the store only after its file has been renamed into
place. Cancellation is cooperative: `ThreadExecutor.cancel` flags the job, the task
stops before its next product, and `ThreadExecutor.stopped` lets a destroy wait
until nothing of the job can be written any more.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from cutout.engine import ParentCache, cut
from cutout.errors import ArchiveError, NoOverlapError
from cutout.index import ArchiveIndex
from cutout.preview import preview_bytes
from cutout.scan import ImageRecord
from cutout.sky import Field, Intersect
from siasync.jobs import JobService, staging_request
from siasync.params import StagingRequest

log = logging.getLogger(__name__)

EXTENSIONS = {"image/fits": "fits", "image/png": "png", "image/jpeg": "jpg"}
_local = threading.local()


@dataclass(frozen=True)
class Pair:
    """One unit of work: a field of the job and an archive image that matches it."""

    field_index: int
    field: Field
    record: ImageRecord


def plan(index: ArchiveIndex, request: StagingRequest) -> Iterator[Pair]:
    """Every (field, image) pair of a request, in field order then index order."""
    mode = Intersect(request.intersect)
    for i, field in enumerate(request.fields()):
        for record in index.lookup(field, mode, request.collections, request.bands):
            yield Pair(i, field, record)


def result_name(pair: Pair, mime: str) -> str:
    """Deterministic, URL-safe result id of a product: field index, image id, format."""
    return f"{pair.field_index:05d}.{pair.record.id}.{EXTENSIONS[mime]}"


def make_products(index: ArchiveIndex, pair: Pair, mimes: tuple[str, ...]) -> list[tuple[str, bytes]]:
    """Cut a pair once and encode it in each requested format (runs in a worker thread)."""
    cache = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = ParentCache()
    parent = cache.get(index.path_of(pair.record), pair.record.hdu, pair.record.id, pair.record.path)
    piece = cut(parent, pair.field)
    return [(mime, piece.to_fits() if mime == "image/fits" else preview_bytes(piece.data, mime)) for mime in mimes]


class ThreadExecutor:
    """Runs up to ``workers`` jobs at once, each product in a worker thread."""

    def __init__(self, service: JobService, index: ArchiveIndex, workers: int) -> None:
        self.service = service
        self.index = index
        self.workers = workers
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._cancelled: set[str] = set()
        self._running: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task] = []
        self._timers: list[asyncio.TimerHandle] = []

    def start(self) -> None:
        """Start the runner tasks (inside the running event loop)."""
        self._tasks = [asyncio.create_task(self._runner(), name=f"runner-{i}") for i in range(self.workers)]

    async def close(self) -> None:
        """Stop the runners; jobs left EXECUTING resume at the next start."""
        for timer in self._timers:
            timer.cancel()
        self._cancelled.update(self._running)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def submit(self, job_id: str) -> None:
        """Queue a QUEUED job."""
        self._cancelled.discard(job_id)
        self._queue.put_nowait(job_id)

    def cancel(self, job_id: str) -> None:
        """Ask a job's runner to stop before its next product."""
        self._cancelled.add(job_id)

    async def stopped(self, job_id: str, timeout: float = 10.0) -> None:
        """Wait until the job has no runner (it writes nothing more)."""
        event = self._running.get(job_id)
        if event is not None:
            await asyncio.wait_for(event.wait(), timeout)

    async def _runner(self) -> None:
        while True:
            job_id = await self._queue.get()
            try:
                await self._run(job_id)
            except Exception:  # a bug in one job must not stop the runner
                log.exception("job %s failed unexpectedly", job_id)
                await self.service.finish(job_id, "ERROR", ("fatal", "internal error while staging; see the log"))

    async def _run(self, job_id: str) -> None:
        job = await self.service.store.get(job_id)
        if job is None or job.phase != "QUEUED" or job_id in self._cancelled:
            return
        delay = (job.start_after - datetime.now(UTC)).total_seconds() if job.start_after else 0
        if delay > 0:
            self._timers.append(asyncio.get_running_loop().call_later(delay, self.submit, job_id))
            return
        done = asyncio.Event()
        self._running[job_id] = done
        try:
            job = await self.service.start(job_id)
            if job is not None:
                await self._stage(job_id, staging_request(job), dict(job.info))
        finally:
            del self._running[job_id]
            done.set()

    async def _stage(self, job_id: str, request: StagingRequest, info: dict) -> None:
        store = self.service.store
        pairs = await asyncio.to_thread(lambda: list(plan(self.index, request)))
        made = {r.result_id for r in await store.results(job_id)}
        fields_with_images = {p.field_index for p in pairs}
        info.update(fields_total=len(request.positions), pairs_total=len(pairs),
                    empty_fields=sorted(set(range(len(request.positions))) - fields_with_images)[:1000],
                    products=len(made), bytes=info.get("bytes", 0), warnings=info.get("warnings", []))
        for position, pair in enumerate(pairs):
            if job_id in self._cancelled:
                return
            wanted = [m for m in request.products if result_name(pair, m) not in made]
            try:
                products = await asyncio.to_thread(make_products, self.index, pair, tuple(wanted)) if wanted else []
            except NoOverlapError:
                products = []
            except (ArchiveError, OSError, ValueError) as exc:
                info["warnings"] = (info["warnings"] + [f"{pair.record.path}: skipped ({exc})"])[-100:]
                products = []
            for mime, data in products:
                if job_id in self._cancelled:
                    return
                name = result_name(pair, mime)
                try:
                    size = await asyncio.to_thread(self.service.files.write, job_id, name, data)
                except FileNotFoundError:
                    return  # destroyed meanwhile: never recreate its directory
                except OSError as exc:
                    reason = "the disk is full" if exc.errno == errno.ENOSPC else str(exc)
                    await store.update(job_id, info=info)
                    await self.service.finish(job_id, "ERROR", ("fatal", f"cannot write results: {reason}"))
                    return
                await store.add_result(job_id, name, name, size, mime,
                                       {"field": pair.field_index, "image": pair.record.id})
                info["products"] += 1
                info["bytes"] += size
            info["fields_done"] = pairs[position + 1].field_index if position + 1 < len(pairs) else len(request.positions)
            await store.update(job_id, info=info)
        info["fields_done"] = len(request.positions)
        await store.update(job_id, info=info)
        await self.service.finish(job_id, "COMPLETED")
