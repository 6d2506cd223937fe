"""The growing ``table`` result: a SIAP 1.0 VOTable written as header, stored rows, footer.

Each row is rendered once, when its product is registered, and stored with it, so
appending costs O(1). A GET streams a fresh header (with the job's phase and
progress as INFO elements), the rows registered so far, and the footer: a complete,
valid VOTable every time. Rows hold ``{BASE}`` where the service's base URL goes,
which is only known per request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from xml.sax import saxutils

from cutout.siap import COLUMNS

BASE = "{BASE}"
MIME = "text/xml;content=x-votable"
#: characters XML 1.0 does not allow in a document, escaped or not (control characters, lone surrogates, ...)
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _shown(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def xml_safe(text: str) -> str:
    """``text`` with each character XML 1.0 does not allow written as its Python escape (``\\x01``): whatever a
    client sent or a file held, a document that echoes it stays well-formed."""
    return _NOT_XML.sub(_shown, text) if _NOT_XML.search(text) else text


def escape(text: str) -> str:
    """XML character data for ``text``: ``&``, ``<`` and ``>`` escaped, characters XML does not allow shown
    (`xml_safe`)."""
    return saxutils.escape(xml_safe(text))


def quoteattr(text: str) -> str:
    """A quoted XML attribute value for ``text`` (`xml_safe`)."""
    return saxutils.quoteattr(xml_safe(text))


def _value(value: Any) -> str:
    kind = type(value)
    if kind is float:
        return repr(value)
    if kind is str:
        return escape(value) if ("&" in value or "<" in value or ">" in value or _NOT_XML.search(value)) else value
    if value is None:
        return ""
    if kind is int:
        return str(value)
    if kind is list or kind is tuple:
        return " ".join(map(_value, value))
    if isinstance(value, float):  # numpy floats: their repr is not a plain number
        return repr(float(value))
    return escape(str(value))


_NAMES = tuple(c.name for c in COLUMNS)


def cell_text(value: Any) -> str:
    """The text of a table cell holding ``value`` (XML-escaped; lists space-separated; None empty)."""
    return _value(value)


def render_row(values: Mapping[str, Any], access_path: str | None) -> str:
    """One ``<TR>`` for a product; ``access_path`` is appended to the base URL (None: no file)."""
    get = values.get
    cells = [(f"<TD>{BASE}{escape(access_path)}</TD>" if access_path else "<TD/>") if name == "access_url"
             else f"<TD>{_value(get(name))}</TD>" for name in _NAMES]
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
