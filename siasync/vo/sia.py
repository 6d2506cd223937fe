"""Synchronous SIAP 1.0: the ``/sia`` query and the ``/sia/cutout`` product behind each row.

Parameters are parsed with the job parameters' own parsers (`siasync.uws.params`). A query
row describes the cutout that ``/sia/cutout`` makes for the (field, image) pair, from the
cutout's header alone (`cutout.engine.cutout_header`); the cutout is the one an async
job writes for that pair, byte for byte. Files are opened, read and closed in worker
threads, a fresh `ParentImage` per request (nothing shared between threads), and at
most ``concurrency`` requests work at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from cutout.engine import ParentCache, ParentImage, cut, cutout_header
from cutout.errors import ArchiveError, FieldError, NoOverlapError
from cutout.index import ArchiveIndex
from cutout.preview import preview_bytes
from cutout.scan import ImageRecord
from cutout.siap import Column, product_metadata
from cutout.sky import Field, Intersect
from siasync.errors import NotFound, ServiceError, UsageError
from siasync.staging.worker import EXTENSIONS, CoaddTask, build_coadd, coadd_bytes, coadd_tasks
from siasync.uws.params import (
    FORMATS,
    GENERATION_PARAMETERS,
    Limits,
    RawParams,
    grouped,
    parse_choice,
    parse_format,
    parse_generation,
    parse_int,
    parse_members,
    parse_pos,
    parse_size,
)
from siasync.vo.sia_votable import VERB_COLUMNS, InputParam, error_document, results_document
from storage.table import render_row, with_base

log = logging.getLogger(__name__)
FITS = "image/fits"
#: the formats ``/sia/cutout`` makes
CUTOUT_FORMATS = ("image/fits", "image/png", "image/jpeg")
#: parameters given at most once, per endpoint (others repeat, or are ignored as DALI asks)
_QUERY_SINGLE = ("POS", "SIZE", "FORMAT", "INTERSECT", "VERB")
_CUTOUT_SINGLE = ("POS", "SIZE", "FORMAT", "MODE", *GENERATION_PARAMETERS)


class ArchiveUnavailable(ServiceError):
    """An indexed archive image that cannot be read now (a server-side fault, not the client's)."""

    status = 503
    name = "ServiceUnavailable"


@dataclass(frozen=True)
class SiaQuery:
    """A parsed ``/sia`` query."""

    #: POS and SIZE; None only in a metadata query that does not give both
    field: Field | None
    #: MIME types of the products each matching image is offered in; empty for FORMAT=METADATA
    products: tuple[str, ...]
    intersect: Intersect = Intersect.OVERLAPS
    #: VERB as given (None: the default, 1; a metadata query then describes every column)
    verb: int | None = None
    collections: tuple[str, ...] = ()
    bands: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[Column, ...]:
        """The response's columns, by VERB."""
        if self.verb is not None:
            return VERB_COLUMNS[self.verb]
        return VERB_COLUMNS[1 if self.products else 3]


@dataclass(frozen=True)
class CutoutRequest:
    """A parsed ``/sia/cutout`` request: one archive image, one field, one format."""

    image_id: str
    field: Field
    mime: str = FITS


@dataclass(frozen=True)
class CoaddRequest:
    """A parsed ``/sia/cutout`` request with MODE=mosaic or stack: the field's images co-added on a grid."""

    field: Field
    mime: str
    #: `StagingRequest` keywords: mode, grid, combine and match_background
    generation: dict
    #: only these archive images (ID, repeatable), else every one that overlaps the field
    image_ids: tuple[str, ...] = ()
    collections: tuple[str, ...] = ()
    bands: tuple[str, ...] = ()


def input_params(limits: Limits) -> tuple[InputParam, ...]:
    """The input parameters of ``/sia``, with the archive's collections and bands."""
    return (
        InputParam("POS", "char", "ICRS RA,Dec of the field centre, in degrees", "deg", "pos.eq", required=True),
        InputParam("SIZE", "char", f"field width[,height] on the sky, in degrees, at most {limits.max_size_deg:g}: "
                   "a north-up TAN box centred on POS", "deg", "instr.fov", required=True),
        InputParam("INTERSECT", "char", "how an image must meet the field", default="OVERLAPS",
                   options=tuple(m.value for m in Intersect)),
        InputParam("FORMAT", "char", "formats of the products, comma-separated; METADATA describes this service",
                   default="ALL", options=tuple(FORMATS)),
        InputParam("VERB", "int", "columns: 0 the required ones, 1 also the usual ones, 2 also WCS and bandpass, "
                   "3 all", default="1", options=("0", "1", "2", "3")),
        InputParam("COLLECTION", "char", "only images of these collections (repeatable or comma-separated)",
                   options=tuple(sorted(limits.collections)), standard=False),
        InputParam("BAND", "char", "only images in these bands (repeatable or comma-separated)",
                   options=tuple(sorted(limits.bands)), standard=False),
    )


def _field(one: Mapping[str, str], limits: Limits, required: bool = True) -> Field | None:
    """POS and SIZE as a field; each is validated when given, and both are needed unless not ``required``."""
    pos = parse_pos(one["POS"]) if "POS" in one else None
    size = parse_size(one["SIZE"], limits.max_size_deg) if "SIZE" in one else None
    if pos is None or size is None:
        if not required:
            return None
        if pos is None:
            raise UsageError("POS", "required: give POS=ra,dec (ICRS degrees)")
        raise UsageError("SIZE", "required: give SIZE=s or SIZE=w,h in degrees")
    try:
        return Field(*pos, *size)
    except FieldError as exc:
        raise UsageError("SIZE", str(exc)) from None


def parse_query(raw: RawParams, limits: Limits) -> SiaQuery:
    """Validate a ``/sia`` query (names upper-cased, as `siasync.uws.params.gather` gives them).

    Raises
    ------
    UsageError
        Naming the first parameter at fault.
    """
    values, one = grouped(raw, _QUERY_SINGLE)
    formats = [parse_format(f) for f in one.get("FORMAT", "ALL").split(",")]  # SIAP 1.0: a list
    if "METADATA" in formats and len(formats) > 1:
        raise UsageError("FORMAT", "METADATA cannot be combined with other formats")
    verb = parse_int("VERB", one["VERB"]) if "VERB" in one else None
    if verb is not None and verb not in VERB_COLUMNS:
        raise UsageError("VERB", f"must be 0, 1, 2 or 3, got {verb}")
    metadata = formats == ["METADATA"]
    return SiaQuery(
        field=_field(one, limits, required=not metadata),
        products=tuple(dict.fromkeys(mime for f in formats for mime in FORMATS[f])),
        intersect=Intersect(parse_choice("INTERSECT", one.get("INTERSECT", "OVERLAPS"), [m.value for m in Intersect])),
        verb=verb,
        collections=parse_members("COLLECTION", values.get("COLLECTION", []), limits.collections),
        bands=parse_members("BAND", values.get("BAND", []), limits.bands),
    )


def parse_cutout(raw: RawParams, limits: Limits) -> CutoutRequest | CoaddRequest:
    """Validate a ``/sia/cutout`` request: a cutout of one image, or (MODE=mosaic or stack) a co-add.

    Raises
    ------
    UsageError
        Naming the first parameter at fault.
    """
    values, one = grouped(raw, _CUTOUT_SINGLE)
    field = _field(one, limits)
    assert field is not None  # _field raises instead, when required
    mime = parse_format(one.get("FORMAT", FITS))
    if mime not in CUTOUT_FORMATS:
        raise UsageError("FORMAT", f"a product is one of {', '.join(CUTOUT_FORMATS)}, got {one['FORMAT']!r}")
    generation = parse_generation(one, limits, [(field.width, field.height)])
    ids = [i.strip() for text in values.get("ID", []) for i in text.split(",")]
    if generation:
        return CoaddRequest(field, mime, generation, tuple(dict.fromkeys(i for i in ids if i)),
                            parse_members("COLLECTION", values.get("COLLECTION", []), limits.collections),
                            parse_members("BAND", values.get("BAND", []), limits.bands))
    if len(ids) > 1:
        raise UsageError("ID", "a cutout is of one image; give ID once (several only with MODE=mosaic or stack)")
    if not ids or not ids[0]:
        raise UsageError("ID", "required: give the archive image id of a /sia row")
    return CutoutRequest(ids[0], field, mime)


def cutout_path(image_id: str, field: Field, mime: str) -> str:
    """The ``/sia/cutout`` path and query of a product (relative to the service's base URL)."""
    query = {"ID": image_id, "POS": f"{field.ra!r},{field.dec!r}", "SIZE": f"{field.width!r},{field.height!r}",
             "FORMAT": mime}
    return "/sia/cutout?" + urlencode(query, safe=",/")


def find_rows(index: ArchiveIndex, query: SiaQuery, max_records: int) -> tuple[list[str], bool]:
    """The rows of a query, each a ``<TR>`` of all columns with ``{BASE}`` for the base URL.

    Opens each matching image's header only (in the calling thread). Returns the rows
    and whether they stop at ``max_records``. Images that turn out not to overlap are
    left out, and so are unreadable ones (logged).
    """
    field = query.field
    rows: list[str] = []
    for record in index.lookup(field, query.intersect, query.collections, query.bands):
        if len(rows) + len(query.products) > max_records:
            return rows, True
        try:
            with ParentImage(index.path_of(record), record.hdu, record.id, record.path) as parent:
                head = cutout_header(parent, field)
        except NoOverlapError:
            continue
        except (ArchiveError, OSError, ValueError) as exc:
            log.warning("/sia: %s skipped: %s", record.path, exc)
            continue
        for mime in query.products:
            values = product_metadata(head.header, head.shape, record, field, 0, mime,
                                      head.filesize if mime == FITS else None, None)
            rows.append(render_row(values, cutout_path(record.id, field, mime)))
    return rows, False


def answer(index: ArchiveIndex, query: SiaQuery, base: str, max_records: int) -> str:
    """The VOTable answering a (non-metadata) query, links absolute from ``base``."""
    rows, overflow = find_rows(index, query, max_records)
    field = query.field
    description = (f"siasync SIAP 1.0: cutouts of archive images for POS={field.ra:g},{field.dec:g} "
                   f"SIZE={field.width:g},{field.height:g} INTERSECT={query.intersect.value}")
    message = f"the response stops at the service's limit of {max_records} rows" if overflow else ""
    return results_document(query.columns, (with_base(row, base) for row in rows), description,
                            "OVERFLOW" if overflow else "OK", message)


def make_cutout(path: Path, record: ImageRecord, field: Field, mime: str) -> bytes:
    """The product of one (field, image) pair, exactly as an async job writes it.

    Raises
    ------
    UsageError
        When the field does not overlap the image (naming POS).
    ArchiveUnavailable
        When the image cannot be read.
    """
    try:
        with ParentImage(path, record.hdu, record.id, record.path) as parent:
            piece = cut(parent, field)
    except NoOverlapError as exc:
        raise UsageError("POS", f"the field does not overlap image {record.id}: {exc}") from None
    except (ArchiveError, OSError, ValueError) as exc:
        log.warning("/sia/cutout: %s cannot be read: %s", record.path, exc)
        raise ArchiveUnavailable(f"image {record.id} cannot be read from the archive now") from None
    return piece.to_fits() if mime == FITS else preview_bytes(piece.data, mime)


def make_coadd(task: CoaddTask, mime: str) -> bytes:
    """A mosaic or stack of one field, exactly as an async job writes it (with a cache of its own).

    Raises
    ------
    UsageError
        When no input covers the grid (naming POS).
    """
    cache = ParentCache()
    try:
        mosaics, warnings = build_coadd(task, cache)
    except NoOverlapError as exc:
        raise UsageError("POS", str(exc)) from None
    finally:
        cache.clear()
    for warning in warnings:
        log.warning("/sia/cutout: %s", warning)
    data = coadd_bytes(task, mosaics, mime)
    assert data is not None  # only a FITS stack's extra preview is ever left out
    return data


class SiaService:
    """Synchronous SIAP 1.0 over an archive index.

    Parameters
    ----------
    index : ArchiveIndex
    limits : Limits
    concurrency : int
        Requests reading the archive at once, each in its own thread.
    max_records : int
        Most rows of one query.
    """

    def __init__(self, index: ArchiveIndex, limits: Limits, concurrency: int, max_records: int,
                 slots: asyncio.Semaphore | None = None) -> None:
        self.index, self.limits, self.max_records = index, limits, max_records
        #: the requests reading the archive at once (``slots``: shared with other services, else ``concurrency``)
        self._slots = slots or asyncio.Semaphore(concurrency)

    async def query(self, raw: RawParams, base: str) -> str:
        """The VOTable answering a query; a malformed one gets QUERY_STATUS ERROR naming the parameter."""
        try:
            query = parse_query(raw, self.limits)
        except UsageError as exc:
            return error_document(exc.message)
        if not query.products:
            return results_document(query.columns, [], "siasync SIAP 1.0 metadata: the input parameters "
                                    "and the columns of a response", params=input_params(self.limits))
        async with self._slots:
            return await asyncio.to_thread(answer, self.index, query, base, self.max_records)

    async def cutout(self, raw: RawParams) -> tuple[bytes, str, str]:
        """One cutout: its bytes, MIME type and file name.

        Raises
        ------
        UsageError, NotFound, ArchiveUnavailable
        """
        request = parse_cutout(raw, self.limits)
        if isinstance(request, CoaddRequest):
            task = self._coadd_task(request)
            async with self._slots:
                data = await asyncio.to_thread(make_coadd, task, request.mime)
            return data, request.mime, f"{task.unit}.{EXTENSIONS[request.mime]}"
        record = self.index.by_id.get(request.image_id)
        if record is None:
            raise NotFound(f"ID: no image {request.image_id!r} in this archive")
        async with self._slots:
            data = await asyncio.to_thread(make_cutout, self.index.path_of(record), record, request.field,
                                           request.mime)
        return data, request.mime, f"{record.id}.{EXTENSIONS[request.mime]}"


    def _coadd_task(self, request: CoaddRequest) -> CoaddTask:
        """The one product of a synchronous mosaic or stack: its inputs, grid and bands.

        Raises
        ------
        NotFound
            For an ID not in the archive.
        UsageError
            When no image overlaps the field, or a mosaic would mix bands.
        """
        missing = [i for i in request.image_ids if i not in self.index.by_id]
        if missing:
            raise NotFound(f"ID: no image {missing[0]!r} in this archive")
        records = self.index.lookup(request.field, Intersect.OVERLAPS, request.collections, request.bands)
        if request.image_ids:
            records = [r for r in records if r.id in request.image_ids]
        if not records:
            raise UsageError("POS", "no archive image overlaps the field" + (" among the given IDs" if request.image_ids
                                                                              else ""))
        bands = sorted({r.band for r in records})
        mode = request.generation["mode"]
        if mode == "mosaic" and len(bands) > 1:
            raise UsageError("BAND", f"a mosaic is of one band, and the field has images in {', '.join(bands)}: "
                                     "give BAND (or MODE=stack for every band)")
        options = {k: v for k, v in request.generation.items() if k != "mode"}
        return coadd_tasks(0, request.field, records, [str(self.index.path_of(r)) for r in records], mode,
                           options.pop("grid"), (request.mime,), **options)[0]
