"""The UWS 1.1 REST binding under /async: thin handlers over `JobService`."""

from __future__ import annotations

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import ServerSentEvent, Template

from siasync.errors import UsageError
from siasync.settings import Settings
from siasync.uws.events import job_events, last_event_id
from siasync.uws.jobs import PHASES, JobService
from siasync.uws.representations import iso, job_path, jobs_json, jobs_xml, owner_id, parameters_xml
from siasync.uws.table import table_response
from siasync.uws.uploads import CSV
from siasync.web.download import file_response
from siasync.web.http import (
    HTML,
    JSON,
    TEXT,
    XML,
    base_url,
    conditional,
    job_input,
    one,
    preferred,
    raw_params,
    see_other,
    text,
)
from siasync.web.job_page import JobPage
from siasync.web.job_routes import job_page, table_page
from siasync.web.openapi import (
    DOWNLOAD,
    EVENTS,
    JOB_LIST,
    JOB_PARAMS,
    PAGE_VIEW,
    SODA,
    TABLE_VIEW,
    WAIT,
    Param,
    documented,
)
from siasync.web.security import SANDBOX_CSP
from siasync.web.table_page import response_format
from storage.jobs import JobSummary
from storage.table import MIME as VOTABLE

JOB = "/{job_id:str}"
Service = NamedDependency[JobService]
Owner = NamedDependency[str]
Config = NamedDependency[Settings]
Pages = NamedDependency[JobPage]
_DOCUMENT = (XML, JSON, HTML)
#: the error answers of a job's resources, of those with parameters, and of changes to them
_SEEN, _ASKED, _CHANGED = (401, 403, 404), (400, 401, 403, 404), (400, 401, 403, 404, 413)
#: the plain-text children of a job
_READ = documented(answers=(TEXT,), errors=_SEEN)


def _job(*names: str) -> tuple[Param, ...]:
    return tuple(p for p in JOB_PARAMS if p.name in names)


async def _job_page(request: Request, service: JobService, settings: Settings, pages: JobPage, owner: str,
                    job_id: str, wait: str | None = None, phase: str | None = None) -> Response:
    job = (await service.wait(job_id, owner, wait, phase) if wait is not None
           else await service.get(job_id, owner))
    base = base_url(request, settings.public_url)
    kind = preferred(request)
    if kind in (JSON, XML):
        document = await (service.documents.json if kind == JSON else service.documents.xml)(job, base)
        return conditional(request, document, kind, vary="Accept")
    return await job_page(request, service, pages, job)


#: a job list longer than this is rendered in the CPU pool, off the event loop
_BIG_LIST = 500


async def _job_list(request: Request, jobs: list[JobSummary], base: str, selected: list[str]) -> Response:
    """The job list in the representation the client prefers; a long one rendered in the CPU pool."""
    kind = preferred(request)
    if kind == HTML:
        context = {"jobs": jobs, "base": base, "phases": PHASES, "selected": selected}
        if len(jobs) <= _BIG_LIST:
            return Template(template_name="jobs.html", context=context, media_type=HTML)
        page = request.app.template_engine.get_template("jobs.html")
        return Response(await request.app.state.cpu.run("the job list", lambda: page.render(**context)),
                        media_type=HTML)
    render = (lambda: msgspec.json.encode(jobs_json(jobs, base))) if kind == JSON else (lambda: jobs_xml(jobs, base))
    body = render() if len(jobs) <= _BIG_LIST else await request.app.state.cpu.run("the job list", render)
    return Response(body, media_type=kind)


