"""VOTable 1.3 documents of the modern VO face: column declarations, rows, PARAMs, DALI statuses.

SIA 2.0 answers and DataLink documents are written as text, as the SIAP 1.0 ones are
(`siasync.vo.sia_votable`): a row is a few dozen cells, and building element trees for
thousands of rows would cost more than the query. Every value is XML-escaped here; the
tests validate the documents against the official VOTable schema.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from storage.table import escape, quoteattr

HEAD = ('<?xml version="1.0" encoding="UTF-8"?>\n'
        '<VOTABLE version="1.3" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">\n')
TAIL = "</VOTABLE>\n"
#: the VOTable media type of DALI answers
VOTABLE = "application/x-votable+xml"


@dataclass(frozen=True)
class Col:
    """One column: its FIELD attributes."""

    name: str
    datatype: str
    ucd: str | None = None
    unit: str | None = None
    arraysize: str | None = None
    utype: str | None = None
    xtype: str | None = None
    description: str = ""
    #: the FIELD's XML ID, for PARAMs of service descriptors that refer to the column
    id: str | None = None

    def field(self) -> str:
        """The ``<FIELD>`` element."""
        return ("<FIELD" + _attrs(ID=self.id, name=self.name, datatype=self.datatype, arraysize=self.arraysize,
                                  unit=self.unit, ucd=self.ucd, utype=self.utype, xtype=self.xtype)
                + (f"><DESCRIPTION>{escape(self.description)}</DESCRIPTION></FIELD>\n" if self.description
                   else "/>\n"))


@dataclass(frozen=True)
class Param:
    """A PARAM of a service descriptor: fixed (``value``), bound to a column (``ref``), or for the user to give."""

    name: str
    datatype: str = "char"
    value: str = ""
    arraysize: str | None = "*"
    unit: str | None = None
    ucd: str | None = None
    xtype: str | None = None
    ref: str | None = None
    description: str = ""
    minimum: str | None = None
    maximum: str | None = None
    options: tuple[str, ...] = ()

    def element(self) -> str:
        """The ``<PARAM>`` element (VOTable requires its ``value``, empty for a parameter the user gives)."""
        values = ""
        if self.minimum is not None or self.maximum is not None or self.options:
            values = ("<VALUES>" + (f"<MIN value={quoteattr(self.minimum)}/>" if self.minimum is not None else "")
                      + (f"<MAX value={quoteattr(self.maximum)}/>" if self.maximum is not None else "")
                      + "".join(f"<OPTION value={quoteattr(o)}/>" for o in self.options) + "</VALUES>")
        inner = (f"<DESCRIPTION>{escape(self.description)}</DESCRIPTION>" if self.description else "") + values
        return ("<PARAM" + _attrs(name=self.name, datatype=self.datatype, arraysize=self.arraysize, unit=self.unit,
                                  ucd=self.ucd, xtype=self.xtype, ref=self.ref, value=self.value)
                + (f">{inner}</PARAM>\n" if inner else "/>\n"))


def service_descriptor(resource_id: str, standard_id: str, access_url: str, inputs: Sequence[Param],
                       description: str = "") -> str:
    """A DataLink service descriptor: ``<RESOURCE type="meta" utype="adhoc:service">`` with its input PARAMs."""
    return (f'<RESOURCE type="meta" utype="adhoc:service" ID={quoteattr(resource_id)} name={quoteattr(resource_id)}>\n'
            + (f"<DESCRIPTION>{escape(description)}</DESCRIPTION>\n" if description else "")
            + Param("standardID", value=standard_id).element()
            + Param("accessURL", value=access_url, ucd="meta.ref.url").element()
            + '<GROUP name="inputParams">\n' + "".join(p.element() for p in inputs) + "</GROUP>\n</RESOURCE>\n")


def cell(value: Any) -> str:
    """One ``<TD>``: numbers as Python writes them, arrays space-separated, None (and NaN) empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "<TD/>"
    if isinstance(value, bool):
        return f"<TD>{'T' if value else 'F'}</TD>"
    if isinstance(value, (list, tuple)):
        return "<TD>" + " ".join(repr(float(v)) if isinstance(v, float) else escape(str(v)) for v in value) + "</TD>"
    if isinstance(value, float):
        return f"<TD>{value!r}</TD>"
    return f"<TD>{escape(str(value))}</TD>"


def table(columns: Sequence[Col], rows: Iterable[Sequence[Any]]) -> str:
    """A ``<TABLE>`` with TABLEDATA, one ``<TR>`` per row of values in column order."""
    return ("<TABLE>\n" + "".join(c.field() for c in columns) + "<DATA><TABLEDATA>\n"
            + "".join("<TR>" + "".join(cell(v) for v in row) + "</TR>\n" for row in rows)
            + "</TABLEDATA></DATA>\n</TABLE>\n")


def status(value: str, message: str = "") -> str:
    """A DALI ``QUERY_STATUS`` INFO: OK, OVERFLOW or ERROR, with its message."""
    return (f'<INFO name="QUERY_STATUS" value={quoteattr(value)}>{escape(message)}</INFO>\n' if message
            else f'<INFO name="QUERY_STATUS" value={quoteattr(value)}/>\n')


def info(name: str, value: str) -> str:
    """An INFO element."""
    return f"<INFO name={quoteattr(name)} value={quoteattr(value)}/>\n"


def error_document(message: str) -> str:
    """A DALI error document: a results RESOURCE with QUERY_STATUS ERROR and the message."""
    return HEAD + '<RESOURCE type="results">\n' + status("ERROR", message) + "</RESOURCE>\n" + TAIL


def _attrs(**values: str | None) -> str:
    return "".join(f" {name}={quoteattr(value)}" for name, value in values.items() if value is not None)
