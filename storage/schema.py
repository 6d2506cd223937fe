"""The tables of the job store (SQLAlchemy 2 declarative); their history is in `storage.migrations`.

A change to these tables needs a migration: a new revision in ``storage/migrations/versions``
that brings a store of the previous revision to this one (`storage.migrate`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


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
    #: bumped by every change to the job or its results (see `storage.jobs.JobStore`)
    version: Mapped[int] = mapped_column(BigInteger, default=1, server_default="1")
    #: the sequence number of the job's newest result (0 for none)
    last_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: the server running the job (a `ServerRow` id), or None: nobody has it
    runner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    __table_args__ = (Index("ix_jobs_owner_created", "owner", "creation_time"),
                      Index("ix_jobs_phase", "phase"), Index("ix_jobs_destruction", "destruction"),
                      Index("ix_jobs_runner", "runner"))


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


class ServerRow(Base):
    """A server sharing the store: alive while its heartbeat is younger than the lease."""

    __tablename__ = "servers"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    #: the machine and PID namespace the PID belongs to: a server there may check whether the PID lives
    machine: Mapped[str] = mapped_column(String(128))
    #: the executor setting (servers with the same ``dask://`` address share that cluster)
    executor: Mapped[str] = mapped_column(String(255))
    started: Mapped[datetime] = mapped_column(UTCDateTime)
    heartbeat: Mapped[datetime] = mapped_column(UTCDateTime)


class LeaseRow(Base):
    """A named duty one server at a time holds (the reaper), until ``expires`` unless renewed."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires: Mapped[datetime] = mapped_column(UTCDateTime)


def column_limits() -> dict[str, int]:
    """The longest value of each bounded text column a client's input reaches, by ``table.column``."""
    return {f"{table.name}.{column.name}": column.type.length
            for table in (JobRow.__table__, UploadRow.__table__) for column in table.columns
            if isinstance(column.type, String) and column.type.length}
