"""The shape of an uploaded VOTable, checked before astropy parses it.

astropy's VOTable parser trusts what a table declares: its time grows with the square of the
FIELDs (40,000 of them, 1.6 MB, take minutes), it allocates ``nrows`` rows and fixed
``arraysize`` cells up front (a one-row table declaring ``nrows="200000000"`` or an
``arraysize`` of 50 million takes gigabytes), and it fetches a ``STREAM href`` (or a FITS
serialization) from wherever it points, ``file:`` URLs included. `check_votable` reads the
document once with expat, which costs a fraction of astropy's parse and holds nothing, and
refuses, naming the limit:

* an entity declaration (the document's own DTD), and elements nested deeper than `MAX_DEPTH`;
* more FIELDs than the column limit, and more than `MAX_METADATA` other elements that are not
  rows or cells (PARAM, INFO, GROUP, ...);
* a declared ``nrows``, or more TR rows, beyond the row limit;
* rows whose declared cells (each FIELD's datatype times its fixed ``arraysize``) times the
  rows would take more memory than the table limit;
* data that is not in the document: a STREAM with ``href``, and the FITS serialization.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from xml.parsers import expat

from siasync.errors import UsageError

#: elements nested deeper than this (a VOTable's rows are at depth 7; nested RESOURCEs and GROUPs add a few)
MAX_DEPTH = 32
#: elements other than FIELDs, rows and cells (PARAM, INFO, GROUP, DESCRIPTION, ...)
MAX_METADATA = 10_000
#: bytes per value of each VOTable datatype, as astropy stores it (unicodeChar: numpy's 4-byte characters)
DATATYPE_BYTES = {"boolean": 1, "bit": 1, "unsignedByte": 1, "short": 2, "int": 4, "long": 8, "char": 1,
                  "unicodeChar": 4, "float": 4, "double": 8, "floatComplex": 8, "doubleComplex": 16}
_DIMENSION = re.compile(r"^([0-9]+)?\*?$")


@dataclass
class _Scan:
    """What the scan has seen so far."""

    name: str
    max_rows: int
    max_columns: int
    max_table_bytes: int
    depth: int = 0
    fields: int = 0
    metadata: int = 0
    rows: int = 0
    #: bytes of one row, from the FIELDs' datatypes and fixed array sizes
    row_bytes: int = 0

    def refuse(self, problem: str) -> UsageError:
        return UsageError("UPLOAD", f"{self.name}: {problem}")


def _cells(arraysize: str | None) -> int:
    """Values per cell a FIELD's ``arraysize`` declares (``10x20``: 200; a variable last size ``*`` or
    ``8*`` counts as 1 or its bound: its values are stored as they come)."""
    if not arraysize:
        return 1
    count = 1
    for dimension in arraysize.strip().split("x"):
        match = _DIMENSION.match(dimension.strip())
        if not match:
            raise ValueError(f"arraysize {arraysize!r} is not sizes such as 10, 8x8 or 10*")
        if match.group(1) is not None:
            count *= max(int(match.group(1)), 1)
    return count


def _start(scan: _Scan, name: str, attributes: dict[str, str]) -> None:
    name = name.rpartition(":")[2]
    scan.depth += 1
    if scan.depth > MAX_DEPTH:
        raise scan.refuse(f"elements nested more than {MAX_DEPTH} deep, the limit")
    if name == "TR":
        scan.rows += 1
        if scan.rows > scan.max_rows:
            raise scan.refuse(f"more than {scan.max_rows} rows, the limit of fields")
        if scan.rows * scan.row_bytes > scan.max_table_bytes:
            raise scan.refuse(f"{scan.rows} rows of {scan.row_bytes} bytes would take more than the limit of "
                              f"{scan.max_table_bytes} bytes in memory")
    elif name == "TD":
        return
    elif name == "FIELD":
        scan.fields += 1
        if scan.fields > scan.max_columns:
            raise scan.refuse(f"more than {scan.max_columns} FIELDs, the limit of columns")
        try:
            cells = _cells(attributes.get("arraysize"))
        except ValueError as exc:
            raise scan.refuse(f"FIELD {attributes.get('name', '')!r}: {exc}") from None
        scan.row_bytes += DATATYPE_BYTES.get(attributes.get("datatype", ""), 8) * cells
        if scan.row_bytes > scan.max_table_bytes:
            raise scan.refuse(f"one row of the FIELDs declared takes {scan.row_bytes} bytes, more than the limit "
                              f"of {scan.max_table_bytes} bytes for the table")
    else:
        scan.metadata += 1
        if scan.metadata > MAX_METADATA:
            raise scan.refuse(f"more than {MAX_METADATA} elements besides FIELDs, rows and cells, the limit")
        if name == "TABLE" and attributes.get("nrows", "").strip().isdigit() \
                and int(attributes["nrows"]) > scan.max_rows:
            raise scan.refuse(f"the TABLE declares nrows={attributes['nrows'].strip()[:20]}, more than the "
                              f"limit of {scan.max_rows} rows")
        if name == "STREAM" and "href" in attributes:
            raise scan.refuse("its data is elsewhere (STREAM href): this service reads only tables whose data "
                              "is in the document (TABLEDATA, or BINARY and BINARY2 streams inline)")
        if name == "FITS":
            raise scan.refuse("the FITS serialization refers to a file elsewhere: send TABLEDATA, or BINARY or "
                              "BINARY2 streams inline")


def _refuse_entities(scan: _Scan) -> None:
    raise scan.refuse("the document declares entities (a DTD of its own): a VOTable needs none")


def check_votable(data: bytes, name: str, max_rows: int, max_columns: int, max_table_bytes: int) -> None:
    """Refuse a VOTable whose shape is beyond the limits (see the module docstring), before astropy parses it.

    A document that is not well-formed XML is left to astropy, which says what is wrong with it.

    Raises
    ------
    UsageError
        On ``UPLOAD``, naming the table and the limit.
    """
    scan = _Scan(name, max_rows, max_columns, max_table_bytes)
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartElementHandler = lambda element, attributes: _start(scan, element, attributes)

    def end(element: str) -> None:
        scan.depth -= 1

    parser.EndElementHandler = end
    parser.EntityDeclHandler = lambda *args: _refuse_entities(scan)
    try:
        parser.Parse(data, True)
    except expat.ExpatError:
        return
