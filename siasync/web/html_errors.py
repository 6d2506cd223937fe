"""Errors as pages for browsers: a refused form comes back with its values and the error next to its field.

The text is the API's own (``UsageError: POS: …``); only the page around it differs. A refused job
form is the landing page again; a refused change of a job (its destruction, a phase change) is the
job page; a bad filter of the job list is the job list. Anything else is a short error page with
a way back. The page is rendered after the handler failed, so it reads what it needs itself.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, Response
from litestar.response import Stream

from siasync.errors import ServiceError, UsageError
from siasync.uws.jobs import PHASES
from siasync.web.http import HTML, base_url, job_input, preferred
from siasync.web.job_routes import job_page_context
from siasync.web.pages import form_error, form_values, landing_context

log = logging.getLogger(__name__)
#: the handlers whose refused form is shown again
_JOB_FORMS = ("set_destruction", "set_termination", "set_phase", "post_job", "get_job", "set_execution_duration")


def wants_page(request: Request) -> bool:
    """Whether the client is a browser that prefers a page to the text the API answers."""
    return preferred(request) == HTML


def error_page(request: Request, exc: ServiceError) -> Response:
    """The page answering ``exc`` to a browser, with the error's status."""
    return Stream(_render(request, exc), status_code=exc.status, media_type="text/html; charset=utf-8",
                  headers=exc.headers)


async def _render(request: Request, exc: ServiceError) -> AsyncIterator[bytes]:
    template, context = "error.html", {"error": {"text": exc.render().strip(), "status": exc.status}}
    try:
        template, context = await _form_again(request, exc) or (template, context)
    except ServiceError:  # the job went away meanwhile, or the form cannot be read again: the plain error page
        pass
    except Exception:  # the answer's status is sent already: whatever failed, the plain error page follows
        log.exception("cannot show the form of %s %s again", request.method, request.url.path)
    yield request.app.template_engine.get_template(template).render(**context).encode()


async def _form_again(request: Request, exc: ServiceError) -> tuple[str, dict[str, Any]] | None:
    """The form that was refused, with its values and the error; None when there is no form to show again."""
    handler = getattr(request.scope.get("route_handler"), "handler_name", "")
    state = request.app.state
    if not isinstance(exc, UsageError) and exc.status != 403:
        return None
    if handler == "create_job" and isinstance(exc, UsageError):
        raw, parts = await job_input(request)
        values = form_values(raw)
        if any(name.upper() == "UPLOAD" for name in parts):
            values.setdefault("UPLOAD", []).append("")
        return "index.html", landing_context(state.index, state.settings, state.picture, values, exc,
                                             state.remotes)
    if handler == "list_jobs" and isinstance(exc, UsageError):
        raw = (await job_input(request))[0]
        jobs = await state.service.list(state.authenticator.owner(request.headers))
        return "jobs.html", {"jobs": jobs, "base": base_url(request, state.settings.public_url), "phases": PHASES,
                             "selected": [v.upper() for n, v in raw if n == "PHASE"],
                             "values": {n: v for n, v in raw}, "error": form_error(exc)}
    if handler in _JOB_FORMS:
        owner = state.authenticator.owner(request.headers)
        job = await state.service.get(request.path_params["job_id"], owner)
        values = {n: v for n, v in (await job_input(request))[0]} if request.method == "POST" else {}
        raw = [] if request.method == "POST" else (await job_input(request))[0]
        return "job.html", await job_page_context(request, state.service, state.job_page, job, raw, exc, values)
    return None
