"""The job service: UWS phases, compare-and-set transitions, ownership and WAIT.

HTTP handlers call one method each; the executor and the reaper call the
``start``/``finish``/``reap`` side. Every phase change goes through
`storage.jobs.JobStore.transition`, guarded by the phases it may leave.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from cutout.index import ArchiveIndex
from siasync.cpu import CpuPool
from siasync.errors import NotFound, PermissionDenied, Unavailable, UsageError
from siasync.uws.documents import JobDocuments
from siasync.uws.params import (
    JOB_PARAMETERS,
    JobControl,
    Limits,
    RawParams,
    StagingRequest,
    clamp_destruction,
    clamp_duration,
    parse_choice,
    parse_int,
    parse_job,
    parse_time,
)
from siasync.uws.quotas import admission, check_job, estimate
from siasync.uws.representations import SODA_PREFIX
from siasync.uws.uploads import Upload, resolve
from siasync.vo.soda import JOB_PARAMETERS as SODA_PARAMETERS
from siasync.vocabulary import PHASES
from storage.files import ResultFiles
from storage.jobs import PHASE, RESULTS, UPDATED, Job, JobStore, Result, Usage

log = logging.getLogger(__name__)
#: phases in which WAIT blocks (UWS 1.1, 2.2.1.1)
ACTIVE = ("PENDING", "QUEUED", "EXECUTING", "HELD", "SUSPENDED")
#: phases from which PHASE=RUN is accepted
RUNNABLE = ("PENDING", "HELD")
#: phases from which PHASE=ABORT is accepted
ABORTABLE = ("PENDING", "QUEUED", "EXECUTING", "HELD", "SUSPENDED")
#: parameter values beyond which a job's parameters are parsed in the CPU pool
BIG_INPUT = 1000
#: fields of a job whose estimate is made on the event loop (a lookup in the index each, about 0.4 ms)
INLINE_ESTIMATE = 4
#: the largest integer a query may carry (SQLite's and PostgreSQL's BIGINT)
_LARGEST_INTEGER = 2**63 - 1


class Executor(Protocol):
    """What the job service needs from whatever runs jobs."""

    def submit(self, job_id: str) -> None:
        """Start (or queue) a QUEUED job."""

    def cancel(self, job_id: str) -> None:
        """Ask a job's running work to stop."""

    async def stopped(self, job_id: str, timeout: float = 10.0) -> None:
        """Wait until the job's work can write nothing more."""

    @property
    def problem(self) -> str | None:
        """Why no job can run now (the executor is down), or None."""


class PhaseWatch:
    """Wakes waiters on a job (WAIT on phase changes, event streams on new results), in this process.

    The store's change notifications, this server's and the other servers' alike, reach it
    through `JobService.changed`.

    A waiter that reads the job and then waits must `arm` first: a notification that comes
    while it reads (an await) then still wakes it, instead of being lost until the timeout.
    """

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def notify(self, job_id: str) -> None:
        """Wake every waiter on ``job_id``."""
        event = self._events.pop(job_id, None)
        if event is not None:
            event.set()

    def notify_all(self) -> None:
        """Wake every waiter (notifications may have been lost: each looks again)."""
        for job_id in list(self._events):
            self.notify(job_id)

    def arm(self, job_id: str) -> asyncio.Event:
        """The event that the next notification for ``job_id`` sets; take it before reading the job."""
        return self._events.setdefault(job_id, asyncio.Event())

    async def wait(self, job_id: str, timeout: float, armed: asyncio.Event | None = None) -> bool:
        """Return at the next notification for ``job_id`` (True), or after ``timeout`` seconds (False).

        With ``armed`` (from `arm`), a notification since arming counts: the call returns at once.
        """
        event = armed or self.arm(job_id)
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        return True


