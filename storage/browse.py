"""Read-only queries for the pages that people browse: a job's results grouped by field, a page at a time.

Kept apart from `storage.jobs.JobStore` (which writes, and caches for pollers): nothing here
writes or caches, so several readers may share one engine. Every query is bounded by the
``(job_id, field)`` index of ``table_rows`` or the ``(job_id, result_id)`` key of ``results``,
so a page of a 10,000-field job costs what a page of a 10-field job costs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from storage.jobs import ResultRow, TableRowRow


@dataclass(frozen=True)
class FieldProduct:
    """One table row of a field: the image it comes from and its product (None for a METADATA row)."""

    field: int
    image_id: str
    row_seq: int
    result_id: str | None
    mime_type: str | None
    size: int | None
    #: the product's result sequence number (what the event stream counts by)
    result_seq: int | None
    #: how many rows the field has (of the images asked for)
    in_field: int


class JobBrowser:
    """Pages of a job's table rows and products, grouped by field."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._session = async_sessionmaker(engine, expire_on_commit=False)

    async def image_counts(self, job_id: str) -> dict[str, int]:
        """Table rows per image (or per generated unit such as ``mosaic-r``) of the job so far."""
        t = TableRowRow.__table__.c
        query = select(t.image_id, func.count()).where(t.job_id == job_id).group_by(t.image_id)
        async with self._session() as s:
            return {image: n for image, n in (await s.execute(query)).all()}

    async def fields_with(self, job_id: str, images: Sequence[str], offset: int, limit: int) -> list[int]:
        """The fields that have rows of these images, in order, from the ``offset``-th on."""
        t = TableRowRow.__table__.c
        query = (select(t.field).distinct().where(t.job_id == job_id, t.image_id.in_(list(images)))
                 .order_by(t.field).offset(offset).limit(limit))
        async with self._session() as s:
            return list((await s.execute(query)).scalars())

    async def count_fields_with(self, job_id: str, images: Sequence[str]) -> int:
        """How many fields have rows of these images."""
        t = TableRowRow.__table__.c
        query = select(func.count(t.field.distinct())).where(t.job_id == job_id, t.image_id.in_(list(images)))
        async with self._session() as s:
            return (await s.execute(query)).scalar_one()

    async def field_products(self, job_id: str, first: int, last: int, images: Sequence[str] | None = None,
                             fields: Sequence[int] | None = None, per_field: int = 1000) -> list[FieldProduct]:
        """The rows of fields ``first`` to ``last`` (only ``fields`` among them, when given) with their products,
        by field then registration order: the first ``per_field`` of each field, and only rows of ``images``
        when given. Each carries how many rows its field has (`FieldProduct.in_field`)."""
        t, r = TableRowRow.__table__.c, ResultRow.__table__.c
        inner = (select(t.field, t.image_id, t.seq, t.result_id,
                        func.row_number().over(partition_by=t.field, order_by=t.seq).label("n"),
                        func.count().over(partition_by=t.field).label("in_field"))
                 .where(t.job_id == job_id, t.field >= first, t.field <= last))
        if images is not None:
            inner = inner.where(t.image_id.in_(list(images)))
        if fields is not None:
            inner = inner.where(t.field.in_(list(fields)))
        rows = inner.subquery()
        query = (select(rows.c.field, rows.c.image_id, rows.c.seq, rows.c.result_id, r.mime_type, r.size, r.seq,
                        rows.c.in_field)
                 .select_from(rows.outerjoin(ResultRow.__table__, and_(r.job_id == job_id,
                                                                       r.result_id == rows.c.result_id)))
                 .where(rows.c.n <= per_field).order_by(rows.c.field, rows.c.seq))
        async with self._session() as s:
            return [FieldProduct(*row) for row in (await s.execute(query)).all()]

    async def rows(self, job_id: str, offset: int, limit: int, field: int | None = None) -> list[tuple[int, str]]:
        """(seq, row) of the job's table rows from the ``offset``-th on (of one field, when given)."""
        t = TableRowRow.__table__.c
        query = select(t.seq, t.row).where(t.job_id == job_id)
        if field is not None:
            query = query.where(t.field == field)
        async with self._session() as s:
            return [tuple(row) for row in (await s.execute(query.order_by(t.seq).offset(offset).limit(limit))).all()]

    async def count_rows(self, job_id: str, field: int | None = None) -> int:
        """How many table rows the job has (in one field, when given)."""
        t = TableRowRow.__table__.c
        query = select(func.count()).select_from(TableRowRow.__table__).where(t.job_id == job_id)
        if field is not None:
            query = query.where(t.field == field)
        async with self._session() as s:
            return (await s.execute(query)).scalar_one()

    async def snapshot(self, job_id: str) -> tuple[int, int]:
        """The job's newest result and table row sequence numbers, read together (0 for none).

        Results and their rows are registered in one transaction, so everything up to these two
        numbers is a consistent state of the job: what a download of everything so far holds.
        """
        t, r = TableRowRow.__table__.c, ResultRow.__table__.c
        async with self._session() as s, s.begin():
            last_result = (await s.execute(select(func.coalesce(func.max(r.seq), 0))
                                           .where(r.job_id == job_id))).scalar_one()
            last_row = (await s.execute(select(func.coalesce(func.max(t.seq), 0))
                                        .where(t.job_id == job_id))).scalar_one()
        return last_result, last_row

    async def rows_upto(self, job_id: str, after: int, upto: int, limit: int = 2000) -> list[tuple[int, str]]:
        """(seq, row) of the job's table rows after ``after`` and up to ``upto``, in order."""
        t = TableRowRow.__table__.c
        query = (select(t.seq, t.row).where(t.job_id == job_id, t.seq > after, t.seq <= upto)
                 .order_by(t.seq).limit(limit))
        async with self._session() as s:
            return [tuple(row) for row in (await s.execute(query)).all()]
