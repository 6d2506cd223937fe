"""The application factory: resources are created in the lifespan and injected."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, Response
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, YamlRenderPlugin
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.template import TemplateConfig

from cutout.index import ArchiveIndex
from siasync import __version__
from siasync.auth import Authenticator
from siasync.cpu import CpuPool
from siasync.errors import ServiceError, Unavailable, UsageError
from siasync.remote.catalog import RemoteCatalog
from siasync.remote.config import load_remotes
from siasync.settings import Settings
from siasync.staging.pool import cancel_all, make_pool
from siasync.staging.scheduler import Scheduler
from siasync.uws.jobs import JobService
from siasync.uws.params import Limits
from siasync.uws.representations import iso
from siasync.uws.routes import AsyncJobs, SodaJobs
from siasync.vo.archive import ArchiveFiles
from siasync.vo.obscore import Datasets, ObsCoreTable
from siasync.vo.routes import Archive, DataLinks, Sia2, SodaSync, SyncSia, Vosi
from siasync.vo.service import VoService
from siasync.vo.sia import SiaService
from siasync.vo.soda import parse_async
from siasync.web.body import ParamLimits
from siasync.web.head import HeadAsGet
from siasync.web.html_errors import error_page, wants_page
from siasync.web.http import TEXT
from siasync.web.job_page import JobPage
from siasync.web.job_routes import JobPages
from siasync.web.pages import ArchivePicture, Pages
from siasync.web.reference import ReferencePage
from siasync.web.security import BrowserGuard, HostPolicy
from siasync.web.static import filesize, static_files, when
from storage.browse import JobBrowser
from storage.files import ResultFiles
from storage.guard import StateLock
from storage.jobs import JobStore, StoreFull, StoreUnavailable, ValueTooLong
from storage.runners import Runners

log = logging.getLogger(__name__)
_HTTP_NAMES = {400: "UsageError", 401: "AuthenticationError", 403: "PermissionDenied", 404: "NotFound",
               405: "MethodNotAllowed", 413: "UsageError", 415: "UsageError"}


def limits_for(settings: Settings, index: ArchiveIndex, remotes: RemoteCatalog | None = None) -> Limits:
    """What job parameters may ask for, from the settings, the archive and its remote collections."""
    return Limits(collections=frozenset(index.collections) | frozenset(remotes.names if remotes else ()),
                  bands=frozenset(index.bands) | frozenset(remotes.bands if remotes else ()),
                  max_fields=settings.max_fields, max_size_deg=settings.max_size_deg,
                  destruction_default_s=settings.destruction_default_s, destruction_max_s=settings.destruction_max_s,
                  execution_default_s=settings.execution_default_s, execution_max_s=settings.execution_max_s,
                  owner_active_jobs=settings.owner_active_jobs, owner_queued_fields=settings.owner_queued_fields,
                  upload_urls=settings.upload_urls, max_output_pixels=settings.max_output_pixels,
                  max_coadd_inputs=settings.max_coadd_inputs,
                  max_upload_columns=settings.max_upload_columns,
                  max_upload_table_bytes=settings.max_upload_table_bytes,
                  owner_upload_bytes=settings.owner_upload_bytes, max_job_bytes=settings.max_job_bytes,
                  owner_output_bytes=settings.owner_output_bytes,
                  finest_scale_deg=min((r.scale for r in index.records), default=1.0) / 3600)


#: seconds the database may take to answer /availability
PING_TIMEOUT = 3.0


async def _reaper(service: JobService, runners: Runners, interval: float) -> None:
    """Sweep for expired and overdue jobs, on one server at a time (the holder of the ``reaper`` lease)."""
    while True:
        try:
            if not await runners.hold("reaper", max(3 * interval, runners.heartbeat_every * 2)):
                await asyncio.sleep(interval)
                continue
            await service.reap()  # the service logs each job it destroys or aborts
        except Exception:  # keep reaping whatever one sweep hit
            log.exception("reaper sweep failed")
        await asyncio.sleep(interval)


def create_app(settings: Settings) -> Litestar:
    """Build the siasync application for ``settings``."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        guard = StateLock(settings.state_dir)
        if settings.sqlite:  # one server per SQLite store: a second one stops here, having touched nothing
            guard.acquire()
        index = await asyncio.to_thread(ArchiveIndex.load, settings.archive)
        remotes = RemoteCatalog(load_remotes(settings.archive, frozenset(index.collections)),
                                settings.download_cache, settings.remote_cache_bytes)
        pool = make_pool(settings.executor, settings.workers)
        runners_id = Runners.new_id()
        store = await JobStore.open(settings.database, origin=runners_id)
        runners = Runners(store, settings.executor, settings.lease_s, runners_id)
        files = ResultFiles(settings.state_dir / "results")
        cpu = CpuPool(settings.cpu_threads, settings.cpu_queue, settings.cpu_timeout_s)
        service = JobService(store, files, limits_for(settings, index, remotes), settings.wait_max_s, index, cpu)
        store.subscribe(service.changed)
        listener = None
        if store.postgres:
            from storage.notify import Listener

            listener = Listener(settings.database, store, service.resumed)
            await listener.start()
        else:  # servers sharing the state directory remove each other's leftovers only at their own risk
            await asyncio.to_thread(files.purge_deleted)
        executor = Scheduler(service, index, pool, max_jobs=settings.running_jobs, runners=runners,
                             policy=settings.scheduling, remotes=remotes)
        service.executor = executor
        datasets = Datasets(index, settings.ivo_authority)
        service.soda = partial(parse_async, datasets=datasets, limits=service.limits)
        await executor.start()
        reaper = asyncio.create_task(_reaper(service, runners, settings.reaper_interval_s), name="reaper")
        slots = asyncio.Semaphore(settings.sync_cutouts)  # synchronous reads of the archive, all services together
        sync = SiaService(index, service.limits, settings.sync_cutouts, settings.sia_max_records, slots, remotes)
        obscore = await asyncio.to_thread(ObsCoreTable, datasets)
        vo = VoService(obscore, service.limits, settings.sia_max_records,
                       ArchiveFiles(index, settings.state_dir / "previews", slots), slots, remotes)
        picture = await asyncio.to_thread(ArchivePicture, index)

        async def health() -> tuple[list[str], list[str]]:
            """What keeps the service from working now (the database, the executor), and how the executor is
            shared (for /availability)."""
            problems = []
            if listener is not None and listener.problem is not None:
                problems.append(listener.problem)
            else:
                try:
                    await asyncio.wait_for(store.ping(), PING_TIMEOUT)
                except Exception as exc:
                    problems.append(f"the database cannot be reached: {exc or type(exc).__name__}")
            if executor.problem is not None:
                problems.append(f"no job can run: {executor.problem}")
            workers = pool.workers
            share = f"executor {settings.executor}: {workers} worker process{'es' * (workers != 1)} for this server"
            if pool.sharing > 1:
                share += f", one of {pool.sharing} servers sharing it"
            return problems, [share, *await remote_notes(remotes)]

        app.state.update(index=index, remotes=remotes, service=service, authenticator=Authenticator(settings),
                         sia=sync, vo=vo,
                         up_since=datetime.now(UTC), health=health, settings=settings, picture=picture,
                         job_page=JobPage(JobBrowser(store.engine), index), cpu=cpu,
                         param_limits=ParamLimits(settings.max_params, settings.max_param_bytes))
        # What start-up made (modules, the archive index) lives as long as the process: frozen, the cyclic
        # collector no longer walks it, and a full collection takes a few ms instead of the 100-150 ms for
        # which it stalled every request on the event loop (bench/staging_bench.py, the poll p99)
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()  # an app started in a longer-lived process (tests) leaves no uncollectable cycles
            await cancel_all([reaper])
            await executor.close()
            if listener is not None:
                await listener.close()
            await store.close()
            cpu.close()
            guard.release()

    def owner(request: Request, state: State) -> str:
        return state.authenticator.owner(request.headers)

    def current_settings() -> Settings:
        return settings

    app = Litestar(
        route_handlers=[Pages, AsyncJobs, SodaJobs, JobPages, SyncSia, Sia2, DataLinks, SodaSync, Archive, Vosi,
                        static_files()],
        lifespan=[lifespan],
        dependencies={
            "settings": Provide(current_settings, sync_to_thread=False),
            "owner": Provide(owner, sync_to_thread=False),
            # the resources the lifespan made, by the names handlers take them as
            **{name: Provide(_from_state(attribute), sync_to_thread=False) for name, attribute in (
                ("service", "service"), ("index", "index"), ("sia", "sia"), ("vo", "vo"), ("pages", "job_page"),
                ("picture", "picture"), ("remotes", "remotes"))},
        },
        exception_handlers={ServiceError: _service_error, HTTPException: _http_error, StoreFull: _store_full,
                            ValueTooLong: _too_long, StoreUnavailable: _unreachable, ConnectionError: _unreachable,
                            Exception: _internal_error},
        template_config=TemplateConfig(directory=Path(__file__).parent / "web" / "templates",
                                       engine=JinjaTemplateEngine, engine_callback=_template_filters),
        openapi_config=OpenAPIConfig(title="siasync", version=__version__, path="/schema",
                                     render_plugins=[ReferencePage(), JsonRenderPlugin(), YamlRenderPlugin()]),
        request_max_body_size=settings.max_body_bytes,
        logging_config=None,  # the command line configures logging (siasync.cli.log_config); Litestar keeps out
        debug=False,
    )
    # HEAD on every GET resource, with GET's headers; allowed hosts, no cross-site changes, safety headers
    app.asgi_handler = BrowserGuard(HeadAsGet(app.asgi_handler), HostPolicy(settings))
    return app


