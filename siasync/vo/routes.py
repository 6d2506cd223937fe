"""Synchronous SIAP 1.0 under /sia, and VOSI: thin handlers over `SiaService` and `siasync.vo.vosi`."""

from __future__ import annotations

import asyncio
from datetime import datetime

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency

from siasync import __version__
from siasync.settings import Settings
from siasync.vo.sia import SiaService, input_params
from siasync.vo.vosi import archive_readable, availability_xml, capabilities_xml, sia_limits
from siasync.web.http import XML, base_url, raw_params
from siasync.web.openapi import CUTOUT, SIA, documented
from storage.table import MIME as VOTABLE

Sia = NamedDependency[SiaService]
Config = NamedDependency[Settings]
Owner = NamedDependency[str]


class SyncSia(Controller):
    """``/sia``: the SIAP 1.0 query, and ``/sia/cutout``: the product behind each row.

    Both read the archive, so they ask for the same credentials as ``/async`` (``owner``).
    """

    path = "/sia"

    async def _query(self, request: Request, sia: SiaService, settings: Settings) -> Response:
        body = await sia.query(await raw_params(request), base_url(request, settings.public_url))
        return Response(body, media_type=VOTABLE)

    @get("/", summary="SIAP 1.0 query (POS, SIZE, INTERSECT, FORMAT, VERB, COLLECTION, BAND)",
         operation_class=documented(*SIA, answers=(VOTABLE,), errors=(401,)))
    async def query(self, request: Request, sia: Sia, settings: Config, owner: Owner) -> Response:
        return await self._query(request, sia, settings)

    @post("/", summary="SIAP 1.0 query, parameters in a form body", status_code=200,
          operation_class=documented(*SIA, body=True, answers=(VOTABLE,), errors=(400, 401, 413)))
    async def query_post(self, request: Request, sia: Sia, settings: Config, owner: Owner) -> Response:
        return await self._query(request, sia, settings)

    @get("/cutout", summary="Cutout of one archive image (ID, POS, SIZE, FORMAT)",
         operation_class=documented(*CUTOUT, answers=("image/fits", "image/png", "image/jpeg"),
                                    errors=(400, 401, 404, 503)))
    async def cutout(self, request: Request, sia: Sia, owner: Owner) -> Response:
        data, mime, name = await sia.cutout(await raw_params(request))
        return Response(data, media_type=mime, headers={"Content-Disposition": f'inline; filename="{name}"'})


class Vosi(Controller):
    """``/capabilities`` and ``/availability`` (VOSI 1.0), open to everyone."""

    path = "/"

    @get("/capabilities", summary="VOSI capabilities", operation_class=documented(answers=(XML,), errors=()))
    async def capabilities(self, request: Request, sia: Sia, settings: Config) -> Response:
        limits = sia_limits(sia.index, sia.limits, sia.max_records)
        body = capabilities_xml(base_url(request, settings.public_url), limits, input_params(sia.limits))
        return Response(body, media_type=XML)

    @get("/availability", summary="VOSI availability", operation_class=documented(answers=(XML,), errors=()))
    async def availability(self, sia: Sia, state: State) -> Response:
        readable = await asyncio.to_thread(archive_readable, sia.index)
        up_since: datetime = state.up_since
        problems, details = await state.health()
        if not readable:
            problems.insert(0, f"the archive directory {sia.index.root} cannot be read")
        notes = problems or [f"siasync {__version__}: {len(sia.index)} archive images in "
                             f"{len(sia.index.collections)} collections; SIAP 1.0 at /sia, UWS 1.1 jobs at /async",
                             *details]
        return Response(availability_xml(not problems, up_since, notes), media_type=XML)
