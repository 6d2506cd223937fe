"""The ``table`` result as an HTML page for browsers: the SIAP table's rows, a page at a time."""

from __future__ import annotations

import math
from typing import Any
from xml.etree import ElementTree as ET

from cutout.siap import COLUMNS
from siasync.errors import UsageError
from siasync.uws.params import RawParams, grouped, parse_choice, parse_int
from storage.browse import JobBrowser
from storage.jobs import Job
from storage.table import with_base

ROWS_PER_PAGE = 200
#: the columns shown (the VOTable has them all)
SHOWN = ("field", "title", "ra", "dec", "naxis", "scale", "format", "bandpass_id", "collection", "mjd_obs",
         "filesize", "access_url")
_POSITIONS = {c.name: i for i, c in enumerate(COLUMNS)}
RESPONSE_FORMATS = ("HTML", "VOTABLE")


def response_format(raw: RawParams) -> str | None:
    """``RESPONSEFORMAT`` (DALI): ``votable`` (also its MIME types) or ``html``; None when not given."""
    _, one = grouped([(n, v) for n, v in raw if n == "RESPONSEFORMAT"], ("RESPONSEFORMAT",))
    value = one.get("RESPONSEFORMAT")
    if value is None:
        return None
    if value.strip().lower() in ("application/x-votable+xml", "text/xml", "text/xml;content=x-votable"):
        return "VOTABLE"
    return parse_choice("RESPONSEFORMAT", value, list(RESPONSE_FORMATS))


def _cells(row: str) -> list[str]:
    return [td.text or "" for td in ET.fromstring(row)]


async def table_context(browser: JobBrowser, job: Job, raw: RawParams, base: str) -> dict[str, Any]:
    """A page of the table's rows (of one field with ``FIELD``), the columns in `SHOWN`."""
    _, one = grouped([(n, v) for n, v in raw if n in ("PAGE", "FIELD")], ("PAGE", "FIELD"))
    page = parse_int("PAGE", one["PAGE"]) if one.get("PAGE") else 1
    field = parse_int("FIELD", one["FIELD"]) if one.get("FIELD") else None
    total_fields = int(job.info.get("fields_total", 0))
    if field is not None and not 0 <= field < total_fields:
        raise UsageError("FIELD", f"this job's fields are 0 to {total_fields - 1}, got {one['FIELD']!r}")
    count = await browser.count_rows(job.id, field)
    pages = max(1, math.ceil(count / ROWS_PER_PAGE))
    if not 1 <= page <= pages:
        raise UsageError("PAGE", f"the table has {pages} page{'s' if pages > 1 else ''} of {ROWS_PER_PAGE} rows, "
                                 f"got {one['PAGE']!r}")
    rows = await browser.rows(job.id, (page - 1) * ROWS_PER_PAGE, ROWS_PER_PAGE, field)
    cells = [_cells(with_base(row, base)) for _, row in rows]
    columns = [COLUMNS[_POSITIONS[name]] for name in SHOWN]
    return {"job": job, "columns": columns, "rows": [[c[_POSITIONS[name]] for name in SHOWN] for c in cells],
            "page": page, "pages": pages, "count": count, "field": field, "base": base}
