"""Synchronous SIAP 1.0: the ``/sia`` query and the ``/sia/cutout`` product behind each row.

Parameters are parsed with the job parameters' own parsers (`siasync.uws.params`). A query
row describes the cutout that ``/sia/cutout`` makes for the (field, image) pair, computed
from the archive index alone (`cutout.siap.cutout_metadata`: no file is opened per row);
the cutout is the one an async job writes for that pair, byte for byte. With MODE=mosaic
or stack, the rows describe the generated products of the field, and their access
references make them through ``/sia/cutout`` exactly as an async job stages them.
Files are opened, read and closed in worker threads, a fresh `ParentImage` per request
(nothing shared between threads), and at most ``concurrency`` requests work at once.

**Failures.** ``/sia`` never answers 500: a failure is a QUERY_STATUS=ERROR VOTable, and
an image that cannot be described is left out with an INFO naming it. ``/sia/cutout``
says whether a failure is transient (503 with Retry-After: the archive's storage cannot be
read now) or permanent (500 naming the damaged image and the reason).

**Remote collections** named in COLLECTION add their images' rows (`siasync.vo.remote_rows`),
marked in a ``remote`` column that a service with remote collections always has; their
``/sia/cutout`` references cut the image from the download cache, as a job does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from urllib.parse import quote_plus, urlencode

import numpy as np

from cutout.engine import ParentCache, ParentImage, cut
from cutout.errors import FieldError, NoOverlapError
from cutout.index import ArchiveIndex
from cutout.preview import preview_bytes
from cutout.scan import ImageRecord
from cutout.siap import COLUMNS, Column, cutout_constants, generated_metadata
from cutout.sky import Field, Intersect
from siasync.errors import NotFound, ServiceError, UsageError
from siasync.remote.catalog import RemoteCatalog
from siasync.remote.faults import RemoteError
from siasync.remote.images import RemoteImage
from siasync.staging.worker import (
    EXTENSIONS,
    CoaddTask,
    UnreadableInputs,
    build_coadd,
    coadd_bytes,
    coadd_tasks,
    parent_problem,
)
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
    products_of,
)
from siasync.vo.remote_rows import REMOTE_COLUMN, RemoteRows, find_images, mark, sia_rows
from siasync.vo.sia_votable import VERB_COLUMNS, InputParam, error_document, results_document, select_cells
from storage.table import BASE, cell_text, escape, render_row, with_base

log = logging.getLogger(__name__)
FITS = "image/fits"
#: the formats ``/sia/cutout`` makes
CUTOUT_FORMATS = ("image/fits", "image/png", "image/jpeg")
#: parameters given at most once, per endpoint (others repeat, or are ignored as DALI asks)
_QUERY_SINGLE = ("POS", "SIZE", "FORMAT", "INTERSECT", "VERB", "MODE", *GENERATION_PARAMETERS)
_CUTOUT_SINGLE = ("POS", "SIZE", "FORMAT", "MODE", "PRODUCT", *GENERATION_PARAMETERS)
_QUOTED = {m: quote_plus(m, safe=",/") for m in CUTOUT_FORMATS}
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]+")  # image ids are (`cutout.scan.image_id`): no quoting needed
#: seconds a client is asked to wait before trying again a cutout whose parent cannot be read now
RETRY_AFTER_S = 10
#: errors of the archive's storage that may pass (a disk, a mount, a file handle, memory)
_TRANSIENT = {errno.EIO, errno.ENOENT, errno.ESTALE, errno.ETIMEDOUT, errno.EAGAIN, errno.EMFILE, errno.ENFILE,
              errno.ENOMEM, errno.EBUSY, errno.EINTR, errno.ENOTCONN, errno.EHOSTDOWN, errno.EACCES}


class ArchiveUnavailable(ServiceError):
    """An indexed archive image that cannot be read now (its storage): try again later."""

    status = 503
    name = "ServiceUnavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message, {"Retry-After": str(RETRY_AFTER_S)})


class ArchiveDamaged(ServiceError):
    """An indexed archive image that cannot be cut (damaged, or not what the index says): asking again will not help."""

    status = 500
    name = "ArchiveError"


def is_transient(exc: BaseException) -> bool:
    """Whether reading an archive image failed for a reason that may pass (storage), not a damaged file."""
    return isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno in _TRANSIENT)


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
    #: MODE=mosaic or stack: the `StagingRequest` keywords (mode, grid, combine, match_background); empty for cutouts
    generation: dict = dataclass_field(default_factory=dict)
    #: the query's own parameters that shape generated products, repeated in their access references
    echo: tuple[tuple[str, str], ...] = ()

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
    #: which of the field's generated products (``mosaic-<band>`` or ``stack``), as a job names them
    product: str | None = None


def input_params(limits: Limits) -> tuple[InputParam, ...]:
    """The input parameters of ``/sia``, with the archive's collections and bands."""
    return (
        InputParam("POS", "char", "ICRS RA,Dec of the field centre, in degrees", "deg", "pos.eq", required=True),
        InputParam("SIZE", "char", f"field width[,height] on the sky, in degrees, at most {limits.max_size_deg:g}: "
                   "a north-up TAN box centred on POS; 0: the whole images that contain POS", "deg", "instr.fov",
                   required=True),
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
        InputParam("MODE", "char", "cutout: each image's cutout; mosaic: a co-add per band; stack: every band on one "
                   "grid (with the SIAP image-generation parameters NAXIS, CFRAME, CDELT, ...)", default="cutout",
                   options=("cutout", "mosaic", "stack"), standard=False),
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
    field = _field(one, limits, required=not metadata)
    generation = parse_generation(one, limits, [(field.width, field.height)] if field else [])
    products = tuple(dict.fromkeys(mime for f in formats for mime in FORMATS[f]))
    if generation:
        products = tuple(dict.fromkeys(m for f in formats if FORMATS[f] for m in products_of(generation["mode"], f)))
    echo = tuple((name, one[name]) for name in ("MODE", *GENERATION_PARAMETERS) if name in one and generation)
    echo += tuple((name, value) for name in ("COLLECTION", "BAND") for value in values.get(name, []) if generation)
    return SiaQuery(
        field=field,
        products=products,
        intersect=Intersect(parse_choice("INTERSECT", one.get("INTERSECT", "OVERLAPS"), [m.value for m in Intersect])),
        verb=verb,
        collections=parse_members("COLLECTION", values.get("COLLECTION", []), limits.collections),
        bands=parse_members("BAND", values.get("BAND", []), limits.bands),
        generation=generation,
        echo=echo,
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
                            parse_members("BAND", values.get("BAND", []), limits.bands), one.get("PRODUCT"))
    if "PRODUCT" in one:
        raise UsageError("PRODUCT", "applies only to MODE=mosaic or MODE=stack")
    if len(ids) > 1:
        raise UsageError("ID", "a cutout is of one image; give ID once (several only with MODE=mosaic or stack)")
    if not ids or not ids[0]:
        raise UsageError("ID", "required: give the archive image id of a /sia row")
    return CutoutRequest(ids[0], field, mime)


def cutout_path(image_id: str, field: Field, mime: str) -> str:
    """The ``/sia/cutout`` path and query of a product (relative to the service's base URL).

    Image ids are URL-safe and the numbers need no quoting (as `urlencode` with ``safe=",/"``
    would write them), so the query is formatted directly: this is per row.
    """
    image = image_id if _SAFE_ID.fullmatch(image_id) else quote_plus(image_id, safe=",/")
    return (f"/sia/cutout?ID={image}&POS={field.ra!r},{field.dec!r}"
            f"&SIZE={_size_text(field)}&FORMAT={_QUOTED.get(mime) or quote_plus(mime, safe=',/')}")


def coadd_path(query: SiaQuery, unit: str, mime: str) -> str:
    """The ``/sia/cutout`` path and query that make one generated product of a ``/sia`` query's field."""
    field = query.field
    params = [("POS", f"{field.ra!r},{field.dec!r}"), ("SIZE", _size_text(field)), ("FORMAT", mime),
              *query.echo, ("PRODUCT", unit)]
    if query.intersect is not Intersect.OVERLAPS:
        params.append(("INTERSECT", query.intersect.value))
    return "/sia/cutout?" + urlencode(params, safe=",/")


def _size_text(field: Field) -> str:
    return "0" if field.is_point else f"{field.width!r},{field.height!r}"


@dataclass
class Rows:
    """The rows of a query, each a ``<TR>`` of all columns with ``{BASE}`` for the base URL."""

    rows: list[str] = dataclass_field(default_factory=list)
    #: whether they stop at the service's limit
    overflow: bool = False
    #: images left out because they could not be described: (image id, reason)
    omitted: list[tuple[str, str]] = dataclass_field(default_factory=list)
    #: whether the rows hold the query's columns only (else every column, to be cut down)
    cut: bool = False
    #: per row, the remote service of its images (generated products of remote inputs), where any
    remotes: list[str] = dataclass_field(default_factory=list)


class RowTemplates:
    """Row templates per (image, format): the cells that never change pre-rendered, the others filled per row.

    A row so rendered is the string `storage.table.render_row` makes of
    `cutout.siap.cutout_metadata` (the tests check it), in a fraction of the time: most of a
    row is the same for every cutout of an image.
    """

    def __init__(self, size: int = 8192) -> None:
        self._templates: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def template(self, record: ImageRecord, geometry: object, mime: str,
                 columns: tuple[Column, ...] = COLUMNS) -> str:
        """The row of ``columns`` with every cell filled but those of `VARIABLE` (``{name}`` fields)."""
        key = (record.id, mime, len(columns))
        with self._lock:
            found = self._templates.get(key)
            if found is not None:
                return found
        constants = cutout_constants(record, geometry, mime)
        # a /sia row is of field 0 and has no result id
        constants.update(title=f"{record.collection} {record.band} {record.id} field 0", field=0, result_id=None)
        parts = []
        for column in columns:
            if column.name in VARIABLE:
                parts.append(f"<TD>{{{column.name}}}</TD>")
            else:
                parts.append(f"<TD>{cell_text(constants.get(column.name))}</TD>".replace("{", "{{").replace("}", "}}"))
        template = "<TR>" + "".join(parts) + "</TR>\n"
        with self._lock:
            self._templates[key] = template
            while len(self._templates) > self._size:
                self._templates.popitem(last=False)
        return template

    def render(self, record: ImageRecord, geometry: object, box: tuple[int, int, int, int], field: Field,
               mime: str, access_path: str, columns: tuple[Column, ...] = COLUMNS) -> str:
        """A ``/sia`` row (field 0, no result id) of the cutout ``box`` of ``record``, of ``columns`` only.

        The values are those of `cutout.siap.cutout_variables`, formatted as `storage.table.render_row`
        formats them.
        """
        y0, y1, x0, x1 = box
        ny, nx = y1 - y0, x1 - x0
        if (ny, nx) == geometry.shape:
            ra, dec = geometry.centre()
        else:
            ras, decs = geometry.to_sky(np.array([x0 + (nx - 1) / 2]), np.array([y0 + (ny - 1) / 2]))
            ra, dec = float(ras[0]), float(decs[0])
        c1, c2 = geometry.crpix
        size = record.cutout_filesize((ny, nx)) if mime == "image/fits" else None
        return self.template(record, geometry, mime, columns).format(
            access_url=f"{BASE}{escape(access_path)}", ra=repr(ra), dec=repr(dec), naxis=f"{nx} {ny}",
            crpix=f"{c1 - x0!r} {c2 - y0!r}", filesize="" if size is None else str(size),
            field_ra=repr(field.ra), field_dec=repr(field.dec))


#: the cells of a /sia row filled per row
VARIABLE = ("ra", "dec", "naxis", "crpix", "filesize", "field_ra", "field_dec", "access_url")


def find_rows(index: ArchiveIndex, query: SiaQuery, max_records: int, templates: RowTemplates | None = None,
              remote_inputs: Sequence[tuple[str, RemoteImage]] = ()) -> Rows:
    """The rows of a query, from the index alone (no file is opened).

    Images that turn out not to overlap are left out, and so are those that cannot be
    described (logged, and listed in `Rows.omitted`). ``remote_inputs`` are the remote images
    (and their service's URL) that a MODE=mosaic or stack query co-adds with the archive's.
    """
    if query.generation:
        return _generated_rows(index, query, max_records, remote_inputs)
    templates = templates or RowTemplates()
    field = query.field
    found = Rows(cut=True)
    for record in index.lookup(field, query.intersect, query.collections, query.bands):
        if len(found.rows) + len(query.products) > max_records:
            found.overflow = True
            return found
        try:
            geometry = index.geometry(record)
            box = geometry.box(field)
            rows = [templates.render(record, geometry, box, field, mime, cutout_path(record.id, field, mime),
                                     query.columns) for mime in query.products]
        except NoOverlapError:
            continue
        except Exception as exc:  # one image never takes the query down
            log.warning("/sia: %s", parent_problem(record, exc))
            found.omitted.append((record.id, parent_problem(record, exc)))
            continue
        found.rows += rows
    return found


def _generated_rows(index: ArchiveIndex, query: SiaQuery, max_records: int,
                    remote_inputs: Sequence[tuple[str, RemoteImage]] = ()) -> Rows:
    """Rows of MODE=mosaic or stack: the field's generated products, described from their grid."""
    field = query.field
    found = Rows()
    records = index.lookup(field, Intersect.OVERLAPS, query.collections, query.bands)
    services = {image.id: url for url, image in remote_inputs}
    options = {k: v for k, v in query.generation.items() if k not in ("mode", "grid")}
    tasks = coadd_tasks(0, field, records + [provisional(image, index) for _, image in remote_inputs],
                        [str(index.path_of(r)) for r in records] + [""] * len(remote_inputs),
                        query.generation["mode"], query.generation["grid"], query.products, **options)
    for task in tasks:
        mimes = [m for m in task.products
                 if not (task.unit == "stack" and m != "image/fits" and "image/fits" in task.products
                         and len(task.bands) < 3)]  # a FITS stack's preview is in colour, or none
        for mime in mimes:
            if len(found.rows) >= max_records:
                found.overflow = True
                return found
            values = generated_metadata(task.grid.header(), task.grid.shape, task.records, field, 0, mime, None, None)
            found.rows.append(render_row(values, coadd_path(query, task.unit, mime)))
            found.remotes.append(" ".join(sorted({services[r.id] for r in task.records if r.id in services})))
    return found


def provisional(image: RemoteImage, index: ArchiveIndex) -> ImageRecord:
    """A remote image's record for planning a co-add: its pixel scale never finer than the archive's finest (the
    scale a query's output size was checked at)."""
    record = image.provisional_record()
    finest = min((r.scale for r in index.records), default=1.0)
    return dataclasses.replace(record, scale=max(record.scale, finest) if math.isfinite(record.scale) else finest)


def answer(index: ArchiveIndex, query: SiaQuery, base: str, max_records: int, templates: RowTemplates | None = None,
           remote: RemoteRows | None = None, remote_inputs: Sequence[tuple[str, RemoteImage]] = ()) -> str:
    """The VOTable answering a (non-metadata) query, links absolute from ``base``.

    With ``remote`` (a service with remote collections), the rows have the `REMOTE_COLUMN`, and the
    remote collections' rows come after the archive's.
    """
    found = find_rows(index, query, max_records, templates, remote_inputs)
    columns = query.columns
    notes = [("OMITTED", image_id, reason) for image_id, reason in found.omitted]
    if remote is not None:
        rows = [mark(row if found.cut else select_cells(row, columns), found.remotes[i] if found.remotes else "")
                for i, row in enumerate(found.rows)]
        room = max(0, max_records - len(rows))
        found.overflow = found.overflow or remote.overflow or len(remote.rows) > room
        found.rows, found.cut, columns = rows + remote.rows[:room], True, (*columns, REMOTE_COLUMN)
        notes += [("OMITTED", image_id, reason) for image_id, reason in remote.omitted]
        notes += [("REMOTE", "unavailable", text) for text in remote.failures]
    field = query.field
    size = "0 (whole images containing POS)" if field.is_point else f"{field.width:g},{field.height:g}"
    what = f"MODE={query.generation['mode']} products" if query.generation else "cutouts"
    description = (f"siasync SIAP 1.0: {what} of archive images for POS={field.ra:g},{field.dec:g} "
                   f"SIZE={size} INTERSECT={query.intersect.value}")
    message = f"the response stops at the service's limit of {max_records} rows" if found.overflow else ""
    return results_document(columns, (with_base(row, base) for row in found.rows), description,
                            "OVERFLOW" if found.overflow else "OK", message, notes=notes, cut=found.cut)


def make_cutout(path: Path, record: ImageRecord, field: Field, mime: str) -> bytes:
    """The product of one (field, image) pair, exactly as an async job writes it.

    Raises
    ------
    UsageError
        When the field does not overlap the image (naming POS).
    ArchiveUnavailable
        When the image cannot be read now (its storage: 503, try again).
    ArchiveDamaged
        When the image cannot be cut: damaged, or not what the index says (500, with the reason).
    """
    try:
        with ParentImage(path, record.hdu, record.id, record.path, record.indexed) as parent:
            piece = cut(parent, field)
            return piece.to_fits() if mime == FITS else preview_bytes(piece.data, mime)
    except NoOverlapError as exc:
        raise UsageError("POS", f"the field does not overlap image {record.id}: {exc}") from None
    except Exception as exc:
        problem = parent_problem(record, exc)
        log.warning("/sia/cutout: %s", problem)
        if is_transient(exc):
            raise ArchiveUnavailable(f"image {record.id} cannot be read from the archive now: "
                                     f"{problem.split(' skipped: ', 1)[-1]}") from None
        raise ArchiveDamaged(f"image {record.id} cannot be cut: {problem.split(' skipped: ', 1)[-1]}") from None


def _within_inputs(task: CoaddTask) -> CoaddTask:
    """The task, unless it co-adds more images than ``MAX_COADD_INPUTS`` (400 naming it)."""
    too_many = task.too_many_inputs()
    if too_many is not None:
        raise UsageError("MAX_COADD_INPUTS", too_many)
    return task


def make_coadd(task: CoaddTask, mime: str) -> bytes:
    """A mosaic or stack of one field, exactly as an async job writes it (with a cache of its own).

    Raises
    ------
    UsageError
        When no input covers the grid (naming POS).
    ArchiveUnavailable
        When no input could be read now (503, try again).
    ArchiveDamaged
        When the product cannot be made (500, with the reason).
    """
    cache = ParentCache()
    try:
        mosaics, warnings = build_coadd(task, cache)
        for warning in warnings:
            log.warning("/sia/cutout: %s", warning)
        data = coadd_bytes(task, mosaics, mime)
    except NoOverlapError as exc:
        raise UsageError("POS", str(exc)) from None
    except UnreadableInputs as exc:  # its images cannot be read (or fetched from their remote) now
        log.warning("/sia/cutout: %s", exc)
        raise ArchiveUnavailable(f"{task.unit} cannot be made now: {exc}") from None
    except Exception as exc:
        log.warning("/sia/cutout: %s of field %s not made: %s: %s", task.unit, task.field_index,
                    type(exc).__name__, exc)
        if is_transient(exc):
            raise ArchiveUnavailable(f"{task.unit} cannot be made now: {exc}") from None
        raise ArchiveDamaged(f"{task.unit} cannot be made: {type(exc).__name__}: {exc}") from None
    finally:
        cache.clear()
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
    remotes : RemoteCatalog, optional
        The archive's remote collections, which a query or cutout reaches by naming them in COLLECTION.
    """

    def __init__(self, index: ArchiveIndex, limits: Limits, concurrency: int, max_records: int,
                 slots: asyncio.Semaphore | None = None, remotes: RemoteCatalog | None = None) -> None:
        self.index, self.limits, self.max_records = index, limits, max_records
        #: the requests reading the archive at once (``slots``: shared with other services, else ``concurrency``)
        self._slots = slots or asyncio.Semaphore(concurrency)
        self._templates = RowTemplates()
        self.remotes = remotes

    async def query(self, raw: RawParams, base: str) -> str:
        """The VOTable answering a query; a malformed one gets QUERY_STATUS ERROR naming the parameter.

        Never raises: an unexpected failure is a QUERY_STATUS ERROR document too.
        """
        try:
            query = parse_query(raw, self.limits)
        except UsageError as exc:
            return error_document(exc.message)
        try:
            marked = (REMOTE_COLUMN,) if self.remotes else ()
            if not query.products:
                return results_document((*query.columns, *marked), [], "siasync SIAP 1.0 metadata: the input "
                                        "parameters and the columns of a response", params=input_params(self.limits))
            remote, inputs = await self._remote(query) if self.remotes else (None, [])
            async with self._slots:
                return await asyncio.to_thread(answer, self.index, query, base, self.max_records, self._templates,
                                               remote, inputs)
        except Exception as exc:  # /sia never answers 500
            log.exception("/sia failed")
            return error_document(f"the query could not be answered: {type(exc).__name__}: {exc}")

    async def cutout(self, raw: RawParams) -> tuple[bytes, str, str]:
        """One cutout: its bytes, MIME type and file name.

        Raises
        ------
        UsageError, NotFound, ArchiveUnavailable
        """
        request = parse_cutout(raw, self.limits)
        if isinstance(request, CoaddRequest):
            specs = self.remotes.among(request.collections) if self.remotes else []
            found, failures = (await find_images(self.remotes, specs, request.field, Intersect.OVERLAPS,
                                                 request.bands) if specs else ([], []))
            if failures:
                raise ArchiveUnavailable("; ".join(failures))
            task = self._coadd_task(request, found)
            async with self._slots:
                data = await asyncio.to_thread(make_coadd, task, request.mime)
            return data, request.mime, f"{task.unit}.{EXTENSIONS[request.mime]}"
        record = self.index.by_id.get(request.image_id)
        if record is None:
            return await self._remote_cutout(request)
        async with self._slots:
            data = await asyncio.to_thread(make_cutout, self.index.path_of(record), record, request.field,
                                           request.mime)
        return data, request.mime, f"{record.id}.{EXTENSIONS[request.mime]}"

    async def _remote(self, query: SiaQuery) -> tuple[RemoteRows, list[tuple[str, RemoteImage]]]:
        """The rows of the query's remote collections; with MODE=mosaic or stack, their images to co-add."""
        specs = self.remotes.among(query.collections)
        if not specs:
            return RemoteRows(), []
        if query.generation:
            found, failures = await find_images(self.remotes, specs, query.field, Intersect.OVERLAPS, query.bands)
            return RemoteRows(failures=failures), [(spec.url, image) for spec, image in found]
        return await sia_rows(self.remotes, specs, query.field, query.intersect, query.bands, query.products,
                              query.columns, self._templates, self._slots, self.max_records, cutout_path), []

    async def _remote_cutout(self, request: CutoutRequest) -> tuple[bytes, str, str]:
        """A cutout of a remote collection's image (a ``/sia`` row's), cut from the download cache.

        Raises
        ------
        NotFound
            When the id names no image of the archive nor of a remote collection.
        ArchiveUnavailable
            When the remote could not give the image (after its retries): try again later.
        """
        image = await self.remotes.image(request.image_id) if self.remotes else None
        if image is None:
            raise NotFound(f"ID: no image {request.image_id!r} in this archive")
        async with self._slots:
            try:
                record, path, _ = await self.remotes.fetch(image)
            except RemoteError as exc:
                raise ArchiveUnavailable(str(exc)) from None
            data = await asyncio.to_thread(make_cutout, path, record, request.field, request.mime)
        return data, request.mime, f"{record.id}.{EXTENSIONS[request.mime]}"

    def _coadd_task(self, request: CoaddRequest, remote: Sequence[tuple[object, RemoteImage]] = ()) -> CoaddTask:
        """The one product of a synchronous mosaic or stack: its inputs, grid and bands.

        Raises
        ------
        NotFound
            For an ID not in the archive.
        UsageError
            When no image overlaps the field, or a mosaic would mix bands.
        """
        images = {image.id: image for _, image in remote}
        missing = [i for i in request.image_ids if i not in self.index.by_id and i not in images]
        if missing:
            raise NotFound(f"ID: no image {missing[0]!r} in this archive")
        records = self.index.lookup(request.field, Intersect.OVERLAPS, request.collections, request.bands)
        paths = [str(self.index.path_of(r)) for r in records] + [""] * len(images)
        records += [provisional(image, self.index) for image in images.values()]
        if request.image_ids:
            paths = [p for p, r in zip(paths, records, strict=True) if r.id in request.image_ids]
            records = [r for r in records if r.id in request.image_ids]
        if not records:
            raise UsageError("POS", "no archive image overlaps the field" + (" among the given IDs" if request.image_ids
                                                                              else ""))
        bands = sorted({r.band for r in records})
        mode = request.generation["mode"]
        options = {k: v for k, v in request.generation.items() if k != "mode"}
        tasks = coadd_tasks(0, request.field, records, paths, mode, options.pop("grid"), (request.mime,), **options,
                            max_inputs=self.limits.max_coadd_inputs)
        if images:
            tasks = [dataclasses.replace(t, remotes=tuple((images[r.id], self.remotes.source(images[r.id].remote))
                                                          if r.id in images else None for r in t.records))
                     for t in tasks]
        if request.product is not None:
            chosen = [t for t in tasks if t.unit == request.product]
            if not chosen:
                raise UsageError("PRODUCT", f"the field's products are {', '.join(t.unit for t in tasks)}; "
                                            f"got {request.product!r}")
            return _within_inputs(chosen[0])
        if mode == "mosaic" and len(bands) > 1:
            raise UsageError("BAND", f"a mosaic is of one band, and the field has images in {', '.join(bands)}: "
                                     "give BAND (or MODE=stack for every band)")
        return _within_inputs(tasks[0])
