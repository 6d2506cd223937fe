"""The job's pages for people: the job page itself, its sky picture, and everything as one zip."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Stream, Template

from cutout.index import ArchiveIndex
from siasync.errors import ServiceError, UsageError
from siasync.settings import Settings
from siasync.uws.jobs import ACTIVE, JobService
from siasync.uws.params import RawParams, StagingRequest
from siasync.web import sky
from siasync.web.bundle import bundle_name, zip_stream
from siasync.web.http import base_url, raw_params
from siasync.web.job_page import JobPage, PageQuery
from siasync.web.openapi import documented
from siasync.web.pages import form_error
from siasync.web.table_page import table_context
from storage.jobs import Job

Service = NamedDependency[JobService]
Owner = NamedDependency[str]


def _fields(job: Job) -> tuple[np.ndarray, np.ndarray]:
    """Each field's position and (width, height), in degrees."""
    request = StagingRequest.from_spec(job.spec)
    boxes = request.fields()
    return (np.array([(f.ra, f.dec) for f in boxes]).reshape(-1, 2),
            np.array([(f.width, f.height) for f in boxes]).reshape(-1, 2))


async def job_page_context(request: Request, service: JobService, pages: JobPage, job: Job, raw: RawParams,
                           error: ServiceError | None = None, values: dict[str, str] | None = None) -> dict[str, Any]:
    """The job page's context; ``error`` (and the ``values`` of the refused form) when a change was refused."""
    settings: Settings = request.app.state.settings
    try:
        query = PageQuery.parse(raw)
        last_seq = job.last_seq  # read before the rows: a result registered between is sent again
        context = await pages.context(job, query)
    except UsageError as exc:
        if error is not None:
            raise
        return await job_page_context(request, service, pages, job, [], exc)
    positions, _ = _fields(job)
    return {**context, "job": job, "info": job.info, "base": base_url(request, settings.public_url),
            "active": job.phase in ACTIVE, "last_seq": last_seq, "error": form_error(error), "values": values or {},
            "sky_text": sky.describe_fields(positions, int(job.info.get("fields_done", 0)))}


async def job_page(request: Request, service: JobService, pages: JobPage, job: Job) -> Template:
    """The job as an HTML page."""
    context = await job_page_context(request, service, pages, job, await raw_params(request))
    return Template(template_name="job.html", media_type="text/html",
                    context=context, status_code=400 if context["error"] else 200)


async def table_page(request: Request, pages: JobPage, job: Job, raw: RawParams) -> Template:
    """The job's table as an HTML page."""
    settings: Settings = request.app.state.settings
    context = await table_context(pages.browser, job, raw, base_url(request, settings.public_url))
    return Template(template_name="table.html", media_type="text/html", context=context)


class JobPages(Controller):
    """``/async/{job}/sky.svg`` and ``/async/{job}/results.zip``."""

    path = "/async"

    @get("/{job_id:str}/sky.svg", summary="The job's fields on the sky (SVG)", include_in_schema=False)
    async def job_sky(self, service: Service, owner: Owner, index: NamedDependency[ArchiveIndex],
                      job_id: FromPath[str]) -> Response:
        job = await service.get(job_id, owner)
        positions, sizes = _fields(job)
        svg = await asyncio.to_thread(sky.job_svg, index, positions, sizes, int(job.info.get("fields_done", 0)))
        return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "private, max-age=60"})

    @get("/{job_id:str}/results.zip", summary="Every product so far as one zip, streamed, with a manifest",
         operation_class=documented(answers=("application/zip",), errors=(401, 403, 404)))
    async def download_all(self, request: Request, service: Service, owner: Owner,
                           settings: NamedDependency[Settings], pages: NamedDependency[JobPage],
                           job_id: FromPath[str]) -> Stream:
        job = await service.get(job_id, owner)
        return Stream(zip_stream(service, pages.browser, job, base_url(request, settings.public_url)),
                      media_type="application/zip",
                      headers={"Content-Disposition": f'attachment; filename="{bundle_name(job)}"'})
