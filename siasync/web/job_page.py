"""The job page's content: its results grouped by field, a page of fields at a time, with filters.

A page shows `FIELDS_PER_PAGE` fields and at most `ROWS_PER_FIELD` rows of each, so its size
does not grow with the job: a 10,000-field job's page costs what a 10-field job's does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from cutout.index import ArchiveIndex
from siasync.errors import UsageError
from siasync.uws.jobs import ACTIVE
from siasync.uws.params import RawParams, StagingRequest, grouped, parse_choice, parse_int
from siasync.uws.representations import image_label
from storage.browse import FieldProduct, JobBrowser
from storage.jobs import Job

FIELDS_PER_PAGE = 25
ROWS_PER_FIELD = 40
VIEWS = ("list", "grid")
PREVIEWS = ("image/png", "image/jpeg")
#: the page's own query parameters (any other is ignored, like the job's WAIT)
PAGE_PARAMETERS = ("PAGE", "BAND", "COLLECTION", "VIEW")


@dataclass
class ImageGroup:
    """The products of one image (or co-add) in a field."""

    image_id: str
    collection: str
    band: str
    products: list[FieldProduct] = field(default_factory=list)

    @property
    def preview(self) -> FieldProduct | None:
        """The image's PNG or JPEG product, if it has one."""
        return next((p for p in self.products if p.mime_type in PREVIEWS), None)


@dataclass
class FieldGroup:
    """One field of the job: its position and size, and its images so far."""

    index: int
    ra: float
    dec: float
    size: tuple[float, float]
    images: list[ImageGroup] = field(default_factory=list)
    #: rows of the field not shown (beyond `ROWS_PER_FIELD`)
    hidden: int = 0
    #: no archive image overlaps the field (known once the job has looked)
    empty: bool = False


@dataclass(frozen=True)
class PageQuery:
    """The page asked for: a page number, filters and a view."""

    page: int = 1
    band: str | None = None
    collection: str | None = None
    view: str = "list"

    @classmethod
    def parse(cls, raw: RawParams) -> PageQuery:
        """Validate the page's parameters."""
        _, one = grouped([(n, v) for n, v in raw if n in PAGE_PARAMETERS], PAGE_PARAMETERS)
        page = parse_int("PAGE", one["PAGE"]) if one.get("PAGE") else 1
        if page < 1:
            raise UsageError("PAGE", f"must be 1 or more, got {one['PAGE']!r}")
        view = parse_choice("VIEW", one["VIEW"], [v.upper() for v in VIEWS]).lower() if one.get("VIEW") else "list"
        return cls(page, one.get("BAND") or None, one.get("COLLECTION") or None, view)

    def link(self, **changes: Any) -> str:
        """The query string of this page with some parameters changed."""
        values = {"PAGE": self.page, "BAND": self.band, "COLLECTION": self.collection, "VIEW": self.view, **changes}
        kept = [(k, v) for k, v in values.items() if v not in (None, "") and (k, v) not in (("PAGE", 1),
                                                                                             ("VIEW", "list"))]
        return "?" + urlencode(kept) if kept else "?"


def eta(job: Job, now: datetime | None = None) -> str:
    """The quote as a wait ("in about 3 min"), or "" when there is none or the job has ended."""
    if job.quote is None or job.phase not in ACTIVE:
        return ""
    seconds = (job.quote - (now or datetime.now(UTC))).total_seconds()
    return "any moment now" if seconds < 1 else f"in about {duration(seconds)}"


