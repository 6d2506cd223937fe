"""The job store: UWS jobs and their results in SQL (SQLAlchemy 2 async).

SQLite through aiosqlite is the default; only portable constructs are used, so a
PostgreSQL URL (asyncpg) needs no other code. Every phase change is a
compare-and-set (`JobStore.transition`): an UPDATE guarded by the phases it may
leave, so concurrent abort, completion and destruction can never interleave into
an impossible history. The tables are in `storage.schema`; `JobStore.open` migrates
a store to them (`storage.migrate`).

**Versions.** Every change to a job or to its results bumps the job's ``version``
(`Job.version`), in the same statement as the change: a transition, an update, a
registration of results (which also moves `Job.last_seq`, the newest result's number),
a claim or release by a server. Two reads of a job with the same version show the same
job and the same results, so the version is an exact, cheap validator for caches of
anything derived from a job (rendered documents, ETags).

**Several servers.** Each change is announced to the subscribers of this store
(`JobStore.subscribe`) once committed, and on PostgreSQL to every other server too
(``NOTIFY`` in the same transaction, delivered at commit; `storage.notify`). Job rows
are cached in memory: a SQLite store belongs to one server process (the state
directory's lock sees to it: `storage.guard`), so there every change goes through this
object and the cache is kept write-through; on a shared (PostgreSQL) store, a cached
row is served only after a one-column read of its version agrees.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager, closing, nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec
from sqlalchemy import Table, delete, event, func, insert, select, text, true, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from storage.migrate import upgrade
from storage.schema import JobRow, ResultRow, TableRowRow, UploadRow, UTCDateTime

#: the channel of change notifications on PostgreSQL
CHANNEL = "siasync_jobs"
#: what a change notification says changed: the phase (or the job is gone), its results, other fields,
#: or its runner (claimed or let go)
PHASE, RESULTS, UPDATED, RUNNER = "phase", "results", "updated", "runner"
#: the first key of the advisory locks that make a check and a write atomic per owner (PostgreSQL)
_OWNER_LOCK = 0x5A5A

@dataclass(frozen=True)
class Product:
    """A file to register: its result id (also its file name), size and type."""

    result_id: str
    size: int
    mime_type: str
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TableRow:
    """A row of a job's table: the (field, image) pair it describes and its <TR>."""

    field: int
    image_id: str
    result_id: str | None
    row: str


@dataclass(frozen=True)
class Job:
    """A job as stored."""

    id: str
    owner: str
    run_id: str | None
    phase: str
    creation_time: datetime
    start_time: datetime | None
    end_time: datetime | None
    execution_duration: int
    destruction: datetime
    quote: datetime | None
    start_after: datetime | None
    error_type: str | None
    error_message: str | None
    #: the parameters as posted: [name, value] pairs in order
    parameters: list
    #: the validated, normalised parameters (plain JSON)
    spec: dict
    #: progress and other service facts shown in jobInfo
    info: dict = field(default_factory=dict)
    #: bumped by every change to the job or its results
    version: int = 1
    #: the sequence number of the job's newest result (0 for none)
    last_seq: int = 0
    #: the server running the job, or None
    runner: str | None = None


#: the progress figures a job list shows, from `Job.info`
_SUMMARY = ("fields_done", "fields_total", "products", "bytes")


@dataclass(frozen=True)
class JobSummary:
    """What a job list shows of a job: its id, owner, label, phase, creation and progress (`_SUMMARY`)."""

    id: str
    owner: str
    run_id: str | None
    phase: str
    creation_time: datetime
    #: the progress figures of `Job.info` a list shows (each 0 when the job has none yet)
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Result:
    """One staged result of a job."""

    seq: int
    result_id: str
    #: path relative to the job's result directory
    path: str
    size: int
    mime_type: str
    meta: dict = field(default_factory=dict)


