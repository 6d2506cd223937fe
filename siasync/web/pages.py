"""Pages for people: the landing page with a job form."""

from __future__ import annotations

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.response import Template

from cutout.index import ArchiveIndex
from cutout.sky import Intersect
from siasync.settings import Settings
from siasync.vocabulary import FORMATS


class Pages(Controller):
    """``/``: what the service holds, and a form that creates a job."""

    path = "/"

    @get("/", summary="Landing page", include_in_schema=False)
    async def landing(self, index: NamedDependency[ArchiveIndex], settings: NamedDependency[Settings]) -> Template:
        counts: dict[tuple[str, str], int] = {}
        for record in index.records:
            counts[record.collection, record.band] = counts.get((record.collection, record.band), 0) + 1
        return Template(template_name="index.html", media_type="text/html", context={
            "counts": sorted(counts.items()), "images": len(index), "collections": index.collections,
            "bands": index.bands, "formats": list(FORMATS), "intersects": [m.value for m in Intersect],
            "max_size": settings.max_size_deg, "max_fields": settings.max_fields})