def duration(seconds: float) -> str:
    """A duration in words: 40 s, 3 min, 2 h 5 min."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds // 3600:.0f} h {seconds % 3600 / 60:.0f} min"


def summary(job: Job) -> list[tuple[str, str]]:
    """The parameters in short: (name, value), positions counted instead of listed."""
    out: list[tuple[str, str]] = []
    request = StagingRequest.from_spec(job.spec)
    fields = len(request.positions)
    uploads = [v.partition(",")[0] for n, v in job.parameters if n == "UPLOAD"]
    out.append(("Fields", f"{fields}" + (f" (from {', '.join(uploads)})" if uploads else "")))
    if request.size:
        out.append(("SIZE", ", ".join(f"{s:g}°" for s in dict.fromkeys(request.size))))
    out.append(("FORMAT", request.format))
    out.append(("INTERSECT", request.intersect))
    if request.mode != "cutout":
        out.append(("MODE", request.mode))
    for name in ("COLLECTION", "BAND"):
        chosen = request.collections if name == "COLLECTION" else request.bands
        out.append((name, ", ".join(chosen) or "all"))
    shown = {"POS", "SIZE", "FORMAT", "INTERSECT", "MODE", "COLLECTION", "BAND", "UPLOAD", "RUNID"}
    out += [(n, v) for n, v in job.parameters if n not in shown]
    return out


class JobPage:
    """Builds the job page's context from the store's read-only queries and the archive index."""

    def __init__(self, browser: JobBrowser, index: ArchiveIndex) -> None:
        self.browser = browser
        self.index = index

    async def context(self, job: Job, query: PageQuery) -> dict[str, Any]:
        """Everything the template shows for ``job`` and ``query``."""
        request = StagingRequest.from_spec(job.spec)
        counts = await self.browser.image_counts(job.id)
        bands: dict[str, int] = {}
        collections: dict[str, int] = {}
        for image, n in counts.items():
            collection, band = image_label(self.index, image)
            if band:
                bands[band] = bands.get(band, 0) + n
            if collection:
                collections[collection] = collections.get(collection, 0) + n
        for name, value, known in (("BAND", query.band, bands), ("COLLECTION", query.collection, collections)):
            if value is not None and value not in known and value not in (self.index.bands if name == "BAND"
                                                                          else self.index.collections):
                raise UsageError(name, f"no {name.lower()} {value!r} in this archive")
        filtered = query.band is not None or query.collection is not None
        images = [i for i in counts if _matches(image_label(self.index, i), query)] if filtered else None
        total = (await self.browser.count_fields_with(job.id, images) if images else 0) if filtered \
            else len(request.positions)
        pages = max(1, math.ceil(total / FIELDS_PER_PAGE))
        if query.page > pages:
            raise UsageError("PAGE", f"this view has {pages} page{'s' if pages > 1 else ''} of {FIELDS_PER_PAGE} "
                                     f"fields, got {query.page}")
        start = (query.page - 1) * FIELDS_PER_PAGE
        if filtered:
            shown = await self.browser.fields_with(job.id, images, start, FIELDS_PER_PAGE) if images else []
        else:
            shown = list(range(start, min(start + FIELDS_PER_PAGE, total)))
        groups = await self._groups(job, request, shown, images)
        return {"query": query, "groups": groups, "page": query.page, "pages": pages, "fields_shown": total,
                "filtered": filtered, "bands": sorted(bands.items()), "collections": sorted(collections.items()),
                "first_field": shown[0] if shown else 0, "last_field": shown[-1] if shown else -1,
                "summary": summary(job), "eta": eta(job), "previews": any(p in PREVIEWS for p in request.products),
                "table_rows": sum(counts.values())}

    async def _groups(self, job: Job, request: StagingRequest, shown: list[int],
                      images: list[str] | None) -> list[FieldGroup]:
        if not shown:
            return []
        empty = set(job.info.get("empty_fields", []))
        groups = {}
        for i in shown:
            box = request.field(i)
            groups[i] = FieldGroup(i, box.ra, box.dec, (box.width, box.height), empty=i in empty)
        rows = await self.browser.field_products(job.id, shown[0], shown[-1], images,
                                                 shown if images is not None else None, ROWS_PER_FIELD)
        for row in rows:
            group = groups[row.field]
            group.hidden = row.in_field - ROWS_PER_FIELD if row.in_field > ROWS_PER_FIELD else 0
            image = next((g for g in group.images if g.image_id == row.image_id), None)
            if image is None:
                image = ImageGroup(row.image_id, *image_label(self.index, row.image_id))
                group.images.append(image)
            image.products.append(row)
        return [groups[i] for i in shown]


def _matches(label: tuple[str, str], query: PageQuery) -> bool:
    collection, band = label
    return (query.band is None or band == query.band) and (query.collection is None or collection == query.collection)