class JobService:
    """Everything a client can do to jobs, with the rules of UWS 1.1."""

    def __init__(self, store: JobStore, files: ResultFiles, limits: Limits, wait_max_s: int,
                 index: ArchiveIndex | None = None, cpu: CpuPool | None = None) -> None:
        self.store = store
        #: the sky index, for cost estimates (None: jobs get no estimate)
        self.index = index
        self.files = files
        self.limits = limits
        self.wait_max_s = wait_max_s
        self.watch = PhaseWatch()
        #: woken when a job registers new results (Server-Sent Events)
        self.results_watch = PhaseWatch()
        #: where uploads are parsed and big documents rendered, off the event loop (None: in asyncio's threads)
        self.cpu = cpu
        #: rendered job documents shared by pollers
        self.documents = JobDocuments(store, cpu)
        self.executor: Executor | None = None
        #: the parameters of a SODA job (``/soda/async``): what it stages and its UWS settings (None: no SODA jobs)
        self.soda: Callable[[RawParams], tuple[StagingRequest, JobControl]] | None = None

    def changed(self, job_id: str, what: str) -> None:
        """A change of the job in the store (`storage.jobs.JobStore.subscribe`): wake who waits on it."""
        if what == PHASE:
            self.watch.notify(job_id)
        if what in (PHASE, RESULTS, UPDATED):
            self.results_watch.notify(job_id)

    def resumed(self) -> None:
        """Notifications may have been lost (the database was out of reach): every waiter looks again."""
        self.watch.notify_all()
        self.results_watch.notify_all()

    # -- reading ------------------------------------------------------------------------

    async def get(self, job_id: str, owner: str) -> Job:
        """The job, if ``owner`` may see it."""
        job = await self.store.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        if job.owner != owner:
            raise PermissionDenied(f"job {job_id} belongs to another owner")
        return job

    async def list(self, owner: str, phases: Iterable[str] = (), after: str | None = None,
                   last: str | None = None, kind: str = "sia") -> list[Job]:
        """The owner's jobs of a kind (``sia``: ``/async``, ``soda``: ``/soda/async``), newest first;
        ARCHIVED only when asked for."""
        wanted = [parse_choice("PHASE", p, list(PHASES)) for p in phases]
        since = parse_time("AFTER", after) if after is not None else None
        count = parse_int("LAST", last) if last is not None else None
        if count is not None and count <= 0:
            raise UsageError("LAST", f"must be a positive integer, got {last!r}")
        selected = wanted or [p for p in PHASES if p != "ARCHIVED"]
        # any count beyond the database's largest integer means every job
        prefixes = {"id_prefix": SODA_PREFIX} if kind == "soda" else {"exclude_prefix": SODA_PREFIX}
        return await self.store.list(owner, selected, since, count and min(count, _LARGEST_INTEGER), **prefixes)

    async def wait(self, job_id: str, owner: str, wait: str, phase: str | None = None) -> Job:
        """UWS WAIT: block while the job is active (and in ``phase``, when given)."""
        seconds = parse_int("WAIT", wait)
        if seconds < -1:
            raise UsageError("WAIT", f"must be -1 (the longest wait) or 0 or more seconds, got {wait!r}")
        expected = parse_choice("PHASE", phase, list(PHASES)) if phase is not None else None
        timeout = self.wait_max_s if seconds == -1 else min(seconds, self.wait_max_s)
        deadline = asyncio.get_running_loop().time() + timeout
        armed = self.watch.arm(job_id)
        job = await self.get(job_id, owner)
        while job.phase in ACTIVE and (expected is None or job.phase == expected):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            await self.watch.wait(job_id, remaining, armed)
            armed = self.watch.arm(job_id)
            job = await self.get(job_id, owner)
            if expected is None or job.phase != expected:
                break
        return job

    async def result_file(self, job_id: str, owner: str, result_id: str) -> tuple[Result, Path]:
        """A result and the path of its file."""
        await self.get(job_id, owner)
        result = await self.store.result(job_id, result_id)
        if result is None:
            raise NotFound(f"job {job_id} has no result {result_id!r}")
        return result, self.files.path(job_id, result.path)

    # -- changing -----------------------------------------------------------------------

    async def create(self, owner: str, raw: RawParams, parts: Mapping[str, tuple[str, bytes]] | None = None,
                     kind: str = "sia") -> Job:
        """Validate the parameters and store a new job (queued at once with PHASE=RUN).

        ``parts`` are the request's multipart file parts, (content type, bytes) by name:
        the tables that UPLOAD values refer to, and an inline upload named UPLOAD.
        ``kind`` is ``sia`` (POS and SIZE, ``/async``) or ``soda`` (ID and regions, ``/soda/async``).
        """
        parts = parts or {}
        uploads = []
        raw = known_parameters(raw, kind)  # unknown ones are ignored (DALI): neither stored nor shown
        if kind == "soda":
            request, control = await self._parse_soda(raw)
        else:
            raw = _with_inline_upload(raw, parts)
            uploads = await resolve([v for n, v in raw if n == "UPLOAD"], parts, self.limits.upload_urls)
            request, control = await self._parse(raw, uploads)
        if control.run:
            self._check_executor()
        info = await self._sizes(request, uploads)
        # to the millisecond, as shown: AFTER compares with the times clients have seen, so a job created
        # 0.4 ms after the instant a client pages from is not "after" it
        now = datetime.now(UTC)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        job = Job(id=(SODA_PREFIX if kind == "soda" else "") + secrets.token_hex(8), owner=owner,
                  run_id=control.run_id,
                  phase="QUEUED" if control.run else "PENDING",
                  creation_time=now, start_time=None, end_time=None,
                  execution_duration=control.execution_duration, destruction=control.destruction, quote=None,
                  start_after=control.start, error_type=None, error_message=None,
                  parameters=[list(p) for p in raw if p[0] != "PHASE"], spec=request.to_spec(), info=info)
        # the owner's limits are checked in the transaction that stores the job: refused, nothing is stored
        await self.store.create(job, [u.as_row() for u in uploads], admission(self.limits, owner, _usage(info)))
        log.info("job %s created by %s: %d fields, FORMAT=%s, MODE=%s, %s", job.id, owner, len(request.positions),
                 request.format, request.mode, job.phase)
        if control.run and self.executor is not None:
            self.executor.submit(job.id)
        return job

    async def run(self, job_id: str, owner: str) -> None:
        """PHASE=RUN: PENDING (or HELD) to QUEUED, then hand the job to the executor."""
        job = await self.get(job_id, owner)
        admit = None
        if job.phase in RUNNABLE:  # otherwise refused for its phase
            self._check_executor()
            admit = admission(self.limits, owner, _usage(job.info))  # the limits may have changed since
        if not await self.store.transition(job_id, RUNNABLE, "QUEUED", owner=owner, admit=admit):
            raise await self._refused(job_id, "run")
        if self.executor is not None:
            self.executor.submit(job_id)

    async def _sizes(self, request: StagingRequest, uploads: Sequence[Upload]) -> dict[str, int]:
        """jobInfo's size of a job: its fields, its estimated cost in (field, image) pairs and in bytes, and
        the bytes of its uploaded tables; refused when the estimate is beyond the limit of one job."""
        sizes = {"fields_total": len(request.positions), "upload_bytes": sum(len(u.data) for u in uploads)}
        if self.index is not None:
            if len(request.positions) <= INLINE_ESTIMATE:  # a few lookups: less than a wait in the pool's queue
                cost = estimate(self.index, request)
            elif self.cpu is not None:
                cost = await self.cpu.run("the job's estimate", estimate, self.index, request)
            else:
                cost = await asyncio.to_thread(estimate, self.index, request)
            check_job(self.limits, cost)
            sizes.update(cost=cost.pairs, output_bytes=cost.bytes)
        return sizes

    def _check_executor(self) -> None:
        """Refuse to queue a job while the executor is down: it would wait there unseen."""
        problem = self.executor.problem if self.executor is not None else None
        if problem is not None:
            raise Unavailable(f"no job can run now: {problem}; try again later")

    async def abort(self, job_id: str, owner: str) -> None:
        """PHASE=ABORT: keep the results so far and stop."""
        await self.get(job_id, owner)
        if not await self._transition(job_id, ABORTABLE, "ABORTED", end_time=datetime.now(UTC)):
            raise await self._refused(job_id, "abort")
        if self.executor is not None:
            self.executor.cancel(job_id)

    async def destroy(self, job_id: str, owner: str | None) -> None:
        """Stop the job, delete its files and forget it (``owner`` None: the reaper)."""
        if owner is not None:
            await self.get(job_id, owner)
        await self._transition(job_id, ABORTABLE, "ABORTED", end_time=datetime.now(UTC))
        if self.executor is not None:
            self.executor.cancel(job_id)
            await self.executor.stopped(job_id)
        await self.store.delete(job_id)  # its waiters are woken by the change, and their armed events dropped
        # the directory goes at once, not after a wait for a thread: who sees the job gone finds no files either
        trash = self.files.detach(job_id)
        if trash is not None:
            await asyncio.to_thread(self.files.remove, trash)
        log.info("job %s destroyed%s", job_id, " (its destruction time came)" if owner is None else "")

    async def set_destruction(self, job_id: str, owner: str, param: str, text: str) -> None:
        """A new destruction instant, clamped to the maximum retention."""
        await self.get(job_id, owner)
        instant = clamp_destruction(parse_time(param, text), self.limits, datetime.now(UTC), param)
        await self.store.update(job_id, destruction=instant)

    async def set_execution_duration(self, job_id: str, owner: str, text: str) -> None:
        """A new execution duration (seconds), while the job has not started."""
        job = await self.get(job_id, owner)
        seconds = clamp_duration(parse_int("EXECUTIONDURATION", text), self.limits)
        if not await self.store.update(job_id, in_phases=RUNNABLE, execution_duration=seconds):
            raise PermissionDenied(f"cannot change the execution duration of job {job_id} in phase {job.phase}")

    async def set_parameters(self, job_id: str, owner: str, raw: RawParams,
                             parts: Mapping[str, tuple[str, bytes]] | None = None) -> None:
        """Replace the values of the given parameters while the job is PENDING.

        New UPLOAD values (or an inline upload) replace every table the job had.
        """
        job = await self.get(job_id, owner)
        if job.phase not in RUNNABLE:
            raise PermissionDenied(f"cannot change the parameters of job {job_id} in phase {job.phase}")
        parts = parts or {}
        raw = known_parameters(raw, "soda" if job_id.startswith(SODA_PREFIX) else "sia")
        if job_id.startswith(SODA_PREFIX):  # a SODA job's values replace those of the names given
            names = {name for name, _ in raw}
            merged = [tuple(p) for p in job.parameters if p[0] not in names] + list(raw)
            request, control = await self._parse_soda(merged)
            await self._update_parameters(job, merged, names, request, control, [])
            return
        raw = _with_inline_upload(raw, parts)
        names = {name for name, _ in raw}
        merged = [tuple(p) for p in job.parameters if p[0] not in names] + list(raw)
        if "UPLOAD" in names:
            uploads = await resolve([v for n, v in raw if n == "UPLOAD"], parts, self.limits.upload_urls)
        else:  # the tables stay: read them back in the order the job named them
            stored = {name: (mime, data) for name, mime, data in await self.store.uploads(job_id)}
            uploads = await resolve([f"{n},param:{n}" for n in (v.partition(",")[0].strip() for k, v in merged
                                                                   if k == "UPLOAD")], stored, ())
        request, control = await self._parse(merged, uploads)
        await self._update_parameters(job, merged, names, request, control, uploads, replace="UPLOAD" in names)

    async def _update_parameters(self, job: Job, merged: RawParams, names: set[str], request: StagingRequest,
                                 control: JobControl, uploads: Sequence[Upload], replace: bool = False) -> None:
        """Store a PENDING job's new parameters, spec and settings (those of ``names`` that were given), and
        with ``replace`` its new tables, within its owner's limits."""
        info = {**job.info, **await self._sizes(request, uploads)}
        updated = await self.store.update(
            job.id, in_phases=RUNNABLE, admit=admission(self.limits, job.owner, _usage(info)), owner=job.owner,
            uploads=[u.as_row() for u in uploads] if replace else None,
            parameters=[list(p) for p in merged], spec=request.to_spec(), run_id=control.run_id,
            start_after=control.start, info=info,
            **({"destruction": control.destruction} if "DESTRUCTION" in names else {}),
            **({"execution_duration": control.execution_duration} if "EXECUTIONDURATION" in names else {}))
        if not updated:
            raise PermissionDenied(f"job {job.id} left phase PENDING")

    async def _parse_soda(self, raw: RawParams) -> tuple[StagingRequest, JobControl]:
        if self.soda is None:
            raise NotFound("this service stages no SODA jobs")
        if len(raw) <= BIG_INPUT or self.cpu is None:
            return self.soda(raw)
        return await self.cpu.run("request", self.soda, raw)

    async def _parse(self, raw: RawParams, uploads: list[Upload]) -> tuple[StagingRequest, JobControl]:
        """`parse_job`, in the CPU pool when there are tables to read (or many values)."""
        if not uploads and len(raw) <= BIG_INPUT:
            return parse_job(raw, self.limits)
        if self.cpu is None:
            return await asyncio.to_thread(parse_job, raw, self.limits, None, uploads)
        return await self.cpu.run("UPLOAD" if uploads else "request", parse_job, raw, self.limits, None, uploads)

    async def upload(self, job_id: str, owner: str, name: str) -> tuple[str, bytes]:
        """An uploaded table of the job, as received: (MIME type, bytes)."""
        await self.get(job_id, owner)
        found = await self.store.uploads(job_id, name)
        if not found:
            raise NotFound(f"job {job_id} has no uploaded table {name!r}")
        return found[0][1], found[0][2]

    # -- the executor's side -------------------------------------------------------------

    async def start(self, job_id: str) -> Job | None:
        """QUEUED to EXECUTING; None when the job is no longer queued."""
        now = datetime.now(UTC)
        if not await self._transition(job_id, ("QUEUED",), "EXECUTING", start_time=now):
            return None
        await asyncio.to_thread(self.files.create, job_id)
        return await self.store.get(job_id)

    async def finish(self, job_id: str, phase: str, error: tuple[str, str] | None = None,
                     from_phases: tuple[str, ...] = ("EXECUTING",)) -> bool:
        """EXECUTING (or ``from_phases``) to COMPLETED or ERROR (``error`` is (type, message)); the job is let go
        by its runner in the same write, so that its document does not change once more after its end."""
        changes = {"end_time": datetime.now(UTC), "runner": None}
        if error is not None:
            changes.update(error_type=error[0], error_message=error[1])
        return await self._transition(job_id, from_phases, phase, **changes)

    async def reap(self, now: datetime | None = None) -> tuple[list[str], list[str]]:
        """Destroy expired jobs and abort jobs past their execution duration."""
        now = now or datetime.now(UTC)
        destroyed = await self.store.ids_where(destroy_before=now)
        for job_id in destroyed:
            await self.destroy(job_id, None)
        overdue = [job_id for job_id in await self.store.ids_where(phases=["EXECUTING"])
                   if await self.expire(job_id, now)]
        return destroyed, overdue

    async def expire(self, job_id: str, now: datetime | None = None) -> bool:
        """Abort the job if it has run past its execution duration; whether it was aborted."""
        now = now or datetime.now(UTC)
        job = await self.store.get(job_id)
        if job is None or job.start_time is None or now - job.start_time < timedelta(seconds=job.execution_duration):
            return False
        if not await self._transition(job_id, ("EXECUTING",), "ABORTED", end_time=now, error_type="fatal",
                                      error_message=f"execution duration of {job.execution_duration} s "
                                                    f"exceeded; aborted with the results made so far"):
            return False
        if self.executor is not None:
            self.executor.cancel(job_id)
        return True

    async def _refused(self, job_id: str, action: str) -> PermissionDenied:
        """Why a phase change failed: the phase the store holds now (a DELETE, ABORT or the job's end may have
        come between the caller's read and its change), or NotFound once the job is gone."""
        job = await self.store.get(job_id, fresh=True)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        return PermissionDenied(f"cannot {action} job {job_id} in phase {job.phase}")

    async def _transition(self, job_id: str, from_phases: Iterable[str], to_phase: str, **changes: object) -> bool:
        moved = await self.store.transition(job_id, tuple(from_phases), to_phase, **changes)
        if moved:
            await self._log_phase(job_id, to_phase)
        return moved

    async def _log_phase(self, job_id: str, phase: str) -> None:
        """One line per phase change: what the job made by its end, and why it stopped."""
        job = await self.store.get(job_id)
        if job is None:
            return
        info = job.info
        made = (f": {info.get('fields_done', 0)}/{info.get('fields_total', 0)} fields, {info.get('products', 0)} "
                f"products, {info.get('bytes', 0) / 1e6:.1f} MB") if phase in ("COMPLETED", "ABORTED", "ERROR") else ""
        if job.start_time is not None and job.end_time is not None and made:
            made += f" in {(job.end_time - job.start_time).total_seconds():.1f} s"
        why = f" ({job.error_message})" if phase in ("ABORTED", "ERROR") and job.error_message else ""
        log.log(logging.WARNING if phase == "ERROR" else logging.INFO, "job %s %s%s%s", job_id, phase, made, why)


def _usage(info: Mapping[str, int]) -> Usage:
    """What one job holds of its owner's limits, from its jobInfo."""
    return Usage(1, info.get("fields_total", 0), info.get("output_bytes", 0), info.get("upload_bytes", 0))


def known_parameters(raw: RawParams, kind: str) -> RawParams:
    """The parameters of a job of ``kind`` (``sia`` or ``soda``) whose names it knows, in order."""
    known = SODA_PARAMETERS if kind == "soda" else JOB_PARAMETERS
    return [(name, value) for name, value in raw if name in known]


def _with_inline_upload(raw: RawParams, parts: Mapping[str, tuple[str, bytes]]) -> RawParams:
    """The parameters, with an inline upload (a file part named UPLOAD) as ``UPLOAD=upload,param:UPLOAD``."""
    return raw + [("UPLOAD", f"upload,param:{name}") for name in parts if name.upper() == "UPLOAD"]


def staging_request(job: Job) -> StagingRequest:
    """The job's validated staging parameters."""
    return StagingRequest.from_spec(job.spec)
