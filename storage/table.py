"""The growing ``table`` result: a SIAP 1.0 VOTable written as header, stored rows, footer.

Each row is rendered once, when its product is registered, and stored with it, so
appending costs O(1). A GET streams a fresh header (with the job's phase and
progress as INFO elements), the rows registered so far, and the footer: a complete,
valid VOTable every time. Rows hold ``{BASE}`` where the service's base URL goes,
which is only known per request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from cutout.siap import COLUMNS

BASE = "{BASE}"
MIME = "text/xml;content=x-votable"


def _value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(_value(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return escape(str(value))


def render_row(values: Mapping[str, Any], access_path: str | None) -> str:
    """One ``<TR>`` for a product; ``access_path`` is appended to the base URL (None: no file)."""
    cells = []
    for column in COLUMNS:
        if column.name == "access_url":
            cells.append(f"<TD>{BASE}{escape(access_path)}</TD>" if access_path else "<TD/>")
        else:
            cells.append(f"<TD>{_value(values.get(column.name))}</TD>")
    return "<TR>" + "".join(cells) + "</TR>\n"


def header(info: Mapping[str, Any], description: str = "siasync staged products") -> str:
    """The VOTable up to the first row, with ``info`` as INFO elements."""
    infos = "".join(f"<INFO name={quoteattr(str(k))} value={quoteattr(str(v))}/>\n" for k, v in info.items())
    fields = "".join(
        f"<FIELD name={quoteattr(c.name)} datatype={quoteattr(c.datatype)}"
        + (f" arraysize={quoteattr(c.arraysize)}" if c.arraysize else "")
        + (f" ucd={quoteattr(c.ucd)}" if c.ucd else "")
        + (f" unit={quoteattr(c.unit)}" if c.unit else "")
        + f"><DESCRIPTION>{escape(c.description)}</DESCRIPTION></FIELD>\n"
        for c in COLUMNS)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<VOTABLE version="1.3" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">\n'
            '<RESOURCE type="results">\n'
            f'<DESCRIPTION>{escape(description)}</DESCRIPTION>\n'
            '<INFO name="QUERY_STATUS" value="OK"/>\n'
            f"{infos}<TABLE>\n{fields}<DATA><TABLEDATA>\n")


FOOTER = "</TABLEDATA></DATA>\n</TABLE>\n</RESOURCE>\n</VOTABLE>\n"


def with_base(rows: str, base: str) -> str:
    """Rows with the base URL filled in."""
    return rows.replace(BASE, escape(base))
