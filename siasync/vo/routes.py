"""The VO face: SIAP 1.0 (/sia), SIA 2.0 (/sia2/query), DataLink (/datalink), SODA sync (/soda/sync), the
archive's files (/archive) and VOSI; thin handlers over `SiaService`, `VoService` and `siasync.vo.vosi`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import datetime

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath

from siasync import __version__
from siasync.errors import UsageError
from siasync.settings import Settings
from siasync.vo import datalink, sia2
from siasync.vo.service import VoService
from siasync.vo.sia import SiaService, input_params
from siasync.vo.vosi import archive_readable, availability_xml, capabilities_xml, sia_limits
from siasync.vo.votable import error_document
from siasync.web.download import file_response
from siasync.web.http import XML, base_url, raw_params
from siasync.web.openapi import CUTOUT, DATALINK, SIA, SIA2, SODA, documented
from storage.table import MIME as VOTABLE

Sia = NamedDependency[SiaService]
Vo = NamedDependency[VoService]
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


async def _dali(answer: Awaitable[str], media_type: str) -> Response:
    """A DALI answer, or for a malformed request its error VOTable with HTTP 400."""
    try:
        return Response(await answer, media_type=media_type)
    except UsageError as exc:
        return Response(error_document(f"UsageFault: {exc.message}"), status_code=400, media_type=sia2.MIME)


class Sia2(Controller):
    """``/sia2/query``: SIA 2.0, the archive's images as ObsCore rows, each linking its DataLink document."""

    path = "/sia2"
    _doc = {"answers": (sia2.MIME,), "errors": (400, 401), "usage_errors": sia2.MIME}

    @get("/query", summary="SIA 2.0 query (POS, BAND, TIME, ... MAXREC)", operation_class=documented(*SIA2, **_doc))
    async def query(self, request: Request, vo: Vo, settings: Config, owner: Owner) -> Response:
        return await _dali(vo.query(await raw_params(request), base_url(request, settings.public_url)), sia2.MIME)

    @post("/query", summary="SIA 2.0 query, parameters in a form body", status_code=200,
          operation_class=documented(*SIA2, body=True, **_doc))
    async def query_post(self, request: Request, vo: Vo, settings: Config, owner: Owner) -> Response:
        return await _dali(vo.query(await raw_params(request), base_url(request, settings.public_url)), sia2.MIME)


class DataLinks(Controller):
    """``/datalink``: per image, its file, a preview and the SODA services (DataLink 1.1)."""

    path = "/datalink"
    _doc = {"answers": (datalink.MIME,), "errors": (400, 401), "usage_errors": datalink.MIME}

    @get("/", summary="DataLink links of datasets (ID, repeatable)", operation_class=documented(*DATALINK, **_doc))
    async def links(self, request: Request, vo: Vo, settings: Config, owner: Owner) -> Response:
        return await _dali(vo.links(await raw_params(request), base_url(request, settings.public_url)),
                           datalink.MIME)

    @post("/", summary="DataLink links, IDs in a form body", status_code=200,
          operation_class=documented(*DATALINK, body=True, **_doc))
    async def links_post(self, request: Request, vo: Vo, settings: Config, owner: Owner) -> Response:
        return await _dali(vo.links(await raw_params(request), base_url(request, settings.public_url)),
                           datalink.MIME)


class SodaSync(Controller):
    """``/soda/sync``: one SODA cutout, now (``/soda/async`` is a UWS job list, in `siasync.uws.routes`)."""

    path = "/soda"
    _doc = {"answers": ("application/fits",), "errors": (400, 401, 404, 503)}

    async def _cutout(self, request: Request, vo: VoService) -> Response:
        data, name = await vo.cutout(await raw_params(request))
        if data is None:  # SODA 1.0, 5.1: no pixels of the image in the region
            return Response(b"", status_code=204)
        return Response(data, media_type="application/fits",
                        headers={"Content-Disposition": f'inline; filename="{name}"'})

    @get("/sync", summary="SODA cutout (ID and one of POS, CIRCLE, POLYGON); 204 when it holds no pixel",
         operation_class=documented(*SODA, **_doc))
    async def sync(self, request: Request, vo: Vo, owner: Owner) -> Response:
        return await self._cutout(request, vo)

    @post("/sync", summary="SODA cutout, parameters in a form body", status_code=200,
          operation_class=documented(*SODA, body=True, **_doc))
    async def sync_post(self, request: Request, vo: Vo, owner: Owner) -> Response:
        return await self._cutout(request, vo)


class Archive(Controller):
    """``/archive/{id}``: the file holding an archive image (DataLink's ``#this``), and its PNG preview."""

    path = "/archive"

    @get("/{image_id:str}", summary="The archive file holding the image (ETag, Last-Modified, Range)",
         operation_class=documented(answers=("application/fits",), errors=(401, 404, 416)))
    async def file(self, request: Request, vo: Vo, owner: Owner, image_id: FromPath[str]) -> Response:
        path = vo.files.path(image_id)
        return await file_response(request, path, "application/fits", path.name)

    @get("/{image_id:str}/preview", summary="A PNG preview of the whole image",
         operation_class=documented(answers=("image/png",), errors=(401, 404, 503)))
    async def preview(self, vo: Vo, owner: Owner, image_id: FromPath[str]) -> Response:
        return Response(await vo.files.preview(image_id), media_type="image/png")


#: VOSI's resources sit beside every service's endpoints (SIA 2.0 and SODA require it, and clients
#: such as pyvo look for them there)
_VOSI_ROOTS = ("", "/sia2", "/soda")


class Vosi(Controller):
    """``/capabilities`` and ``/availability`` (VOSI 1.0), open to everyone, at the root and beside each service."""

    path = "/"

    @get([f"{root}/capabilities" for root in _VOSI_ROOTS], summary="VOSI capabilities",
         operation_class=documented(answers=(XML,), errors=()))
    async def capabilities(self, request: Request, sia: Sia, settings: Config) -> Response:
        limits = sia_limits(sia.index, sia.limits, sia.max_records)
        body = capabilities_xml(base_url(request, settings.public_url), limits, input_params(sia.limits))
        return Response(body, media_type=XML)

    @get([f"{root}/availability" for root in _VOSI_ROOTS], summary="VOSI availability",
         operation_class=documented(answers=(XML,), errors=()))
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
