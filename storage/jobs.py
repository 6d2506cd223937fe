"""The job store: UWS jobs and their results in SQL (SQLAlchemy 2 async).

SQLite through aiosqlite is the default; only portable constructs are used, so a
PostgreSQL URL (asyncpg) needs no other code. Every phase change is a
compare-and-set (`JobStore.transition`): an UPDATE guarded by the phases it may
leave, so concurrent abort, completion and destruction can never interleave into
an impossible history.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import (JSON, BigInteger, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Text,
                        TypeDecorator, UniqueConstraint, delete, event, func, insert, select, update)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: Bumped whenever the tables change; `JobStore.open` migrates older stores and refuses newer ones.
#: 1: jobs and results. 2: table_rows, the growing SIAP table of each job. 3: uploads.
SCHEMA_VERSION = 3


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the job store")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class SchemaRow(Base):
    __tablename__ = "schema_version"
    version: Mapped[int] = mapped_column(Integer, primary_key=True)


class JobRow(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255))
    run_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    phase: Mapped[str] = mapped_column(String(16))
    creation_time: Mapped[datetime] = mapped_column(UTCDateTime)
    start_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    end_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    execution_duration: Mapped[int] = mapped_column(Integer)
    destruction: Mapped[datetime] = mapped_column(UTCDateTime)
    quote: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    start_after: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    error_type: Mapped[str | None] = mapped_column(String(16), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    parameters: Mapped[list] = mapped_column(JSON)
    spec: Mapped[dict] = mapped_column(JSON)
    info: Mapped[dict] = mapped_column(JSON, default=dict)
    __table_args__ = (Index("ix_jobs_owner_created", "owner", "creation_time"),
                      Index("ix_jobs_phase", "phase"), Index("ix_jobs_destruction", "destruction"))


class ResultRow(Base):
    __tablename__ = "results"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    result_id: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(BigInteger)
    mime_type: Mapped[str] = mapped_column(String(64))
    meta: Mapped[dict] = mapped_column(JSON, default=dict)
    __table_args__ = (UniqueConstraint("job_id", "result_id", name="uq_results_job_result"),)


class UploadRow(Base):
    """A table a job's UPLOAD parameter gave, kept as received (UWS shows it by reference)."""

    __tablename__ = "uploads"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    mime_type: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)


class TableRowRow(Base):
    __tablename__ = "table_rows"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    field: Mapped[int] = mapped_column(Integer)
    image_id: Mapped[str] = mapped_column(String(255))
    result_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    #: the pre-rendered VOTable <TR>, with "{BASE}" standing for the service's base URL
    row: Mapped[str] = mapped_column(Text)
    __table_args__ = (Index("ix_table_rows_job_field", "job_id", "field"),)


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


def _disk_full(exc: BaseException) -> bool:
    """Whether a driver error says the disk is full: SQLITE_FULL, or PostgreSQL's disk_full (53100)."""
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or getattr(exc, "sqlstate", None) == "53100"