class AsyncJobs(Controller):
    """``/async``: the job list, job creation and every child of a job."""

    path = "/async"
    #: the kind of job this list holds and creates (`JobService.create`)
    kind = "sia"

    @get("/", summary="List jobs (PHASE, AFTER, LAST)", operation_class=documented(*JOB_LIST, answers=_DOCUMENT,
                                                                                           errors=(400, 401)))
    async def list_jobs(self, request: Request, service: Service, settings: Config, owner: Owner) -> Response:
        params = await raw_params(request)
        jobs = await service.list(owner, [v for n, v in params if n == "PHASE"], one(params, "AFTER"),
                                  one(params, "LAST"), kind=self.kind)
        return await _job_list(request, jobs, base_url(request, settings.public_url),
                               [v.upper() for n, v in params if n == "PHASE"])

    @post("/", summary="Create a job", status_code=303,
          operation_class=documented(*JOB_PARAMS, body=True, answers=(), errors=(400, 401, 413), file=True))
    async def create_job(self, request: Request, settings: Config, service: Service, owner: Owner) -> Response:
        # a browser's form sends the fields left blank as empty values: for a person they mean "not given"
        job = await service.create(owner, *await job_input(request, blank_is_absent=preferred(request) == HTML),
                                   kind=self.kind)
        return see_other(request, settings.public_url, job_path(job.id))

    @get(JOB, summary="The job (WAIT and PHASE for blocking)", operation_class=documented(*WAIT, *PAGE_VIEW,
                                                                                              answers=_DOCUMENT,
                                                                                              errors=_ASKED))
    async def get_job(self, request: Request, service: Service, settings: Config, pages: Pages, owner: Owner,
                      job_id: FromPath[str]) -> Response:
        params = await raw_params(request)
        return await _job_page(request, service, settings, pages, owner, job_id, one(params, "WAIT"),
                               one(params, "PHASE"))

    @post(JOB, summary="ACTION=DELETE destroys the job", status_code=303, operation_class=documented(
        Param("ACTION", "DELETE: destroy the job", example="DELETE"), body=True, answers=(), errors=_CHANGED))
    async def post_job(self, request: Request, settings: Config, service: Service, owner: Owner,
                       job_id: FromPath[str]) -> Response:
        action = one(await raw_params(request), "ACTION")
        if action is None or action.upper() != "DELETE":
            await service.get(job_id, owner)
            raise UsageError("ACTION", f"expected ACTION=DELETE, got {action!r}")
        await service.destroy(job_id, owner)
        return see_other(request, settings.public_url, self.path)

    @delete(JOB, summary="Destroy the job", status_code=303, operation_class=documented(answers=(), errors=_SEEN))
    async def delete_job(self, request: Request, settings: Config, service: Service, owner: Owner,
                         job_id: FromPath[str]) -> Response:
        await service.destroy(job_id, owner)
        return see_other(request, settings.public_url, self.path)

    @get(JOB + "/phase", summary="The phase", operation_class=_READ)
    async def get_phase(self, service: Service, owner: Owner, job_id: FromPath[str]) -> Response:
        return text((await service.get(job_id, owner)).phase)

    @post(JOB + "/phase", summary="PHASE=RUN or PHASE=ABORT", status_code=303, operation_class=documented(
        Param("PHASE", "RUN or ABORT", example="ABORT"), body=True, answers=(), errors=_CHANGED))
    async def set_phase(self, request: Request, settings: Config, service: Service, owner: Owner,
                        job_id: FromPath[str]) -> Response:
        phase = one(await raw_params(request), "PHASE")
        await service.get(job_id, owner)
        if phase is not None and phase.upper() == "RUN":
            await service.run(job_id, owner)
        elif phase is not None and phase.upper() == "ABORT":
            await service.abort(job_id, owner)
        else:
            raise UsageError("PHASE", f"expected RUN or ABORT, got {phase!r}")
        return see_other(request, settings.public_url, job_path(job_id))

    @get(JOB + "/executionduration", summary="The execution duration in seconds", operation_class=_READ)
    async def get_execution_duration(self, service: Service, owner: Owner, job_id: FromPath[str]) -> Response:
        return text(str((await service.get(job_id, owner)).execution_duration))

    @post(JOB + "/executionduration", summary="Change the execution duration", status_code=303,
          operation_class=documented(*_job("EXECUTIONDURATION"), body=True, answers=(), errors=_CHANGED))
    async def set_execution_duration(self, request: Request, settings: Config, service: Service, owner: Owner,
                                     job_id: FromPath[str]) -> Response:
        value = one(await raw_params(request), "EXECUTIONDURATION")
        if value is None:
            raise UsageError("EXECUTIONDURATION", "required")
        await service.set_execution_duration(job_id, owner, value)
        return see_other(request, settings.public_url, job_path(job_id))

    @get([JOB + "/destruction", JOB + "/termination"], summary="The destruction instant", operation_class=_READ)
    async def get_destruction(self, service: Service, owner: Owner, job_id: FromPath[str]) -> Response:
        return text(iso((await service.get(job_id, owner)).destruction))

    @post(JOB + "/destruction", summary="Change the destruction instant", status_code=303,
          operation_class=documented(*_job("DESTRUCTION"), body=True, answers=(), errors=_CHANGED))
    async def set_destruction(self, request: Request, settings: Config, service: Service, owner: Owner,
                              job_id: FromPath[str]) -> Response:
        return await self._destruction(request, settings, service, owner, job_id, "DESTRUCTION")

    @post(JOB + "/termination", summary="UWS 0.3 alias: TIME=iso", status_code=303, operation_class=documented(
        Param("TIME", "the destruction instant (ISO 8601)", example="2030-01-01T00:00:00Z"), body=True, answers=(),
        errors=_CHANGED))
    async def set_termination(self, request: Request, settings: Config, service: Service, owner: Owner,
                              job_id: FromPath[str]) -> Response:
        return await self._destruction(request, settings, service, owner, job_id, "TIME")

    async def _destruction(self, request: Request, settings: Settings, service: JobService, owner: str, job_id: str,
                           param: str) -> Response:
        value = one(await raw_params(request), param)
        if value is None:
            await service.get(job_id, owner)
            raise UsageError(param, "required: an ISO 8601 instant")
        await service.set_destruction(job_id, owner, param, value)
        return see_other(request, settings.public_url, job_path(job_id))

    @get(JOB + "/error", summary="The error message (empty when there is none)", operation_class=_READ)
    async def get_error(self, service: Service, owner: Owner, job_id: FromPath[str]) -> Response:
        return text((await service.get(job_id, owner)).error_message or "")

    @get(JOB + "/quote", summary="Predicted completion (empty when unknown)", operation_class=_READ)
    async def get_quote(self, service: Service, owner: Owner, job_id: FromPath[str]) -> Response:
        return text(iso((await service.get(job_id, owner)).quote))

    @post(JOB + "/quote", summary="UWS 0.3 alias: commit the job (PHASE=RUN)", status_code=303,
          operation_class=documented(answers=(), errors=(400, *_SEEN)))
    async def post_quote(self, request: Request, settings: Config, service: Service, owner: Owner,
                         job_id: FromPath[str]) -> Response:
        await service.run(job_id, owner)
        return see_other(request, settings.public_url, job_path(job_id))

    @get(JOB + "/owner", summary="The owner (empty when nobody was authenticated)", operation_class=_READ)
    async def get_owner(self, service: Service, owner: Owner, job_id: FromPath[str]) -> Response:
        return text(owner_id(await service.get(job_id, owner)) or "")

    @get(JOB + "/parameters", summary="The parameters", operation_class=documented(answers=(XML,), errors=_SEEN))
    async def get_parameters(self, request: Request, service: Service, settings: Config, owner: Owner,
                             job_id: FromPath[str]) -> Response:
        job = await service.get(job_id, owner)
        return Response(parameters_xml(job, base_url(request, settings.public_url)), media_type="application/xml")

    @get(JOB + "/parameters/{name:str}", summary="An uploaded table, as received",
         operation_class=documented(answers=("text/csv", "application/x-votable+xml"), errors=_SEEN))
    async def get_upload(self, service: Service, owner: Owner, job_id: FromPath[str], name: FromPath[str]) -> Response:
        mime_type, data = await service.upload(job_id, owner, name)
        # a client's own bytes: saved, never shown by a browser (a VOTable may hold script for an XML viewer)
        saved = f'attachment; filename="{name}.{"csv" if mime_type == CSV else "xml"}"'
        return Response(data, media_type=mime_type,
                        headers={"Content-Security-Policy": SANDBOX_CSP, "Content-Disposition": saved})

    @post(JOB + "/parameters", summary="Change parameters while PENDING", status_code=303,
          operation_class=documented(*JOB_PARAMS, body=True, answers=(), errors=_CHANGED, file=True))
    async def set_parameters(self, request: Request, settings: Config, service: Service, owner: Owner,
                             job_id: FromPath[str]) -> Response:
        await service.set_parameters(job_id, owner, *await job_input(request))
        return see_other(request, settings.public_url, job_path(job_id))

    @get(JOB + "/results", summary="The results so far", operation_class=documented(answers=(XML,), errors=_SEEN))
    async def get_results(self, request: Request, service: Service, settings: Config, owner: Owner,
                      job_id: FromPath[str]) -> Response:
        job = await service.get(job_id, owner)
        document = await service.documents.results(job, base_url(request, settings.public_url))
        return conditional(request, document, XML)

    @get(JOB + "/results/table", summary="The growing SIAP table of the products registered so far (HTML for "
         "browsers, with PAGE and FIELD)", operation_class=documented(*TABLE_VIEW, answers=(VOTABLE, HTML),
                                                                      errors=_ASKED))
    async def get_table(self, request: Request, service: Service, settings: Config, pages: Pages, owner: Owner,
                        job_id: FromPath[str]) -> Response:
        raw = await raw_params(request)
        job = await service.get(job_id, owner)
        wanted = response_format(raw) or ("HTML" if preferred(request) == HTML else "VOTABLE")
        if wanted == "HTML" and job.start_time is not None:
            return await table_page(request, pages, job, raw)
        return await table_response(request, service, job, base_url(request, settings.public_url))

    @get(JOB + "/results/{result_id:str}", summary="Download one result (ETag, Last-Modified, Range)",
         operation_class=documented(*DOWNLOAD, answers=("image/fits", "image/png", "image/jpeg"),
                                    errors=(*_SEEN, 416)))
    async def get_result(self, request: Request, service: Service, owner: Owner, job_id: FromPath[str],
                         result_id: FromPath[str]) -> Response:
        result, path = await service.result_file(job_id, owner, result_id)
        return await file_response(request, path, result.mime_type, result.result_id, result.meta.get("sha256"))

    @get(JOB + "/events", summary="Server-Sent Events: phase, progress, times and each new result",
         operation_class=documented(*EVENTS, answers=("text/event-stream",), errors=_ASKED))
    async def get_events(self, request: Request, service: Service, settings: Config, owner: Owner,
                         job_id: FromPath[str]) -> ServerSentEvent:
        await service.get(job_id, owner)
        # a reconnecting client sends Last-Event-ID; a page opening the stream says where to start with AFTER
        after = last_event_id(request.headers.get("last-event-id") or one(await raw_params(request), "AFTER"))
        return ServerSentEvent(job_events(service, job_id, after, base_url(request, settings.public_url)))


class SodaJobs(AsyncJobs):
    """``/soda/async``: SODA 1.0 async, a UWS job list whose jobs cut every region of every ID.

    A SODA job has every child of an ``/async`` job (and is served under both paths); its
    results are staged by the same engine, with a growing ``table``.
    """

    path = "/soda/async"
    kind = "soda"

    @post("/", summary="Create a SODA job (ID, POS/CIRCLE/POLYGON, repeatable; BAND, TIME; the UWS settings)",
          status_code=303, operation_class=documented(*SODA, *_job("RUNID", "EXECUTIONDURATION", "DESTRUCTION",
                                                                     "START", "PHASE"),
                                                        body=True, answers=(), errors=(400, 401, 404, 413)))
    async def create_job(self, request: Request, settings: Config, service: Service, owner: Owner) -> Response:
        job = await service.create(owner, await raw_params(request), kind=self.kind)
        return see_other(request, settings.public_url, job_path(job.id))
