"""The ``table`` result over HTTP: header, the rows registered so far, footer, streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator

from litestar.response import Stream

from siasync.errors import NotFound
from siasync.uws.jobs import JobService
from storage.jobs import Job
from storage.table import FOOTER, MIME, header, with_base


async def table_response(service: JobService, job: Job, base: str) -> Stream:
    """The job's SIAP table, complete and valid at every moment; 404 before the job starts."""
    if job.start_time is None:
        raise NotFound(f"job {job.id} has not started; its table appears when it starts executing")
    info = {"JOB_PHASE": job.phase, "FIELDS_DONE": job.info.get("fields_done", 0),
            "FIELDS_TOTAL": job.info.get("fields_total", 0)}

    async def body() -> AsyncIterator[str]:
        yield header(info, f"siasync job {job.id}: products registered so far, in registration order")
        after = 0
        while rows := await service.store.table_rows(job.id, after):
            yield with_base("".join(row for _, row in rows), base)
            after = rows[-1][0]
        yield FOOTER

    return Stream(body(), media_type=MIME)
