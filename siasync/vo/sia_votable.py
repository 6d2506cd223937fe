"""SIAP 1.0 response documents: query results, the metadata query, and errors.

The columns are `cutout.siap.COLUMNS`, declared once for the async ``table`` result and
for ``/sia``; rows are rendered by `storage.table.render_row`, as the ``table`` rows are,
then cut down to the columns of the query's VERB.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cutout.siap import COLUMNS, Column
from storage.table import escape, quoteattr

_NAMES = [c.name for c in COLUMNS]
_REQUIRED = ("title", "ra", "dec", "naxes", "naxis", "scale", "format", "access_url")
_COMMON = ("instrument", "mjd_obs", "bandpass_id", "filesize", "collection", "parent_id")
_WCS_AND_BANDPASS = ("pixflags", "coord_frame", "equinox", "projection", "crpix", "crval", "cd", "bandpass_unit",
                     "bandpass_refvalue", "bandpass_hilimit", "bandpass_lolimit")
#: The columns of each SIAP 1.0 VERB level, in `COLUMNS` order:
#: 0, the columns SIAP 1.0 requires (title, position, shape, scale, format, access URL);
#: 1 (the default), also the instrument, MJD, band, file size, collection and parent image id;
#: 2, also the full WCS (frame, equinox, projection, CRPIX, CRVAL, CD), the pixel flags and the bandpass;
#: 3, every column of the async ``table`` result, including the field and result ids.
VERB_COLUMNS: dict[int, tuple[Column, ...]] = {
    verb: tuple(c for c in COLUMNS if verb == 3 or c.name in names)
    for verb, names in ((0, _REQUIRED), (1, _REQUIRED + _COMMON), (2, _REQUIRED + _COMMON + _WCS_AND_BANDPASS),
                        (3, ()))
}
_CELL = re.compile(r"<TD(?:/>|>[^<]*</TD>)")  # cell text is XML-escaped, so it holds no '<'
_HEAD = ('<?xml version="1.0" encoding="UTF-8"?>\n'
         '<VOTABLE version="1.3" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">\n<RESOURCE type="results">\n')
_TAIL = "</RESOURCE>\n</VOTABLE>\n"


@dataclass(frozen=True)
class InputParam:
    """One input parameter of ``/sia``, described in the metadata query and in VOSI capabilities."""

    name: str
    #: VOTable datatype (``char`` or ``int``)
    datatype: str
    description: str
    unit: str | None = None
    ucd: str | None = None
    #: the value used when the parameter is not given ("" when there is none)
    default: str = ""
    #: the allowed values, when they are a closed list
    options: tuple[str, ...] = ()
    required: bool = False
    #: defined by SIAP 1.0 (False: a siasync extension)
    standard: bool = True


def select_cells(row: str, columns: Sequence[Column]) -> str:
    """A ``<TR>`` of all `COLUMNS` (from `render_row`) cut down to ``columns``."""
    if len(columns) == len(COLUMNS):
        return row
    cells = _CELL.findall(row)
    return "<TR>" + "".join(cells[_NAMES.index(c.name)] for c in columns) + "</TR>\n"


def field_element(column: Column) -> str:
    """The ``<FIELD>`` of a column, as in the ``table`` result."""
    return (f"<FIELD name={quoteattr(column.name)} datatype={quoteattr(column.datatype)}"
            + (f" arraysize={quoteattr(column.arraysize)}" if column.arraysize else "")
            + (f" ucd={quoteattr(column.ucd)}" if column.ucd else "")
            + (f" unit={quoteattr(column.unit)}" if column.unit else "")
            + f"><DESCRIPTION>{escape(column.description)}</DESCRIPTION></FIELD>\n")


def param_element(param: InputParam) -> str:
    """The ``<PARAM name="INPUT:...">`` of an input parameter (SIAP 1.0 metadata query)."""
    options = "".join(f"<OPTION value={quoteattr(o)}/>" for o in param.options)
    return (f"<PARAM ID={quoteattr('INPUT_' + param.name)} name={quoteattr('INPUT:' + param.name)}"
            f" datatype={quoteattr(param.datatype)}"
            + (' arraysize="*"' if param.datatype == "char" else "")
            + (f" unit={quoteattr(param.unit)}" if param.unit else "")
            + (f" ucd={quoteattr(param.ucd)}" if param.ucd else "")
            + f" value={quoteattr(param.default)}><DESCRIPTION>{escape(param.description)}</DESCRIPTION>"
            + (f"<VALUES>{options}</VALUES>" if options else "") + "</PARAM>\n")


def results_document(columns: Sequence[Column], rows: Iterable[str], description: str, status: str = "OK",
                     message: str = "", params: Sequence[InputParam] = (),
                     notes: Sequence[tuple[str, str, str]] = (), cut: bool = False) -> str:
    """A complete SIAP 1.0 response: QUERY_STATUS, optional input PARAMs, the FIELDs, and the rows.

    Parameters
    ----------
    columns : sequence of Column
        The columns of the query's VERB.
    rows : iterable of str
        ``<TR>`` elements of all `COLUMNS`, base URL filled in; cut down to ``columns`` here.
    description : str
    status : str
        ``OK`` or ``OVERFLOW`` (the rows stop at the service's limit); ``message`` says why.
    params : sequence of InputParam
        Described as ``INPUT:`` PARAMs (the metadata query).
    notes : sequence of (name, value, text)
        More INFO elements, e.g. an image left out of the rows and why.
    cut : bool
        Whether the rows hold ``columns`` only already.
    """
    info = (f'<INFO name="QUERY_STATUS" value={quoteattr(status)}>{escape(message)}</INFO>\n' if message
            else f'<INFO name="QUERY_STATUS" value={quoteattr(status)}/>\n')
    return (_HEAD + f"<DESCRIPTION>{escape(description)}</DESCRIPTION>\n" + info
            + '<INFO name="SERVICE_PROTOCOL" value="1.0">SIAP</INFO>\n'
            + "".join(f"<INFO name={quoteattr(n)} value={quoteattr(v)}>{escape(t)}</INFO>\n" for n, v, t in notes)
            + "".join(param_element(p) for p in params)
            + "<TABLE>\n" + "".join(field_element(c) for c in columns) + "<DATA><TABLEDATA>\n"
            + "".join(rows if cut else (select_cells(row, columns) for row in rows))
            + "</TABLEDATA></DATA>\n</TABLE>\n" + _TAIL)


def error_document(message: str) -> str:
    """The SIAP 1.0 error response: ``QUERY_STATUS`` ERROR with the message, sent with HTTP 200."""
    return (_HEAD + f'<INFO name="QUERY_STATUS" value="ERROR">{escape(message)}</INFO>\n' + _TAIL)
