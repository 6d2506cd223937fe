"""Pages for people: the landing page with its job form, and the sky picture of the archive."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.response import Template

from cutout.index import ArchiveIndex
from cutout.mosaic import COMBINES, PROJECTIONS
from cutout.sky import Intersect
from siasync.errors import ServiceError, UsageError
from siasync.remote.catalog import RemoteCatalog
from siasync.settings import Settings
from siasync.uws.params import JOB_PARAMETERS
from siasync.vocabulary import FORMATS, MODES
from siasync.web import sky

#: the parameters the landing form has a field for (an error about another one is shown above the form)
FORM_PARAMETERS = ("POS", "UPLOAD", "SIZE", "FORMAT", "INTERSECT", "COLLECTION", "BAND", "MODE", "NAXIS", "CDELT",
                   "ROTANG", "PROJ", "COMBINE", "BACKGROUND", "RUNID", "START", "PHASE")


class ArchivePicture:
    """The archive's sky picture, drawn once: the archive does not change while the service runs."""

    def __init__(self, index: ArchiveIndex) -> None:
        self.svg = sky.archive_svg(index)
        self.text = sky.describe_archive(index)
        self.etag = f'"{hashlib.sha256(self.svg.encode()).hexdigest()[:16]}"'
        self.height = int(float(re.search(r'height="([0-9.]+)"', self.svg).group(1)))


def landing_context(index: ArchiveIndex, settings: Settings, picture: ArchivePicture,
                    values: dict[str, list[str]] | None = None, error: UsageError | None = None,
                    remotes: RemoteCatalog | None = None) -> dict[str, Any]:
    """The landing page: the archive and its remote collections, and the job form (with the values and the error
    of a refused submission)."""
    counts: dict[tuple[str, str], int] = {}
    for record in index.records:
        counts[record.collection, record.band] = counts.get((record.collection, record.band), 0) + 1
    specs = [remotes.specs[name] for name in remotes.names] if remotes else []
    return {"counts": sorted(counts.items()), "images": len(index), "collections": index.collections
            + [spec.name for spec in specs], "bands": sorted(set(index.bands) | (remotes.bands if remotes else set())),
            "remotes": [{"name": spec.name, "what": spec.describe(), "bands": ", ".join(spec.all_bands),
                         "title": spec.title} for spec in specs],
            "formats": list(FORMATS), "intersects": [m.value for m in Intersect],
            "modes": list(MODES), "projections": list(PROJECTIONS), "combines": list(COMBINES),
            "max_size": settings.max_size_deg, "max_fields": settings.max_fields, "values": values or {},
            "error": form_error(error), "form_params": FORM_PARAMETERS, "sky_text": picture.text,
            "sky_height": picture.height}


def form_error(error: ServiceError | None) -> dict[str, str] | None:
    """What a page shows of an error: the text the API answers, and the parameter it belongs next to."""
    if error is None:
        return None
    return {"param": getattr(error, "param", "").upper(), "text": error.render().strip()}


def form_values(params: list[tuple[str, str]]) -> dict[str, list[str]]:
    """A submission's values by parameter name, as the form shows them again."""
    values: dict[str, list[str]] = {}
    for name, value in params:
        if name in JOB_PARAMETERS:
            values.setdefault(name, []).append(value)
    return values


class Pages(Controller):
    """``/``: what the service holds, and a form that creates a job; ``/sky.svg``: where its images are."""

    path = "/"

    @get("/", summary="Landing page", include_in_schema=False)
    async def landing(self, index: NamedDependency[ArchiveIndex], settings: NamedDependency[Settings],
                      picture: NamedDependency[ArchivePicture], remotes: NamedDependency[RemoteCatalog]) -> Template:
        return Template(template_name="index.html", media_type="text/html",
                        context=landing_context(index, settings, picture, remotes=remotes))

    @get("/sky.svg", summary="The archive's footprints on the sky (SVG)", include_in_schema=False)
    async def sky(self, request: Request, picture: NamedDependency[ArchivePicture]) -> Response:
        headers = {"ETag": picture.etag, "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == picture.etag:
            return Response(b"", status_code=304, headers=headers)
        return Response(picture.svg, media_type="image/svg+xml", headers=headers)
