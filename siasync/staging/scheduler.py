"""The scheduler: turns a job into batches of (field, image) pairs, feeds the pool, registers products.

Pairs are planned lazily, a chunk of fields at a time, in a thread (index lookups
are CPU work), and each job has at most a few batches per worker planned ahead, so a
10,000-field job holds no more than a window of its work in memory. The planned
batches of all running jobs meet in the `siasync.staging.dispatch.Dispatcher`, which decides
which goes to the pool next (small jobs first, owners in turn). Each finished
batch is registered in one transaction, its results and table rows together, only
after the worker has renamed its files into place.

**Batch size.** A batch is up to `BATCH_PAIRS` pairs. Measured with
bench/staging_bench.py on 2 workers: the bare pool is within 5% from 1 to 16 pairs
per task, but end to end every batch also costs a registration transaction on the
event loop, and 2,000 fields staged at 199 products/s with 4 pairs, 256 with 8 and
229 with 16. Eight still spreads a 10-field job (dozens of pairs) over every worker,
and an abort waits for at most one running batch of 8 cutouts, well under a second.
A mosaic or stack (MODE=mosaic or stack) is a batch of its own: it reprojects several
images (a tenth of a second to a second for 512x512 in three bands), so one per batch
delivers each field's bands as they are made and keeps an abort's wait as short.

**Stopping.** `cancel` withdraws the job's batches that have not started; those
already running finish, and their files are deleted instead of registered.
`stopped` returns once nothing of the job is running, so a destroy that follows
can delete the directory for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cutout.index import ArchiveIndex
from cutout.sky import Intersect
from siasync.staging.dispatch import Dispatcher, Ticket
from siasync.staging.pool import LostTask, TaskPool
from siasync.staging.worker import BatchTask, PairOutcome, PairTask, coadd_tasks
from siasync.uws.jobs import JobService, staging_request
from siasync.uws.params import StagingRequest
from siasync.uws.representations import job_path
from storage.jobs import Job, Product, StoreFull, TableRow

log = logging.getLogger(__name__)

BATCH_PAIRS = 8
#: fields looked up per planning step (one thread hop); the first steps are smaller, so
#: that a 10,000-field job sends its first batch as soon as a 10-field job does
PLAN_FIELDS = 64
FIRST_PLAN_FIELDS = 8
#: seconds between progress writes to the store
PROGRESS_EVERY = 0.5
#: times a batch lost with a dead worker is submitted again
RETRIES = 3
#: seconds past a job's execution duration at which its timer aborts it
EXPIRY_MARGIN = 0.02
#: seconds between attempts to record a job's error while the store's disk is full
RECORD_EVERY = 2.0


@dataclass
class Progress:
    """Counters shown in jobInfo, written to the store at most every `PROGRESS_EVERY` seconds."""

    fields_total: int
    fields_done: int = 0
    products: int = 0
    bytes: int = 0
    pairs: int = 0
    empty_fields: list[int] = field(default_factory=list)
    empty_count: int = 0
    #: the estimate made at creation, in (field, image) pairs
    cost: int | None = None
    warnings: list[str] = field(default_factory=list)
    _recent: deque = field(default_factory=lambda: deque(maxlen=64))
    _written: float = 0.0

    def record(self, products: int, size: int) -> None:
        self.products += products
        self.bytes += size
        self._recent.append((time.monotonic(), self.products))

    def rate(self) -> float:
        """Products per second over the recent window."""
        if len(self._recent) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self._recent[0], self._recent[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def as_info(self) -> dict:
        cost = {} if self.cost is None else {"cost": self.cost}
        return {"fields_total": self.fields_total, **cost, "fields_done": self.fields_done, "products": self.products,
                "bytes": self.bytes, "pairs_done": self.pairs, "rate": round(self.rate(), 2),
                "empty_fields": self.empty_fields, "empty_count": self.empty_count, "warnings": self.warnings}


class Scheduler:
    """Runs queued jobs on a `TaskPool`."""

    def __init__(self, service: JobService, index: ArchiveIndex, pool: TaskPool, max_jobs: int,
                 policy: str = "fair") -> None:
        self.service = service
        self.index = index
        self.pool = pool
        self.dispatcher = Dispatcher(pool, policy=policy)
        self.max_jobs = max_jobs
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._cancelled: set[str] = set()
        self._running: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task] = []
        self._timers: list[asyncio.TimerHandle] = []
        self._expiring: set[asyncio.Task] = set()

    async def start(self) -> None:
        """Start the pool and the job runners."""
        await self.pool.start()
        self._tasks = [asyncio.create_task(self._runner(), name=f"job-runner-{i}") for i in range(self.max_jobs)]

    async def close(self) -> None:
        """Stop the runners and the pool; jobs left EXECUTING resume at the next start."""
        for timer in self._timers:
            timer.cancel()
        self._cancelled.update(self._running)
        self.dispatcher.shutdown()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.pool.close()

    def submit(self, job_id: str) -> None:
        """Queue a QUEUED job."""
        self._cancelled.discard(job_id)
        self._queue.put_nowait(job_id)

    def cancel(self, job_id: str) -> None:
        """Stop the job: withdraw its waiting batches, discard the running ones' output."""
        self._cancelled.add(job_id)

    async def stopped(self, job_id: str, timeout: float = 30.0) -> None:
        """Wait until nothing of the job is running."""
        event = self._running.get(job_id)
        if event is not None:
            await asyncio.wait_for(event.wait(), timeout)

    async def _runner(self) -> None:
        while True:
            job_id = await self._queue.get()
            try:
                await self._run(job_id)
            except Exception as exc:  # one job's failure must not stop the runner
                if isinstance(exc, StoreFull) or getattr(exc, "errno", None) == errno.ENOSPC:
                    log.error("job %s stopped: the disk is full (%s)", job_id, exc)
                    message = "the disk is full: the job can be neither staged nor recorded"
                else:
                    log.exception("job %s failed unexpectedly", job_id)
                    message = "internal error while staging; see the log"
                # also from QUEUED: a job that failed to start would otherwise wait for a runner that never comes
                await self._finish(job_id, "ERROR", message, ("QUEUED", "EXECUTING"))

    async def _finish(self, job_id: str, phase: str, error: str | None = None,
                      from_phases: tuple[str, ...] = ("EXECUTING",)) -> None:
        """Move the job to its final phase; while a full disk prevents even that, try again in the background."""
        try:
            await self.service.finish(job_id, phase, error and ("fatal", error), from_phases)
        except StoreFull:
            log.error("job %s: cannot record %s, the disk is full; trying every %s s", job_id, phase, RECORD_EVERY)
            self._tasks.append(asyncio.create_task(self._finish_later(job_id, phase, error, from_phases),
                                                   name=f"finish-{job_id}"))
        except Exception:  # the runner must go on to the next job; this one resumes at the next start
            log.exception("job %s: cannot record %s", job_id, phase)

    async def _finish_later(self, job_id: str, phase: str, error: str | None, from_phases: tuple[str, ...]) -> None:
        while True:
            await asyncio.sleep(RECORD_EVERY)
            with contextlib.suppress(StoreFull):
                # False when the job was destroyed meanwhile
                await self.service.finish(job_id, phase, error and ("fatal", error), from_phases)
                return

    async def _run(self, job_id: str) -> None:
        job = await self.service.store.get(job_id)
        if job is None or job.phase != "QUEUED" or job_id in self._cancelled:
            self._cancelled.discard(job_id)  # stopped or destroyed before it ran: nothing more to stop
            return
        delay = (job.start_after - datetime.now(UTC)).total_seconds() if job.start_after else 0
        if delay > 0:
            self._timers.append(asyncio.get_running_loop().call_later(delay, self.submit, job_id))
            await self.service.store.update(job_id, quote=self.quote(job_id, job.info.get("cost", 0), job.start_after))
            return
        done = asyncio.Event()
        self._running[job_id] = done
        try:
            started = await self.service.start(job_id)
            if started is not None:
                # the job is aborted the moment its execution duration runs out, not at the reaper's next sweep
                # (a moment after: the loop's timers are in whole milliseconds and may fire a little early)
                deadline = started.start_time + timedelta(seconds=started.execution_duration)
                timer = asyncio.get_running_loop().call_later(
                    max(0.0, (deadline - datetime.now(UTC)).total_seconds()) + EXPIRY_MARGIN, self._expire, job_id)
                try:
                    await self._stage(started)
                finally:
                    timer.cancel()
        finally:
            del self._running[job_id]
            self._cancelled.discard(job_id)
            done.set()

    def _expire(self, job_id: str) -> None:
        task = asyncio.create_task(self.service.expire(job_id), name=f"expire-{job_id}")
        self._expiring.add(task)
        task.add_done_callback(self._expiring.discard)

    async def _batches(self, job: Job, request: StagingRequest, progress: Progress) -> AsyncIterator[BatchTask]:
        """The job's work, planned a chunk of fields at a time, skipping pairs already registered."""
        mode = Intersect(request.intersect)
        root, path = str(self.service.files.root), f"{job_path(job.id)}/results/"
        pending: list[PairTask] = []
        lo, step = 0, FIRST_PLAN_FIELDS
        while lo < len(request.positions):
            chunk = request.fields(lo, lo + step)
            matches = await asyncio.to_thread(self._plan, request, lo, chunk, mode)
            # after a restart some pairs are registered already; the store, not a counter, says which
            done = await self.service.store.done_pairs(job.id, lo, lo + len(chunk) - 1)
            for offset, (field_, records) in enumerate(zip(chunk, matches, strict=True)):
                index = lo + offset
                if not records:
                    progress.empty_count += 1
                    if len(progress.empty_fields) < 1000:
                        progress.empty_fields.append(index)
                if request.mode != "cutout":  # generated products: one batch each, a field's bands in turn
                    for unit in records:
                        if (index, unit.unit) in done:
                            progress.pairs += len(unit.records)
                        else:
                            yield BatchTask(job.id, root, path, (unit,))
                    continue
                hits = {r.id for r in records}
                if request.ids:  # SODA: every dataset of the job, a text/plain result where the field misses it
                    records = [self.index.by_id[i] for i in request.ids if i in self.index.by_id]
                todo = [r for r in records if (index, r.id) not in done]
                progress.pairs += len(records) - len(todo)
                pending += [PairTask(index, field_, r, str(self.index.path_of(r)), request.products,
                                     explain_misses=bool(request.ids), miss=r.id not in hits) for r in todo]
                while len(pending) >= BATCH_PAIRS:
                    yield BatchTask(job.id, root, path, tuple(pending[:BATCH_PAIRS]))
                    pending = pending[BATCH_PAIRS:]
            lo, step = lo + len(chunk), min(2 * step, PLAN_FIELDS)
        if pending:
            yield BatchTask(job.id, root, path, tuple(pending))

    def _plan(self, request: StagingRequest, lo: int, fields: list, intersect: Intersect) -> list[list]:
        """Per field, the matching images; or, for MODE=mosaic or stack, the products to generate (a thread's work)."""
        matches = [self.index.lookup(f, intersect, request.collections, request.bands) for f in fields]
        if request.ids:
            wanted = set(request.ids)
            return [[r for r in records if r.id in wanted] for records in matches]
        if request.mode == "cutout":
            return matches
        return [coadd_tasks(lo + i, f, records, [str(self.index.path_of(r)) for r in records], request.mode,
                            request.grid, request.products, request.combine, request.match_background)
                for i, (f, records) in enumerate(zip(fields, matches, strict=True))]

    def quote(self, job_id: str, remaining: int, start: datetime | None = None) -> datetime | None:
        """When a job with ``remaining`` pairs to make should complete, or None before any measurement.

        The model is the dispatcher's order: the running jobs with less left to do go
        first, then this job's own pairs, at the measured rate of every worker together.
        """
        rate = self.dispatcher.throughput.per_worker()
        if rate is None:
            return None
        pairs = self.dispatcher.work_ahead(job_id, remaining) + remaining
        now = datetime.now(UTC)
        return max(start or now, now) + timedelta(seconds=pairs / (rate * self.pool.workers))

    async def _stage(self, job: Job) -> None:
        request = staging_request(job)
        progress = Progress(len(request.positions), **{k: job.info[k] for k in ("products", "bytes", "cost")
                                                       if k in job.info})
        outstanding: dict[int, int] = {}  # field index -> batches of it still in flight
        planned_to = -1  # every field up to here has been planned
        in_flight: dict[asyncio.Future, tuple[BatchTask, int]] = {}
        # one batch until the first results are registered: planning and cutting more would
        # take CPU from that batch just when the client is waiting for its first image
        limit = 1
        batches = self._batches(job, request, progress)
        exhausted = False
        fatal: str | None = None

        async def refill() -> None:
            """Keep up to `limit` batches in flight while the job runs, yielding to finished ones."""
            nonlocal exhausted, planned_to
            while (not exhausted and len(in_flight) < limit and job.id not in self._cancelled and not fatal
                   and not any(f.done() for f in in_flight)):  # finished batches are registered first
                batch = await anext(batches, None)
                if batch is None:
                    exhausted = True
                    return
                self._launch(ticket, in_flight, batch, 0)
                for pair in batch.pairs:
                    outstanding[pair.field_index] = outstanding.get(pair.field_index, 0) + 1
                planned_to = batch.pairs[-1].field_index - 1

        ticket = self.dispatcher.open(job.id, job.owner, max(0, job.info.get("cost", 0) - progress.pairs))
        try:
            await refill()  # the first batches go out before anything is written
            await self.service.store.update(job.id, quote=self.quote(job.id, ticket.remaining))
            while True:
                await refill()
                if job.id in self._cancelled or fatal:
                    self._withdraw(ticket, in_flight, outstanding)
                if not in_flight:
                    break
                finished, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                completed: list[tuple[BatchTask, list[PairOutcome]]] = []
                for future in finished:
                    batch, attempt = in_flight.pop(future)
                    try:
                        completed.append((batch, future.result()))
                    except LostTask:
                        if attempt < RETRIES and job.id not in self._cancelled:
                            self._launch(ticket, in_flight, batch, attempt + 1)
                            continue
                        fatal = fatal or "a worker died repeatedly on this job's data"
                        completed.append((batch, []))
                if limit > 1 and len(in_flight) < self.pool.workers:
                    await refill()  # workers would otherwise wait while the store is written
                for batch, _ in completed:
                    _release(outstanding, batch)
                fatal = await self._register(job.id, completed, progress) or fatal
                limit = 4 * self.pool.workers
                if exhausted:
                    planned_to = len(request.positions) - 1
                progress.fields_done = (min(outstanding) if outstanding else planned_to + 1)
                await self._write_progress(job.id, progress, ticket)
        finally:
            self.dispatcher.close(ticket)
            await batches.aclose()
        # nothing of the job runs now: a temporary left here was a worker's that died mid-write
        await asyncio.to_thread(self.service.files.remove_temporaries, job.id)
        await self._write_progress(job.id, progress, force=True)
        if job.id in self._cancelled:
            return
        if fatal:
            await self._finish(job.id, "ERROR", fatal)
        else:
            progress.fields_done = len(request.positions)
            await self._write_progress(job.id, progress, force=True)
            await self._finish(job.id, "COMPLETED")

    def _launch(self, ticket: Ticket, in_flight: dict, batch: BatchTask, attempt: int) -> None:
        in_flight[self.dispatcher.submit(ticket, batch)] = (batch, attempt)

    def _withdraw(self, ticket: Ticket, in_flight: dict, outstanding: dict[int, int]) -> None:
        for future, (batch, _) in list(in_flight.items()):
            if self.dispatcher.withdraw(ticket, future):
                del in_flight[future]
                _release(outstanding, batch)

    async def _register(self, job_id: str, completed: list[tuple[BatchTask, list[PairOutcome]]],
                        progress: Progress) -> str | None:
        """Register finished batches in one transaction (or delete their files if the job stopped).

        Returns the first fatal message among them, if any.
        """
        outcomes = [o for _, batch_outcomes in completed for o in batch_outcomes]
        written = [name for o in outcomes for name, _, _ in o.products]
        if job_id in self._cancelled:
            await asyncio.to_thread(_delete_files, self.service.files, job_id, written)
            return None
        products = [Product(name, size, mime, {"field": o.field_index, "image": o.image_id})
                    for o in outcomes for name, size, mime in o.products]
        rows = [TableRow(o.field_index, o.image_id, name, row) for o in outcomes for name, row in o.rows]
        if products or rows:
            try:
                await self.service.store.register(job_id, products, rows)
            except StoreFull:  # unregistered files would be orphans; deleting them frees room to record the error
                await asyncio.to_thread(_delete_files, self.service.files, job_id, written)
                return "cannot register results: the disk is full"
            self.service.results_watch.notify(job_id)
        progress.record(len(products), sum(p.size for p in products))
        progress.pairs += sum(o.pairs for o in outcomes if o.problem is None)
        for o in outcomes:
            notes = o.notes + ([o.message] if o.problem == "warning" else [])
            if notes:
                progress.warnings = (progress.warnings + notes)[-100:]
        fatal = next((o.message for o in outcomes if o.problem == "fatal"), None)
        return fatal

    async def _write_progress(self, job_id: str, progress: Progress, ticket: Ticket | None = None,
                              force: bool = False) -> None:
        """Write the progress, and a fresh quote while the job runs (``ticket``)."""
        now = time.monotonic()
        if force or now - progress._written >= PROGRESS_EVERY:
            progress._written = now
            quote = {"quote": self.quote(job_id, ticket.remaining)} if ticket is not None else {}
            try:
                await self.service.store.update(job_id, info=progress.as_info(), **quote)
            except StoreFull:  # progress is advisory: the next write, or the job's end, says more
                log.warning("job %s: progress not recorded: the disk is full", job_id)


def _release(outstanding: dict[int, int], batch: BatchTask) -> None:
    """Count a batch's pairs out of the fields still in flight."""
    for pair in batch.pairs:
        outstanding[pair.field_index] -= 1
        if not outstanding[pair.field_index]:
            del outstanding[pair.field_index]


def _delete_files(files: object, job_id: str, names: list[str]) -> None:
    for name in names:
        with contextlib.suppress(OSError, ValueError):
            files.path(job_id, name).unlink()