_JOB_FIELDS = [c.name for c in JobRow.__table__.columns]
_TIMES = [c.name for c in JobRow.__table__.columns if isinstance(c.type, UTCDateTime)]


def _json_text(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _job(row: Any) -> Job:
    return Job(**{name: getattr(row, name) for name in _JOB_FIELDS})


def _columns(item: Product | TableRow) -> dict[str, Any]:
    if isinstance(item, Product):
        return {"result_id": item.result_id, "path": item.result_id, "size": item.size, "mime_type": item.mime_type,
                "meta": item.meta}
    return {"field": item.field, "image_id": item.image_id, "result_id": item.result_id, "row": item.row}


class StoreError(RuntimeError):
    """The store cannot be used (for example, a newer schema)."""


class StoreFull(StoreError):
    """The store cannot write: its disk is full (nothing of the failed write was stored)."""


class StoreUnavailable(StoreError):
    """The database cannot be reached (a connection was refused or lost); the write, if any, did not happen."""


class ValueTooLong(ValueError):
    """A value longer than its column holds; nothing was written (every backend refuses it alike)."""

    def __init__(self, column: str, limit: int, length: int) -> None:
        super().__init__(f"{column}: {length} characters, longer than the {limit} the store holds")
        self.column, self.limit, self.length = column, limit, length


class NotRunning(StoreError):
    """Results were not registered: the job is no longer EXECUTING, or another server runs it now."""


def _disk_full(exc: BaseException) -> bool:
    """Whether a driver error says the disk is full: SQLITE_FULL, or PostgreSQL's disk_full (53100)."""
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or getattr(exc, "sqlstate", None) == "53100"


log = logging.getLogger(__name__)
W = TypeVar("W", bound=Callable[..., Any])


def whole(write: W) -> W:
    """A write (a method of a `JobStore`, or of an object with its ``store``) that runs to its end even when its
    caller is cancelled, as a server stopping cancels its tasks. Cut halfway, a SQLite transaction kept the
    database's write lock until its connection was collected, and every other write (a lease renewal, the
    server's own leave at shutdown) waited the 30 s busy timeout. `JobStore.close` waits for such writes."""

    @functools.wraps(write)
    async def to_the_end(owner: Any, *args: Any, **kwargs: Any) -> Any:
        task = asyncio.ensure_future(write(owner, *args, **kwargs))
        getattr(owner, "store", owner).track(task)
        return await asyncio.shield(task)

    return to_the_end  # type: ignore[return-value]


def _into_wal(path: str, patience_s: float = 30.0) -> None:
    """Put a SQLite database (made empty if missing) in WAL mode, once for good: the mode is kept in the file.

    Switching needs the database alone, and SQLite refuses at once, without waiting, a connection that read it
    while another writes (several servers starting together on a new store, one of them migrating it); so this
    tries again until ``patience_s`` has passed."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            with closing(sqlite3.connect(path, timeout=patience_s)) as db:
                if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    db.execute("PRAGMA journal_mode=WAL")
                return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def check_lengths(table: Table, values: dict[str, Any]) -> None:
    """Refuse a text value longer than its column (SQLite would store it, PostgreSQL fail on it)."""
    for name, value in values.items():
        column = table.columns.get(name)
        limit = getattr(column.type, "length", None) if column is not None else None
        if limit and isinstance(value, str) and len(value) > limit:
            raise ValueTooLong(f"{table.name}.{name}", limit, len(value))


#: the phases of a job that is not finished: what an owner's limits count
UNFINISHED = ("PENDING", "QUEUED", "EXECUTING", "HELD", "SUSPENDED")


@dataclass(frozen=True)
class Usage:
    """What an owner holds: unfinished jobs (`UNFINISHED`), their fields and estimated output bytes (``fields_total``
    and ``output_bytes`` of `Job.info`), and the bytes of the tables uploaded with all their stored jobs."""

    jobs: int = 0
    fields: int = 0
    output_bytes: int = 0
    upload_bytes: int = 0


#: ``admit(usage)``: called with what the owner holds (the job being admitted left out), inside the transaction
#: that stores, queues or changes a job; it raises to refuse (nothing is then written)
Admission = Callable[[Usage], None]


class JobStore:
    """Async access to jobs and results (see the module's docstring for versions and caching).

    ``exclusive``: this object is the store's only writer (a SQLite store, guarded), so cached
    rows are trusted; otherwise they are checked against the stored version on every read.
    ``origin``: this server's name in the notifications it sends, so that it skips its own.
    """

    CACHED_JOBS = 256

    def __init__(self, engine: AsyncEngine, exclusive: bool, origin: str = "") -> None:
        self.engine = engine
        self.exclusive = exclusive
        self.origin = origin
        self.postgres = engine.dialect.name == "postgresql"
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._subscribers: list[Callable[[str, str], None]] = []
        #: writes so far; a row read from the database is cached only if no write came meanwhile
        self._writes = 0
        self._owner_locks: dict[str, asyncio.Lock] = {}
        #: writes running on for a caller that was cancelled (`whole`)
        self._writing_on: set[asyncio.Future] = set()

    @classmethod
    async def open(cls, url: str, origin: str = "") -> JobStore:
        """Connect and migrate the store to this siasync's schema (under a lock: `storage.migrate`)."""
        sqlite = url.startswith("sqlite")
        # msgspec: a 10,000-position spec encodes in 1 ms instead of json's 24 ms, and decodes 5x faster
        engine = create_async_engine(url, json_serializer=_json_text, json_deserializer=msgspec.json.decode,
                                     **({"connect_args": {"timeout": 30}} if sqlite else {"pool_size": 10}))

        @event.listens_for(engine.sync_engine, "handle_error")
        def _translate(context: Any) -> None:
            if _disk_full(context.original_exception):
                raise StoreFull("the job store's disk is full") from context.original_exception
            if context.is_disconnect or isinstance(context.original_exception, ConnectionError):
                raise StoreUnavailable(f"the database cannot be reached: {context.original_exception}") \
                    from context.original_exception

        if sqlite:
            if engine.url.database not in (None, "", ":memory:"):
                await asyncio.to_thread(_into_wal, engine.url.database)

            @event.listens_for(engine.sync_engine, "connect")
            def _pragmas(dbapi_connection: Any, _record: Any) -> None:
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA journal_mode")
                if cursor.fetchone()[0].lower() != "wal":  # (a memory database)
                    cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()

        try:
            async with engine.connect() as conn:
                await conn.run_sync(upgrade)
        except Exception:
            await engine.dispose()
            raise
        return cls(engine, exclusive=sqlite, origin=origin)

    async def close(self) -> None:
        """Let the writes in flight end, then release the connections."""
        await asyncio.gather(*self._writing_on, return_exceptions=True)
        await self.engine.dispose()

    def track(self, write: asyncio.Future) -> None:
        """Keep a write in flight (`whole`) until it ends; its failure, when its caller was cancelled, is logged
        rather than left unretrieved."""
        self._writing_on.add(write)
        write.add_done_callback(self._written)

    def _written(self, write: asyncio.Future) -> None:
        self._writing_on.discard(write)
        if not write.cancelled() and (exc := write.exception()) is not None and not isinstance(exc, StoreError):
            log.warning("a write whose caller had stopped failed: %r", exc)

    # -- notifications and the cache ------------------------------------------------------

    def subscribe(self, callback: Callable[[str, str], None]) -> None:
        """Call ``callback(job_id, what)`` after each change committed (``what``: `PHASE`, `RESULTS`, ...)."""
        self._subscribers.append(callback)

    def announce(self, job_id: str, what: str) -> None:
        """Tell the subscribers of a change (this process's, and those of a `storage.notify.Listener`)."""
        for callback in self._subscribers:
            callback(job_id, what)

    async def _notify(self, s: AsyncSession, job_id: str, what: str) -> None:
        """Within a write's transaction: announce the change to the other servers when it commits."""
        if self.postgres:
            await s.execute(select(func.pg_notify(CHANNEL, f"{self.origin} {job_id} {what}")))

    @asynccontextmanager
    async def _writing(self, job_id: str, what: str) -> AsyncIterator[AsyncSession]:
        """A write transaction about a job, announced once committed (also when the write changed nothing)."""
        async with self.sessions.begin() as s:
            yield s
            await self._notify(s, job_id, what)
        self._writes += 1
        self.announce(job_id, what)

    def _cache(self, job: Job) -> None:
        """Keep the job as the database holds it: times in UTC."""
        self._jobs[job.id] = replace(job, **{name: getattr(job, name).astimezone(UTC) for name in _TIMES
                                            if getattr(job, name) is not None})
        self._jobs.move_to_end(job.id)
        while len(self._jobs) > self.CACHED_JOBS:
            self._jobs.popitem(last=False)

    def _follow(self, job_id: str, version: int | None, changes: dict[str, Any]) -> None:
        """Apply a write that made ``version`` (None: it changed nothing) to the cached row, when that was the one
        just before; otherwise forget the row."""
        cached = self._jobs.get(job_id)
        if cached is None or version is None:
            return
        if cached.version == version - 1:
            self._cache(replace(cached, **changes, version=version))
        else:
            del self._jobs[job_id]

    def forget(self, job_id: str) -> None:
        """Drop a cached row (another server changed it)."""
        self._jobs.pop(job_id, None)

    # -- jobs -----------------------------------------------------------------------------

    def _owner_lock(self, owner: str, admit: Admission | None) -> Any:
        """Held around an admission and its write: a SQLite store has one writer process, whose concurrent
        requests this orders (on PostgreSQL, `_admit` takes a lock in the database that every server sees)."""
        return self._owner_locks.setdefault(owner, asyncio.Lock()) if admit and self.exclusive else nullcontext()

    async def _admit(self, s: AsyncSession, owner: str, admit: Admission | None, exclude: str | None = None) -> None:
        """Run ``admit`` on what the owner holds (without job ``exclude``), in the transaction of the write it
        admits."""
        if admit is None:
            return
        if self.postgres:  # held until the transaction ends: the other servers' admissions wait for it
            await s.execute(select(func.pg_advisory_xact_lock(_OWNER_LOCK, func.hashtext(owner))))
        others = JobRow.id != exclude if exclude is not None else true()
        query = (select(JobRow.info["fields_total"].as_float(), JobRow.info["output_bytes"].as_float())
                 .where(JobRow.owner == owner, JobRow.phase.in_(UNFINISHED), others))
        jobs = (await s.execute(query)).all()
        # the length of a blob is read from its record's header (SQLite) or its TOAST pointer (PostgreSQL)
        uploads = (select(func.coalesce(func.sum(func.length(UploadRow.data)), 0))
                   .join(JobRow, JobRow.id == UploadRow.job_id).where(JobRow.owner == owner, others))
        admit(Usage(len(jobs), sum(int(f or 0) for f, _ in jobs), sum(int(b or 0) for _, b in jobs),
                    int((await s.execute(uploads)).scalar_one())))

    @whole
    async def create(self, job: Job, uploads: Iterable[tuple[str, str, bytes]] = (),
                     admit: Admission | None = None) -> None:
        """Insert a new job, with the tables it uploaded: (name, MIME type, bytes).

        ``admit``: checked against what the owner holds, in the same transaction.
        """
        values = {name: getattr(job, name) for name in _JOB_FIELDS}
        check_lengths(JobRow.__table__, values)
        uploads = list(uploads)
        for name, mime_type, _ in uploads:
            check_lengths(UploadRow.__table__, {"name": name, "mime_type": mime_type})
        async with self._owner_lock(job.owner, admit), self._writing(job.id, PHASE) as s:
            await self._admit(s, job.owner, admit)
            await s.execute(insert(JobRow).values(**values))
            for name, mime_type, data in uploads:
                await s.execute(insert(UploadRow).values(job_id=job.id, name=name, mime_type=mime_type, data=data))
        self._cache(job)  # a new job is read at once, and a big one is costly to decode

    async def get(self, job_id: str, fresh: bool = False) -> Job | None:
        """The job, or None.

        ``fresh``: read the whole row even when it is cached (a compare-and-set has failed, and
        the caller must know which phase made it fail).
        """
        job = None if fresh else self._jobs.get(job_id)
        if job is not None:
            if not self.exclusive:
                async with self.sessions() as s:
                    version = (await s.execute(select(JobRow.version).where(JobRow.id == job_id))).scalar()
                if version != job.version:
                    self._jobs.pop(job_id, None)
                    return await self.get(job_id, fresh=True) if version is not None else None
            if job_id in self._jobs:  # (a change may have dropped it while the version was read)
                self._jobs.move_to_end(job_id)
            return job
        writes = self._writes
        async with self.sessions() as s:
            row = (await s.execute(select(JobRow).where(JobRow.id == job_id))).scalar_one_or_none()
        if row is None:
            self._jobs.pop(job_id, None)
            return None
        job = _job(row)
        if self._writes == writes or not self.exclusive:
            self._cache(job)
        return job

    async def list(self, owner: str | None, phases: Iterable[str] | None = None, after: datetime | None = None,
                   last: int | None = None, id_prefix: str | None = None,
                   exclude_prefix: str | None = None) -> list[JobSummary]:
        """Jobs newest first, filtered by owner (None: all), phase, creation time, and the start of their ids
        (``id_prefix``: only ids starting so; ``exclude_prefix``: none of them).

        Only what a job list shows is read (`JobSummary`): never a job's positions or parameters, which
        for a big job are megabytes to decode.
        """
        info = JobRow.info
        query = (select(JobRow.id, JobRow.owner, JobRow.run_id, JobRow.phase, JobRow.creation_time,
                        *(info[key].as_float() for key in _SUMMARY))
                 .order_by(JobRow.creation_time.desc(), JobRow.id.desc()))
        if id_prefix is not None:
            query = query.where(JobRow.id.startswith(id_prefix, autoescape=True))
        if exclude_prefix is not None:
            query = query.where(~JobRow.id.startswith(exclude_prefix, autoescape=True))
        if owner is not None:
            query = query.where(JobRow.owner == owner)
        if phases is not None:
            query = query.where(JobRow.phase.in_(list(phases)))
        if after is not None:
            query = query.where(JobRow.creation_time > after)
        if last is not None:
            query = query.limit(last)
        async with self.sessions() as s:
            return [JobSummary(*row[:5], {key: int(v or 0) for key, v in zip(_SUMMARY, row[5:], strict=True)})
                    for row in (await s.execute(query)).all()]

    async def transition(self, job_id: str, from_phases: Sequence[str], to_phase: str, *,
                         admit: Admission | None = None, owner: str = "", **changes: Any) -> bool:
        """Compare-and-set: move the job to ``to_phase`` only if it is in ``from_phases``.

        ``admit`` (with the job's ``owner``): checked against what the owner holds, in the same transaction.
        """
        return await self.update_where(job_id, PHASE, {"phase": to_phase, **changes},
                                  JobRow.phase.in_(list(from_phases)), admit, owner)

    async def update(self, job_id: str, *, in_phases: Sequence[str] | None = None, admit: Admission | None = None,
                     owner: str = "", uploads: Iterable[tuple[str, str, bytes]] | None = None,
                     **changes: Any) -> bool:
        """Change fields of a job (only while in ``in_phases``, when given).

        ``admit`` (with the job's ``owner``): checked against what the owner holds, in the same transaction;
        ``uploads``: the job's new tables, replacing those it had, in the same transaction.
        """
        guard = JobRow.phase.in_(list(in_phases)) if in_phases is not None else None
        return await self.update_where(job_id, UPDATED, changes, guard, admit, owner, uploads)

    @whole
    async def update_where(self, job_id: str, what: str, changes: dict[str, Any], guard: Any = None,
                           admit: Admission | None = None, owner: str = "",
                           uploads: Iterable[tuple[str, str, bytes]] | None = None) -> bool:
        """One UPDATE of a job, guarded by the condition ``guard``, that bumps its version and is announced as
        ``what``; whether it changed the row. ``admit`` and ``uploads``: as in `update`."""
        check_lengths(JobRow.__table__, changes)
        uploads = list(uploads) if uploads is not None else None
        for name, mime_type, _ in uploads or ():
            check_lengths(UploadRow.__table__, {"name": name, "mime_type": mime_type})
        query = update(JobRow).where(JobRow.id == job_id)
        if guard is not None:
            query = query.where(guard)
        query = query.values(**changes, version=JobRow.version + 1).returning(JobRow.version)
        async with self._owner_lock(owner, admit), self._writing(job_id, what) as s:
            await self._admit(s, owner, admit, exclude=job_id)
            version = (await s.execute(query)).scalar()
            if version is not None and uploads is not None:
                await s.execute(delete(UploadRow).where(UploadRow.job_id == job_id))
                for name, mime_type, data in uploads:
                    await s.execute(insert(UploadRow).values(job_id=job_id, name=name, mime_type=mime_type,
                                                             data=data))
        self._follow(job_id, version, changes)
        return version is not None

    @whole
    async def delete(self, job_id: str) -> bool:
        """Forget a job and its results."""
        async with self._writing(job_id, PHASE) as s:
            await s.execute(delete(ResultRow).where(ResultRow.job_id == job_id))
            await s.execute(delete(TableRowRow).where(TableRowRow.job_id == job_id))
            await s.execute(delete(UploadRow).where(UploadRow.job_id == job_id))
            deleted = (await s.execute(delete(JobRow).where(JobRow.id == job_id))).rowcount == 1
        self._jobs.pop(job_id, None)
        return deleted

    async def uploads(self, job_id: str, name: str | None = None) -> list[tuple[str, str, bytes]]:
        """The job's uploaded tables (or only the one called ``name``): (name, MIME type, bytes)."""
        query = select(UploadRow.name, UploadRow.mime_type, UploadRow.data).where(UploadRow.job_id == job_id)
        if name is not None:
            query = query.where(UploadRow.name == name)
        async with self.sessions() as s:
            return [tuple(row) for row in (await s.execute(query.order_by(UploadRow.name))).all()]

    async def ids_where(self, *, phases: Iterable[str] | None = None,
                        destroy_before: datetime | None = None) -> list[str]:
        """Ids of jobs in some phases, or due for destruction before an instant."""
        query = select(JobRow.id)
        if phases is not None:
            query = query.where(JobRow.phase.in_(list(phases)))
        if destroy_before is not None:
            query = query.where(JobRow.destruction <= destroy_before)
        async with self.sessions() as s:
            return list((await s.execute(query.order_by(JobRow.creation_time))).scalars())

    # -- results --------------------------------------------------------------------------

    @whole
    async def register(self, job_id: str, products: Sequence[Product], rows: Sequence[TableRow],
                       runner: str | None = None) -> None:
        """Append results and table rows in one transaction: both lists grow together or not at all.

        Only while the job is EXECUTING (and, with ``runner``, run by that server): the same
        statement checks that, bumps the job's version and takes the next sequence numbers, and
        it locks the job's row until the commit, so an ABORT or DELETE either comes before (and
        nothing is registered) or waits for the registration. Rows are inserted with one
        executemany per table.

        Raises
        ------
        NotRunning
            When the job is not EXECUTING (or another server runs it): nothing was registered.
        IntegrityError
            When the job already has a result with one of these ids.
        """
        guard = update(JobRow).where(JobRow.id == job_id, JobRow.phase == "EXECUTING")
        if runner is not None:
            guard = guard.where(JobRow.runner == runner)
        guard = guard.values(version=JobRow.version + 1, last_seq=JobRow.last_seq + len(products)).returning(
            JobRow.version, JobRow.last_seq)
        async with self._writing(job_id, RESULTS) as s:
            moved = (await s.execute(guard)).one_or_none()
            if moved is None:
                raise NotRunning(f"job {job_id} is not executing here: nothing registered")
            version, last = moved
            if products:
                await s.execute(insert(ResultRow), [{"job_id": job_id, "seq": last - len(products) + i,
                                                     **_columns(p)} for i, p in enumerate(products, 1)])
            if rows:
                first = (await s.execute(select(func.coalesce(func.max(TableRowRow.seq), 0))
                                         .where(TableRowRow.job_id == job_id))).scalar_one()
                await s.execute(insert(TableRowRow), [{"job_id": job_id, "seq": first + i, **_columns(r)}
                                                      for i, r in enumerate(rows, 1)])
        self._follow(job_id, version, {"last_seq": last})

    async def done_pairs(self, job_id: str, first_field: int, last_field: int) -> set[tuple[int, str]]:
        """The (field, image) pairs of some fields that already have their table rows."""
        query = (select(TableRowRow.field, TableRowRow.image_id).distinct()
                 .where(TableRowRow.job_id == job_id, TableRowRow.field >= first_field,
                        TableRowRow.field <= last_field))
        async with self.sessions() as s:
            return {(f, i) for f, i in (await s.execute(query)).all()}

    async def table_rows(self, job_id: str, after: int = 0, limit: int = 2000,
                         upto: int | None = None) -> list[tuple[int, str]]:
        """(seq, row) of a job's table rows after ``after`` (and up to ``upto``, when given), in order."""
        query = (select(TableRowRow.seq, TableRowRow.row).where(TableRowRow.job_id == job_id, TableRowRow.seq > after)
                 .order_by(TableRowRow.seq).limit(limit))
        if upto is not None:
            query = query.where(TableRowRow.seq <= upto)
        async with self.sessions() as s:
            return [(seq, row) for seq, row in (await s.execute(query)).all()]

    async def last_table_seq(self, job_id: str) -> int:
        """The sequence number of the job's newest table row (0 for none)."""
        query = select(func.coalesce(func.max(TableRowRow.seq), 0)).where(TableRowRow.job_id == job_id)
        async with self.sessions() as s:
            return (await s.execute(query)).scalar_one()

    async def results(self, job_id: str, after: int = 0, limit: int | None = None) -> list[Result]:
        """A job's results with sequence numbers above ``after``, in registration order.

        Plain rows, not ORM objects: a job may have tens of thousands.
        """
        t = ResultRow.__table__.c
        query = (select(t.seq, t.result_id, t.path, t.size, t.mime_type, t.meta)
                 .where(t.job_id == job_id, t.seq > after).order_by(t.seq).limit(limit))
        async with self.sessions() as s:
            return [Result(*row) for row in (await s.execute(query)).all()]

    async def result(self, job_id: str, result_id: str) -> Result | None:
        """One result by id, or None."""
        query = select(ResultRow).where(ResultRow.job_id == job_id, ResultRow.result_id == result_id)
        async with self.sessions() as s:
            r = (await s.execute(query)).scalar_one_or_none()
        return None if r is None else Result(r.seq, r.result_id, r.path, r.size, r.mime_type, r.meta)

    async def ping(self) -> None:
        """One round trip to the database (raises when it cannot be reached)."""
        async with self.sessions() as s:
            await s.execute(text("SELECT 1"))