async def remote_notes(remotes: RemoteCatalog) -> list[str]:
    """A line per remote collection for /availability: whether its service answers now (remote faults are not
    the service's: they never make it unavailable)."""
    specs = [remotes.specs[name] for name in remotes.names]
    problems = await asyncio.gather(*(remotes.probe(spec) for spec in specs))
    return [f"remote collection {spec.name} ({spec.describe()}): "
            + ("answers" if problem is None else f"does not answer: {problem}")
            for spec, problem in zip(specs, problems, strict=True)]


def _template_filters(engine: JinjaTemplateEngine) -> None:
    engine.engine.filters.update(iso=iso, when=when, filesize=filesize)


def _from_state(attribute: str) -> Callable[[State], Any]:
    """A dependency provider of one of the resources the lifespan keeps in the app's state."""

    def provide(state: State) -> Any:
        return state[attribute]

    return provide


def _service_error(request: Request, exc: ServiceError) -> Response:
    log.info("%s %s: %d %s", request.method, request.url.path, exc.status, exc.render().strip()[:300])
    if wants_page(request):
        return error_page(request, exc)
    return Response(exc.render(), status_code=exc.status, media_type=TEXT, headers=exc.headers)


def _http_error(request: Request, exc: HTTPException) -> Response:
    name = _HTTP_NAMES.get(exc.status_code, "Error")
    detail = exc.detail
    if exc.status_code == 413:
        detail = f"request body: larger than the limit of {request.app.request_max_body_size} bytes"
    elif exc.status_code == 400 and detail == "Request Entity Too Large":  # Litestar 2: too many multipart parts
        detail = f"request body: more than the limit of {request.app.multipart_form_part_limit} multipart parts"
    elif exc.status_code in (400, 415):  # the framework's own: the body could not be read as a form
        detail = f"request body: {detail}"
    error = ServiceError(str(detail), getattr(exc, "headers", None) or {})
    error.name, error.status = name, exc.status_code
    return _service_error(request, error)


def _too_long(request: Request, exc: ValueTooLong) -> Response:
    """A value longer than its column, which no parameter check caught: a 400 naming the column."""
    return _service_error(request, UsageError(exc.column, str(exc).partition(": ")[2]))


def _unreachable(request: Request, exc: Exception) -> Response:
    """The database is out of reach (a connection refused, or lost): a 503, not a 500."""
    log.error("cannot serve %s %s: %s", request.method, request.url.path, exc)
    return _service_error(request, Unavailable("the database cannot be reached; try again later"))


def _store_full(request: Request, exc: StoreFull) -> Response:
    log.error("cannot store %s %s: the disk is full", request.method, request.url.path)
    return Response("Error: the service's disk is full, so the request could not be stored; try again later\n",
                    status_code=503, media_type=TEXT, headers={"Retry-After": "60"})


def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return Response("Error: internal error; it has been logged\n", status_code=500, media_type=TEXT)
