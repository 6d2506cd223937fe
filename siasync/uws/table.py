"""The ``table`` result over HTTP: header, the rows registered so far, footer, streamed."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

from litestar import Request, Response
from litestar.response import Stream

from siasync.errors import NotFound
from siasync.uws.jobs import JobService
from siasync.web.http import etag_matches
from storage.jobs import Job
from storage.table import FOOTER, MIME, header, with_base


async def table_response(request: Request, service: JobService, job: Job, base: str) -> Response:
    """The job's SIAP table, complete and valid at every moment; 404 before the job starts.

    The table is the rows registered when the request came, even if more arrive while it
    streams, so that its ETag (the job's progress and its newest row) names exactly these
    bytes; 304 when the client's ``If-None-Match`` names it.
    """
    if job.start_time is None:
        raise NotFound(f"job {job.id} has not started; its table appears when it starts executing")
    info = {"JOB_PHASE": job.phase, "FIELDS_DONE": job.info.get("fields_done", 0),
            "FIELDS_TOTAL": job.info.get("fields_total", 0)}
    last = await service.store.last_table_seq(job.id)
    etag = '"' + hashlib.blake2b(repr((job.id, sorted(info.items()), last, base)).encode(),
                                 digest_size=12).hexdigest() + '"'
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(b"", status_code=304, headers={"ETag": etag})

    async def body() -> AsyncIterator[str]:
        yield header(info, f"siasync job {job.id}: products registered so far, in registration order")
        after = 0
        while rows := await service.store.table_rows(job.id, after, upto=last):
            yield with_base("".join(row for _, row in rows), base)
            after = rows[-1][0]
        yield FOOTER

    return Stream(body(), media_type=MIME, headers={"ETag": etag})
