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
`stopped` returns once nothing of the job is running, here or on the server that runs
it, so a destroy that follows can delete the directory for good.

**Several servers.** Jobs are not handed to a scheduler: each scheduler claims them
from the store (`storage.runners.Runners.claim`) as it has room, when told that a job
was queued or let go (the store's notifications) and every `CLAIM_EVERY` seconds
besides, and at a deferred job's start. A job runs under its server's lease: a
heartbeat renews it, and when a server dies the others let its jobs go and resume
them (pairs already registered are not made again). Whatever stops a job (ABORT,
DELETE, its execution duration) is a phase change in the store, which reaches the
scheduler running it as a notification; registration itself checks the phase, so
nothing is registered once a job has left EXECUTING. A scheduler whose executor is
down claims nothing, and a job whose batches were lost with the executor waits for it
to come back, then sends them again.

**Remote collections.** A job that names remote collections also gets a
`siasync.staging.remote_plan.RemotePlan`, which finds their images in the background and
plans their pairs (or, with MODE=mosaic or stack, every product of the job). Their
batches run in each collection's own pool, a *lane* of its ``concurrency`` processes, so a
slow remote never takes a worker from the archive's own pairs, and they are registered
exactly like the others. A job that stops does not wait for its remote batches still
running: their files are deleted when they return.
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
from siasync.remote.catalog import RemoteCatalog
from siasync.staging.dispatch import Dispatcher, Ticket
from siasync.staging.pool import ExecutorDown, LocalPool, LostTask, TaskPool, cancel_all
from siasync.staging.remote_plan import RemotePlan
from siasync.staging.worker import BatchTask, PairOutcome, PairTask, coadd_tasks
from siasync.uws.jobs import JobService, staging_request
from siasync.uws.params import StagingRequest
from siasync.uws.representations import job_path
from storage.jobs import PHASE, RUNNER, Job, NotRunning, Product, StoreFull, TableRow
from storage.runners import Runners

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
#: seconds between looks for jobs to claim, besides those that notifications prompt
CLAIM_EVERY = 2.0
#: seconds between looks at whether a lost executor is back
EXECUTOR_CHECK = 0.5
#: what a job's creation put in its jobInfo, which its progress keeps: the estimates (pairs and bytes, which
#: order the jobs and hold the owner's quotas) and the bytes of its uploaded tables
ESTIMATES = ("cost", "output_bytes", "upload_bytes")


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
    #: what creation estimated and measured (`ESTIMATES`), kept as it was
    estimates: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: remote images downloaded, and found in the download cache
    fetched: int = 0
    cached: int = 0
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
        return {"fields_total": self.fields_total, **self.estimates, "fields_done": self.fields_done,
                "products": self.products, "bytes": self.bytes, "pairs_done": self.pairs, "rate": round(self.rate(), 2),
                "empty_fields": self.empty_fields, "empty_count": self.empty_count, "warnings": self.warnings,
                **({"remote_fetched": self.fetched, "remote_cached": self.cached} if self.fetched + self.cached
                   else {})}


class Scheduler:
    """Runs the jobs it claims from the store on a `TaskPool`."""

    def __init__(self, service: JobService, index: ArchiveIndex, pool: TaskPool, max_jobs: int,
                 runners: Runners, policy: str = "fair", remotes: RemoteCatalog | None = None) -> None:
        self.service = service
        self.remotes = remotes
        #: per remote collection, the dispatcher of its own pool (made on first use)
        self.lanes: dict[str, Dispatcher] = {}
        self.index = index
        self.pool = pool
        self.runners = runners
        self.dispatcher = Dispatcher(pool, policy=policy)
        self.max_jobs = max_jobs
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        #: jobs claimed here, queued or running
        self._claimed: set[str] = set()
        #: jobs to stop: their output is deleted, not registered
        self._cancelled: set[str] = set()
        #: jobs another server runs now (this one was taken for dead): stopped, their output left alone
        self._lost: set[str] = set()
        #: jobs whose end the store could not record yet (its disk is full): kept until it is recorded
        self._finishing: set[str] = set()
        self._running: dict[str, asyncio.Event] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._side_tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        """Start the pool, join the servers, and start claiming and running jobs."""
        await self.pool.start()
        await self.runners.join()
        await self.runners.free_dead()  # on SQLite: every job the last server ran, at once
        await self._share()
        self.service.store.subscribe(self._changed)
        self._tasks = [asyncio.create_task(self._runner(), name=f"job-runner-{i}") for i in range(self.max_jobs)]
        self._tasks += [asyncio.create_task(self._claimer(), name="claimer"),
                        asyncio.create_task(self._heartbeats(), name="heartbeats")]

    async def close(self) -> None:
        """Stop the runners and the pool, and let this server's jobs go: another server (or the next start)
        resumes them."""
        self._cancelled.update(self._running)
        self.dispatcher.shutdown()
        for lane in self.lanes.values():
            lane.shutdown()
        await cancel_all([*self._tasks, *self._side_tasks])
        await self.pool.close()
        for lane in self.lanes.values():
            await lane.pool.close()
        with contextlib.suppress(Exception):  # a store out of reach: the lease runs out instead
            await self.runners.leave()

    def submit(self, job_id: str) -> None:
        """A job was queued: look for work now (a deferred job also gets its quote)."""
        self._wake.set()
        self._spawn(self._quote_deferred(job_id), f"quote-{job_id}")

    def cancel(self, job_id: str) -> None:
        """Stop the job here: withdraw its waiting batches, discard the running ones' output."""
        if job_id in self._claimed:
            self._cancelled.add(job_id)

    @property
    def problem(self) -> str | None:
        """Why this server cannot run jobs now (its executor is down), or None."""
        return self.pool.problem

    async def stopped(self, job_id: str, timeout: float = 30.0) -> None:
        """Wait until nothing of the job is running, here or on the server that runs it (while that one lives)."""
        event = self._running.get(job_id)
        if event is not None:
            await asyncio.wait_for(event.wait(), timeout)
            return
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            job = await self.service.store.get(job_id, fresh=True)
            if job is None or job.runner in (None, self.runners.id) or not await self.runners.alive(job.runner):
                return
            await asyncio.sleep(0.05)

    def _spawn(self, coroutine: object, name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    def _changed(self, job_id: str, what: str) -> None:
        """A change in the store: a job to claim, or one running here that may have to stop."""
        if what in (PHASE, RUNNER):
            self._wake.set()
        if job_id in self._running and what in (PHASE, RUNNER):
            self._spawn(self._check(job_id), f"check-{job_id}")

    async def _check(self, job_id: str) -> None:
        """Stop a job running here if it left EXECUTING (ABORT, DELETE, its duration) or another server has it."""
        job = await self.service.store.get(job_id)
        if job is None or job.phase != "EXECUTING":
            self.cancel(job_id)
        elif job.runner != self.runners.id:
            self._lose(job_id)

    def _lose(self, job_id: str) -> None:
        log.warning("job %s: another server runs it now; stopping here", job_id)
        self._lost.add(job_id)
        self._cancelled.add(job_id)

    async def _claimer(self) -> None:
        """Claim jobs while runners are free and the executor is up; sleep until told, or a deferred start."""
        while True:
            self._wake.clear()
            timeout = CLAIM_EVERY
            try:
                if self.problem is None:
                    free = self.max_jobs - len(self._claimed)
                    for job_id in await self.runners.claim(free):
                        self._claimed.add(job_id)
                        self._queue.put_nowait(job_id)
                start = await self.runners.next_start()
                if start is not None:
                    timeout = min(timeout, max(0.0, (start - datetime.now(UTC)).total_seconds()) + EXPIRY_MARGIN)
            except Exception as exc:  # the store out of reach: try again later
                log.warning("cannot claim jobs: %s", exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _heartbeats(self) -> None:
        """Renew this server's lease, let the jobs of dead servers go, and check the jobs running here."""
        while True:
            await asyncio.sleep(self.runners.heartbeat_every)
            try:
                if not await self.runners.heartbeat():
                    log.error("this server was taken for dead: its jobs run elsewhere now")
                    for job_id in list(self._claimed):
                        self._lose(job_id)
                    await self.runners.join()
                if await self.runners.free_dead():
                    self._wake.set()
                await self._share()
                for job_id in list(self._running):  # in case a notification was lost
                    await self._check(job_id)
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)

    async def _share(self) -> None:
        """Count the servers sharing this server's Dask cluster: its share of the cluster follows."""
        if self.runners.executor.startswith("dask://"):
            self.pool.sharing = max(1, sum(s.executor == self.runners.executor for s in await self.runners.servers()))

    async def _quote_deferred(self, job_id: str) -> None:
        job = await self.service.store.get(job_id)
        if job is not None and job.phase == "QUEUED" and job.start_after and job.start_after > datetime.now(UTC):
            await self.service.store.update(job_id, in_phases=["QUEUED"],
                                            quote=self.quote(job_id, job.info.get("cost", 0), job.start_after))

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
            finally:
                self._cancelled.discard(job_id)
                self._lost.discard(job_id)
                if job_id not in self._finishing:  # kept until its end is recorded, not claimed again meanwhile
                    await self._release(job_id)

    async def _release(self, job_id: str) -> None:
        """Let a job go (it ended, or stopped here), and look for other work."""
        self._claimed.discard(job_id)
        with contextlib.suppress(Exception):  # a store out of reach: the lease runs out instead
            await self.runners.release(job_id)
        self._wake.set()

    async def _finish(self, job_id: str, phase: str, error: str | None = None,
                      from_phases: tuple[str, ...] = ("EXECUTING",)) -> None:
        """Move the job to its final phase; while a full disk prevents even that, try again in the background."""
        try:
            await self.service.finish(job_id, phase, error and ("fatal", error), from_phases)
        except StoreFull:
            log.error("job %s: cannot record %s, the disk is full; trying every %s s", job_id, phase, RECORD_EVERY)
            self._finishing.add(job_id)
            self._spawn(self._finish_later(job_id, phase, error, from_phases), f"finish-{job_id}")
        except Exception:  # the runner must go on to the next job; this one resumes at the next start
            log.exception("job %s: cannot record %s", job_id, phase)

    async def _finish_later(self, job_id: str, phase: str, error: str | None, from_phases: tuple[str, ...]) -> None:
        while True:
            await asyncio.sleep(RECORD_EVERY)
            with contextlib.suppress(StoreFull):
                # False when the job was destroyed meanwhile
                await self.service.finish(job_id, phase, error and ("fatal", error), from_phases)
                break
        self._finishing.discard(job_id)
        await self._release(job_id)

    async def _run(self, job_id: str) -> None:
        job = await self.service.store.get(job_id, fresh=True)
        if job is None or job.runner != self.runners.id or job_id in self._cancelled:
            return  # stopped or destroyed before it ran: nothing more to stop
        done = asyncio.Event()
        self._running[job_id] = done
        try:
            if job.phase == "QUEUED":
                started = await self.service.start(job_id)
            else:  # resumed: its last server died, or this one restarted
                started = job if job.phase == "EXECUTING" else None
                if started is not None:
                    await asyncio.to_thread(self.service.files.create, job_id)
                    await asyncio.to_thread(self.service.files.remove_temporaries, job_id)
            if started is not None:
                # the job is aborted the moment its execution duration runs out, not at the reaper's next sweep
                # (a moment after: the loop's timers are in whole milliseconds and may fire a little early)
                begun = started.start_time or datetime.now(UTC)
                deadline = begun + timedelta(seconds=started.execution_duration)
                timer = asyncio.get_running_loop().call_later(
                    max(0.0, (deadline - datetime.now(UTC)).total_seconds()) + EXPIRY_MARGIN, self._expire, job_id)
                try:
                    await self._stage(started)
                finally:
                    timer.cancel()
        finally:
            del self._running[job_id]
            done.set()

    def _expire(self, job_id: str) -> None:
        self._spawn(self.service.expire(job_id), f"expire-{job_id}")

    async def _batches(self, job: Job, request: StagingRequest, progress: Progress,
                       count_empty: bool = True) -> AsyncIterator[BatchTask]:
        """The job's work, planned a chunk of fields at a time, skipping pairs already registered (empty fields are
        counted here unless a `RemotePlan` counts them, knowing the remote images too)."""
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
                if not records and count_empty:
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
                            request.grid, request.products, request.combine, request.match_background,
                            self.service.limits.max_coadd_inputs)
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
        progress = Progress(len(request.positions), **{k: job.info[k] for k in ("products", "bytes") if k in job.info},
                            estimates={k: job.info[k] for k in ESTIMATES if k in job.info})
        outstanding: dict[int, int] = {}  # field index -> batches of it still in flight
        planned_to = -1  # every field up to here has been planned
        in_flight: dict[asyncio.Future, tuple[BatchTask, int]] = {}
        # one batch until the first results are registered: planning and cutting more would
        # take CPU from that batch just when the client is waiting for its first image
        limit = 1
        plan = self._remote_plan(job, request, progress)
        batches = self._batches(job, request, progress, count_empty=plan is None)
        exhausted = plan is not None and plan.coadd  # the plan makes every product of a mosaic or stack job
        fatal: str | None = None
        #: batches lost with the executor (its scheduler died): sent again once it is back
        parked: list[BatchTask] = []

        def room(lane: str | None) -> bool:
            """Whether a batch of ``lane`` may be sent now (None: the archive's pool, within `limit`)."""
            if lane is None:
                return not parked and self.problem is None and _count(in_flight, None) < limit
            return _count(in_flight, lane) < 2 * self._lane(lane).pool.workers

        def launch(batch: BatchTask) -> None:
            self._launch(tickets, in_flight, batch, 0)
            for pair in batch.pairs:
                outstanding[pair.field_index] = outstanding.get(pair.field_index, 0) + 1

        async def refill() -> None:
            """Keep up to `limit` batches in flight while the job runs, yielding to finished ones."""
            nonlocal exhausted, planned_to
            while (not exhausted and room(None) and job.id not in self._cancelled and not fatal
                   and not any(f.done() for f in in_flight)):  # finished batches are registered first
                batch = await anext(batches, None)
                if batch is None:
                    exhausted = True
                    break
                launch(batch)
                planned_to = batch.pairs[-1].field_index - 1
            while plan is not None and job.id not in self._cancelled and not fatal:
                batch = plan.take(room)
                if batch is None:
                    break
                launch(batch)

        ticket = self.dispatcher.open(job.id, job.owner, max(0, job.info.get("cost", 0) - progress.pairs))
        tickets: dict[str | None, Ticket] = {None: ticket}
        try:
            await refill()  # the first batches go out before anything is written
            await self.service.store.update(job.id, quote=self.quote(job.id, ticket.remaining))
            while True:
                await refill()
                if job.id in self._cancelled or fatal:
                    self._withdraw(tickets, in_flight, outstanding)
                    self._let_go(job.id, in_flight, outstanding)
                    for batch in parked:
                        _release(outstanding, batch)
                    parked.clear()
                    if plan is not None:
                        await plan.close()
                if parked and not in_flight and await self._executor_back(job.id):
                    for batch in parked:
                        self._launch(tickets, in_flight, batch, 0)
                    parked.clear()
                    continue
                if not in_flight:
                    if plan is None or plan.done or job.id in self._cancelled or fatal:
                        break
                    if plan.ready and self.problem is not None:  # the plan's next batches are for the executor
                        await self._executor_back(job.id)
                    else:
                        await plan.changed()
                    continue
                waiter = asyncio.ensure_future(plan.changed()) if plan is not None and not plan.finished else None
                finished, _ = await asyncio.wait([*in_flight, *filter(None, [waiter])],
                                                 return_when=asyncio.FIRST_COMPLETED)
                if waiter is not None:
                    waiter.cancel()
                    finished.discard(waiter)
                completed: list[tuple[BatchTask, list[PairOutcome]]] = []
                for future in finished:
                    batch, attempt = in_flight.pop(future)
                    try:
                        completed.append((batch, future.result()))
                    except ExecutorDown:
                        parked.append(batch)
                    except LostTask:
                        if attempt < RETRIES and job.id not in self._cancelled:
                            self._launch(tickets, in_flight, batch, attempt + 1)
                            continue
                        fatal = fatal or "a worker died repeatedly on this job's data"
                        completed.append((batch, []))
                if limit > 1 and _count(in_flight, None) < self.pool.workers:
                    await refill()  # workers would otherwise wait while the store is written
                for batch, _ in completed:
                    _release(outstanding, batch)
                fatal = await self._register(job.id, completed, progress) or fatal
                limit = 4 * self.pool.workers
                if exhausted:
                    planned_to = len(request.positions) - 1
                progress.fields_done = min(min(outstanding) if outstanding else planned_to + 1,
                                           plan.first_pending if plan is not None else len(request.positions))
                await self._write_progress(job.id, progress, ticket)
        finally:
            for lane, lane_ticket in tickets.items():
                (self.dispatcher if lane is None else self.lanes[lane]).close(lane_ticket)
            await batches.aclose()
            if plan is not None:
                await plan.close()
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

    async def _executor_back(self, job_id: str) -> bool:
        """Wait until the executor is back (True), or the job is stopped meanwhile (False)."""
        if self.problem is not None:
            log.warning("job %s waits for the executor: %s", job_id, self.problem)
        while self.problem is not None and job_id not in self._cancelled:
            await asyncio.sleep(EXECUTOR_CHECK)
        return job_id not in self._cancelled

    def _remote_plan(self, job: Job, request: StagingRequest, progress: Progress) -> RemotePlan | None:
        """The background plan of the job's remote collections; None when it names none (or is a SODA job)."""
        remotes = self.remotes.among(request.collections) if self.remotes and not request.ids else []
        if not remotes:
            return None
        return RemotePlan(job_id=job.id, request=request, remotes=remotes, catalog=self.remotes, index=self.index,
                          store=self.service.store, results_root=str(self.service.files.root),
                          results_path=f"{job_path(job.id)}/results/", progress=progress,
                          finest_arcsec=self.service.limits.finest_scale_deg * 3600)

    def _lane(self, name: str) -> Dispatcher:
        """The dispatcher of a remote collection's own pool: its ``concurrency`` worker processes."""
        lane = self.lanes.get(name)
        if lane is None:
            workers = self.remotes.specs[name].concurrency
            lane = self.lanes[name] = Dispatcher(LocalPool(workers, terminate=True), slots=workers)
        return lane

    def _launch(self, tickets: dict[str | None, Ticket], in_flight: dict, batch: BatchTask, attempt: int) -> None:
        lane = batch.lane
        dispatcher = self.dispatcher if lane is None else self._lane(lane)
        if lane not in tickets:
            first = tickets[None]
            tickets[lane] = dispatcher.open(first.job_id, first.owner, 0)
        in_flight[dispatcher.submit(tickets[lane], batch)] = (batch, attempt)

    def _withdraw(self, tickets: dict[str | None, Ticket], in_flight: dict, outstanding: dict[int, int]) -> None:
        for future, (batch, _) in list(in_flight.items()):
            lane = batch.lane
            if (self.dispatcher if lane is None else self.lanes[lane]).withdraw(tickets[lane], future):
                del in_flight[future]
                _release(outstanding, batch)

    def _let_go(self, job_id: str, in_flight: dict, outstanding: dict[int, int]) -> None:
        """Stop waiting for the stopped job's remote batches still running (a download may take minutes): their
        files are deleted when they return, unless another server runs the job now."""
        lost = job_id in self._lost
        for future, (batch, _) in list(in_flight.items()):
            if batch.lane is not None:
                del in_flight[future]
                _release(outstanding, batch)
                if not lost:
                    self._spawn(self._discard(job_id, future), f"discard-{job_id}")

    async def _discard(self, job_id: str, future: asyncio.Future) -> None:
        with contextlib.suppress(Exception):
            outcomes = await future
            written = [name for o in outcomes for name, _, _ in o.products]
            await asyncio.to_thread(_delete_files, self.service.files, job_id, written)

    async def _register(self, job_id: str, completed: list[tuple[BatchTask, list[PairOutcome]]],
                        progress: Progress) -> str | None:
        """Register finished batches in one transaction (or delete their files if the job stopped).

        Returns the first fatal message among them, if any.
        """
        outcomes = [o for _, batch_outcomes in completed for o in batch_outcomes]
        written = [name for o in outcomes for name, *_ in o.products]
        if job_id in self._lost:  # another server runs the job now, and makes (or made) the same files
            return None
        if job_id in self._cancelled:
            await asyncio.to_thread(_delete_files, self.service.files, job_id, written)
            return None
        products = [Product(name, size, mime, {"field": o.field_index, "image": o.image_id, "sha256": digest})
                    for o in outcomes for name, size, mime, digest in o.products]
        rows = [TableRow(o.field_index, o.image_id, name, row) for o in outcomes for name, row in o.rows]
        if products or rows:
            try:
                await self.service.store.register(job_id, products, rows, runner=self.runners.id)
            except StoreFull:  # unregistered files would be orphans; deleting them frees room to record the error
                await asyncio.to_thread(_delete_files, self.service.files, job_id, written)
                return "cannot register results: the disk is full"
            except NotRunning:  # stopped (ABORT, DELETE, its duration) or taken over since the batch started
                await self._check(job_id)
                if job_id not in self._lost:
                    self.cancel(job_id)
                    await asyncio.to_thread(_delete_files, self.service.files, job_id, written)
                return None
        progress.record(len(products), sum(p.size for p in products))
        progress.pairs += sum(o.pairs for o in outcomes if o.problem is None)
        progress.fetched += sum(o.fetched for o in outcomes)
        progress.cached += sum(o.cached for o in outcomes)
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
        if job_id in self._lost:  # the progress is the other server's to write now
            return
        if force or now - progress._written >= PROGRESS_EVERY:
            progress._written = now
            quote = {"quote": self.quote(job_id, ticket.remaining)} if ticket is not None else {}
            try:
                await self.service.store.update(job_id, info=progress.as_info(), **quote)
            except StoreFull:  # progress is advisory: the next write, or the job's end, says more
                log.warning("job %s: progress not recorded: the disk is full", job_id)


def _count(in_flight: dict, lane: str | None) -> int:
    """Batches of a lane in flight (None: the archive's pool)."""
    return sum(1 for batch, _ in in_flight.values() if batch.lane == lane)


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