class JobStore:
    """Async access to jobs and results.

    Job rows and each job's newest result number are cached in memory, write-through:
    every change goes through this object, which drops or updates its entry, so reads
    that pollers repeat many times a second cost no query. This assumes one server
    process writes the store (several API servers on one store are not supported).
    """

    CACHED_JOBS = 256

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._session = async_sessionmaker(engine, expire_on_commit=False)
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._last_seq: dict[str, int] = {}
        #: writes so far; a value read from the database is cached only if no write came meanwhile
        self._writes = 0

    def _changed(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)
        self._last_seq.pop(job_id, None)
        self._writes += 1

    def _updated(self, job_id: str, changed: bool, changes: dict[str, Any]) -> None:
        """Apply a job row's update to its cached copy (a big job's spec is costly to read again)."""
        self._writes += 1
        cached = self._jobs.get(job_id)
        if changed and cached is not None:
            self._cache(replace(cached, **changes))

    def _cache(self, job: Job) -> None:
        """Keep the job as the database holds it: times in UTC."""
        self._jobs[job.id] = replace(job, **{name: getattr(job, name).astimezone(UTC) for name in _TIMES
                                            if getattr(job, name) is not None})
        self._jobs.move_to_end(job.id)
        while len(self._jobs) > self.CACHED_JOBS:
            self._jobs.popitem(last=False)

    @classmethod
    async def open(cls, url: str) -> JobStore:
        """Connect, create the tables when missing, and check the schema version."""
        # msgspec: a 10,000-position spec encodes in 1 ms instead of json's 24 ms, and decodes 5x faster
        engine = create_async_engine(url, json_serializer=_json_text, json_deserializer=msgspec.json.decode,
                                     **({"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {}))

        @event.listens_for(engine.sync_engine, "handle_error")
        def _full(context: Any) -> None:
            if _disk_full(context.original_exception):
                raise StoreFull("the job store's disk is full") from context.original_exception

        if url.startswith("sqlite"):

            @event.listens_for(engine.sync_engine, "connect")
            def _pragmas(dbapi_connection: Any, _record: Any) -> None:
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()

        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
            found = (await conn.execute(select(SchemaRow.version))).scalars().all()
            if not found:
                await conn.execute(insert(SchemaRow).values(version=SCHEMA_VERSION))
            elif max(found) > SCHEMA_VERSION:
                await engine.dispose()
                raise StoreError(f"the job store has schema version {max(found)}; this siasync "
                                 f"reads versions up to {SCHEMA_VERSION}")
            elif max(found) < SCHEMA_VERSION:
                # 1 -> 2 adds table_rows, 2 -> 3 uploads: create_all has just made them; older jobs have none
                await conn.execute(delete(SchemaRow))
                await conn.execute(insert(SchemaRow).values(version=SCHEMA_VERSION))
        return cls(engine)

    async def close(self) -> None:
        """Release the connections."""
        await self.engine.dispose()

    # -- jobs -----------------------------------------------------------------------------

    async def create(self, job: Job, uploads: Iterable[tuple[str, str, bytes]] = ()) -> None:
        """Insert a new job, with the tables it uploaded: (name, MIME type, bytes)."""
        async with self._session.begin() as s:
            await s.execute(insert(JobRow).values(**{name: getattr(job, name) for name in _JOB_FIELDS}))
            for name, mime_type, data in uploads:
                await s.execute(insert(UploadRow).values(job_id=job.id, name=name, mime_type=mime_type, data=data))
        self._writes += 1
        self._cache(job)  # a new job is read at once, and a big one is costly to decode

    async def get(self, job_id: str, fresh: bool = False) -> Job | None:
        """The job, or None.

        ``fresh``: read the database even when the job is cached. A change another writer has
        committed reaches the cache only when that writer resumes, so after a compare-and-set
        has failed, only a fresh read tells which phase made it fail.
        """
        job = None if fresh else self._jobs.get(job_id)
        if job is not None:
            self._jobs.move_to_end(job_id)
            return job
        writes = self._writes
        async with self._session() as s:
            row = (await s.execute(select(JobRow).where(JobRow.id == job_id))).scalar_one_or_none()
        if row is None:
            return None
        job = _job(row)
        if self._writes == writes:
            self._cache(job)
        return job

    async def list(self, owner: str | None, phases: Iterable[str] | None = None, after: datetime | None = None,
                   last: int | None = None, id_prefix: str | None = None,
                   exclude_prefix: str | None = None) -> list[Job]:
        """Jobs newest first, filtered by owner (None: all), phase, creation time, and the start of their ids
        (``id_prefix``: only ids starting so; ``exclude_prefix``: none of them)."""
        query = select(JobRow).order_by(JobRow.creation_time.desc(), JobRow.id.desc())
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
        async with self._session() as s:
            return [_job(r) for r in (await s.execute(query)).scalars()]

    async def transition(self, job_id: str, from_phases: Sequence[str], to_phase: str, **changes: Any) -> bool:
        """Compare-and-set: move the job to ``to_phase`` only if it is in ``from_phases``."""
        async with self._session.begin() as s:
            result = await s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.phase.in_(list(from_phases)))
                                     .values(phase=to_phase, **changes))
        self._updated(job_id, result.rowcount == 1, {"phase": to_phase, **changes})
        return result.rowcount == 1

    async def update(self, job_id: str, *, in_phases: Sequence[str] | None = None, **changes: Any) -> bool:
        """Change fields of a job (only while in ``in_phases``, when given)."""
        query = update(JobRow).where(JobRow.id == job_id)
        if in_phases is not None:
            query = query.where(JobRow.phase.in_(list(in_phases)))
        async with self._session.begin() as s:
            changed = (await s.execute(query.values(**changes))).rowcount == 1
        self._updated(job_id, changed, changes)
        return changed

    async def delete(self, job_id: str) -> bool:
        """Forget a job and its results."""
        async with self._session.begin() as s:
            await s.execute(delete(ResultRow).where(ResultRow.job_id == job_id))
            await s.execute(delete(TableRowRow).where(TableRowRow.job_id == job_id))
            await s.execute(delete(UploadRow).where(UploadRow.job_id == job_id))
            deleted = (await s.execute(delete(JobRow).where(JobRow.id == job_id))).rowcount == 1
        self._changed(job_id)
        return deleted

    async def uploads(self, job_id: str, name: str | None = None) -> list[tuple[str, str, bytes]]:
        """The job's uploaded tables (or only the one called ``name``): (name, MIME type, bytes)."""
        query = select(UploadRow.name, UploadRow.mime_type, UploadRow.data).where(UploadRow.job_id == job_id)
        if name is not None:
            query = query.where(UploadRow.name == name)
        async with self._session() as s:
            return [tuple(row) for row in (await s.execute(query.order_by(UploadRow.name))).all()]

    async def replace_uploads(self, job_id: str, uploads: Iterable[tuple[str, str, bytes]]) -> None:
        """Make ``uploads`` the job's tables, dropping the ones it had."""
        async with self._session.begin() as s:
            await s.execute(delete(UploadRow).where(UploadRow.job_id == job_id))
            for name, mime_type, data in uploads:
                await s.execute(insert(UploadRow).values(job_id=job_id, name=name, mime_type=mime_type, data=data))

    async def active_fields(self, owner: str) -> list[int]:
        """The field count of each of the owner's QUEUED or EXECUTING jobs."""
        query = select(JobRow.info).where(JobRow.owner == owner, JobRow.phase.in_(["QUEUED", "EXECUTING"]))
        async with self._session() as s:
            return [int(info.get("fields_total", 0)) for info in (await s.execute(query)).scalars()]

    async def ids_where(self, *, phases: Iterable[str] | None = None,
                        destroy_before: datetime | None = None) -> list[str]:
        """Ids of jobs in some phases, or due for destruction before an instant."""
        query = select(JobRow.id)
        if phases is not None:
            query = query.where(JobRow.phase.in_(list(phases)))
        if destroy_before is not None:
            query = query.where(JobRow.destruction <= destroy_before)
        async with self._session() as s:
            return list((await s.execute(query.order_by(JobRow.creation_time))).scalars())

    # -- results --------------------------------------------------------------------------

    async def register(self, job_id: str, products: Sequence[Product], rows: Sequence[TableRow]) -> None:
        """Append results and table rows in one transaction: both lists grow together or not at all.

        Sequence numbers continue from the job's largest; the (job, seq) primary key
        makes a concurrent writer that took the same numbers fail and retry. Rows are
        inserted with one executemany per table, so a batch costs two statements.

        Raises
        ------
        IntegrityError
            When the job already has a result with one of these ids.
        """
        for attempt in range(20):
            try:
                newest = None
                async with self._session.begin() as s:
                    for table, items in ((ResultRow.__table__, products), (TableRowRow.__table__, rows)):
                        if not items:
                            continue
                        last = (await s.execute(select(func.coalesce(func.max(table.c.seq), 0))
                                                .where(table.c.job_id == job_id))).scalar_one()
                        await s.execute(insert(table), [
                            {"job_id": job_id, "seq": last + i, **_columns(item)} for i, item in enumerate(items, 1)])
                        if table is ResultRow.__table__:
                            newest = last + len(items)
                # the job row itself is unchanged; only its newest result number moved, to a number known here:
                # a hundred pollers of a busy job need not each ask the database for it after every batch
                self._writes += 1
                if newest is not None:
                    self._last_seq[job_id] = newest
                return
            except IntegrityError:
                existing = [await self.result(job_id, p.result_id) for p in products]
                if attempt == 19 or any(e is not None for e in existing):
                    raise

    async def done_pairs(self, job_id: str, first_field: int, last_field: int) -> set[tuple[int, str]]:
        """The (field, image) pairs of some fields that already have their table rows."""
        query = (select(TableRowRow.field, TableRowRow.image_id).distinct()
                 .where(TableRowRow.job_id == job_id, TableRowRow.field >= first_field,
                        TableRowRow.field <= last_field))
        async with self._session() as s:
            return {(f, i) for f, i in (await s.execute(query)).all()}

    async def table_rows(self, job_id: str, after: int = 0, limit: int = 2000,
                         upto: int | None = None) -> list[tuple[int, str]]:
        """(seq, row) of a job's table rows after ``after`` (and up to ``upto``, when given), in order."""
        query = (select(TableRowRow.seq, TableRowRow.row).where(TableRowRow.job_id == job_id, TableRowRow.seq > after)
                 .order_by(TableRowRow.seq).limit(limit))
        if upto is not None:
            query = query.where(TableRowRow.seq <= upto)
        async with self._session() as s:
            return [(seq, row) for seq, row in (await s.execute(query)).all()]

    async def last_table_seq(self, job_id: str) -> int:
        """The sequence number of the job's newest table row (0 for none)."""
        query = select(func.coalesce(func.max(TableRowRow.seq), 0)).where(TableRowRow.job_id == job_id)
        async with self._session() as s:
            return (await s.execute(query)).scalar_one()

    async def results(self, job_id: str, after: int = 0, limit: int | None = None) -> list[Result]:
        """A job's results with sequence numbers above ``after``, in registration order.

        Plain rows, not ORM objects: a job may have tens of thousands.
        """
        t = ResultRow.__table__.c
        query = (select(t.seq, t.result_id, t.path, t.size, t.mime_type, t.meta)
                 .where(t.job_id == job_id, t.seq > after).order_by(t.seq).limit(limit))
        async with self._session() as s:
            return [Result(*row) for row in (await s.execute(query)).all()]

    async def last_result_seq(self, job_id: str) -> int:
        """The sequence number of the job's newest result (0 for none)."""
        last = self._last_seq.get(job_id)
        if last is None:
            writes = self._writes
            query = select(func.coalesce(func.max(ResultRow.seq), 0)).where(ResultRow.job_id == job_id)
            async with self._session() as s:
                last = (await s.execute(query)).scalar_one()
            if self._writes == writes:
                self._last_seq[job_id] = last
        return last

    async def result(self, job_id: str, result_id: str) -> Result | None:
        """One result by id, or None."""
        query = select(ResultRow).where(ResultRow.job_id == job_id, ResultRow.result_id == result_id)
        async with self._session() as s:
            r = (await s.execute(query)).scalar_one_or_none()
        return None if r is None else Result(r.seq, r.result_id, r.path, r.size, r.mime_type, r.meta)
