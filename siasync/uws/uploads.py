"""Position uploads: the ``UPLOAD`` parameter of a job (DALI ``UPLOAD=name,URI``).

A big job gives its fields as a table rather than as POS values. The table is a
CSV file with a header row, or a VOTable; its ``ra`` and ``dec`` columns (by name,
case-insensitive, or in a VOTable by the UCDs ``pos.eq.ra`` and ``pos.eq.dec``) are
ICRS degrees, and an optional ``size`` column gives a row its own field size in
degrees (``w`` or ``w,h`` is not possible in a column: the field is square).

The table reaches the service in one of three ways, resolved by `resolve`:

* inline: a multipart file part named ``UPLOAD`` (the job calls it ``upload``,
  as if ``UPLOAD=upload,param:UPLOAD`` had been given);
* ``UPLOAD=name,param:part``: the UWS 1.1 / DALI form, naming a multipart part;
* ``UPLOAD=name,https://...``: a URL, fetched only when it starts with one of the
  prefixes of the ``upload_urls`` setting, since the server must not fetch
  arbitrary addresses for its clients. Both are compared once normalised
  (`normalise_url`: percent-encoding decoded, ``.`` and ``..`` segments removed,
  scheme and host in lower case, a default port dropped), and the normalised URL
  is the one fetched, so ``prefix/../secret.csv``, ``prefix/%2e%2e/`` and
  ``prefix/..%2f`` cannot leave the prefix. A fetch has one deadline for all of
  it (`FETCH_DEADLINE_S`: connection, redirects and every byte), not one per read.

Every fault is a `UsageError` on ``UPLOAD`` naming the table, and the row (counted
from 1, the header excluded) and the column where there is one.
"""

from __future__ import annotations

import asyncio
import csv
import io
import math
import re
import time
import urllib.request
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import astropy.units as u
import numpy as np
from astropy.io.votable import parse_single_table
from astropy.io.votable.exceptions import VOWarning

from siasync.errors import UsageError
from siasync.uws.table_shape import check_votable

#: MIME types of the two table formats
CSV, VOTABLE = "text/csv", "application/x-votable+xml"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
#: the largest table fetched from an allowed URL
MAX_FETCH_BYTES = 64 * 1024 * 1024
#: seconds a fetch may take in all, however slowly the bytes come
FETCH_DEADLINE_S = 30.0
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Upload:
    """One uploaded table as received: its name in the job, type and bytes."""

    name: str
    mime_type: str
    data: bytes

    def as_row(self) -> tuple[str, str, bytes]:
        """(name, MIME type, bytes), as the job store keeps it."""
        return self.name, self.mime_type, self.data


@dataclass(frozen=True)
class UploadedFields:
    """The fields of one table: positions, and the size of each row (None: the job's SIZE)."""

    positions: list[tuple[float, float]]
    sizes: list[float | None]


async def resolve(values: Sequence[str], parts: Mapping[str, tuple[str, bytes]],
                  allowed_urls: Sequence[str]) -> list[Upload]:
    """The tables named by the ``UPLOAD`` values, fetched from the request's parts or allowed URLs.

    Parameters
    ----------
    values : sequence of str
        The ``UPLOAD`` parameter values, each ``name,URI``.
    parts : mapping
        The request's multipart file parts: name to (content type, bytes).
    allowed_urls : sequence of str
        URL prefixes that may be fetched.
    """
    uploads = []
    for value in values:
        name, sep, uri = value.partition(",")
        name, uri = name.strip(), uri.strip()
        if not sep or not uri:
            raise UsageError("UPLOAD", f"expected name,URI (e.g. fields,param:fields), got {value!r}")
        if not _NAME.match(name):
            raise UsageError("UPLOAD", f"table name {name!r} must start with a letter and hold only letters, "
                                       "digits, '_', '.' or '-' (at most 64)")
        if uri.startswith("param:"):
            part = uri.removeprefix("param:")
            if part not in parts:
                raise UsageError("UPLOAD", f"{name}: the request has no multipart file part named {part!r}")
            uploads.append(_upload(name, parts[part][1]))
        elif uri.startswith(("http://", "https://")):
            url = _allowed(name, uri, allowed_urls)
            deadline = time.monotonic() + FETCH_DEADLINE_S
            try:  # the thread stops reading at its next chunk after the deadline
                data = await asyncio.wait_for(asyncio.to_thread(_fetch, name, url, allowed_urls, deadline),
                                              FETCH_DEADLINE_S)
            except TimeoutError:
                raise UsageError("UPLOAD", f"{name}: fetching {url} took longer than the limit of "
                                           f"{FETCH_DEADLINE_S:g} s") from None
            uploads.append(_upload(name, data))
        else:
            raise UsageError("UPLOAD", f"{name}: unsupported URI {uri!r}; use param:PART or an http(s) URL")
    names = [u.name for u in uploads]
    if len(set(names)) != len(names):
        raise UsageError("UPLOAD", f"table names must differ, got {', '.join(names)}")
    return uploads


def normalise_url(url: str) -> str | None:
    """``url`` as it is compared with the allowed prefixes and fetched, or None when it cannot be.

    The scheme and host are put in lower case and a default port is dropped; the path's
    percent-encoding is decoded (``%2f`` is a ``/``, ``%2e`` a ``.``), its ``.`` and ``..``
    segments are removed (RFC 3986, 5.2.4) and it is encoded again. A URL with user
    information, a backslash or a control character in its path, a path that still holds
    a percent-encoding once decoded (encoded twice), or no valid port, is refused (None).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    path = unquote(parts.path, errors="strict") if parts.path else "/"
    if (scheme not in _DEFAULT_PORTS or not host or "@" in parts.netloc or "%" in path or "\\" in path
            or any(ord(c) < 32 or ord(c) == 127 for c in path) or not path.startswith("/")):
        return None
    segments: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if segments:
                segments.pop()
        elif segment != ".":
            segments.append(segment)
    if path.split("/")[-1] in (".", ".."):
        segments.append("")  # a directory: /a/b/.. is /a/
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    return urlunsplit((scheme, netloc, quote("/" + "/".join(segments), safe="/:@!$&'()*+,;=-._~"), parts.query, ""))


def _allowed(name: str, url: str, allowed_urls: Sequence[str]) -> str:
    """The normalised ``url``, when it is under one of the normalised ``allowed_urls``.

    Raises
    ------
    UsageError
        Naming ``UPLOAD``, when it is not.
    """
    normal = normalise_url(url)
    if normal is not None and any(normal.startswith(prefix) for prefix in map(normalise_url, allowed_urls)
                                  if prefix is not None):
        return normal
    raise UsageError("UPLOAD", f"{name}: this service does not fetch {url}; upload the file in the "
                               "request (multipart, UPLOAD=name,param:part) instead")


def _fetch(name: str, url: str, allowed_urls: Sequence[str], deadline: float) -> bytes:
    """The bytes at ``url``, following redirects only to allowed URLs, read by the monotonic ``deadline``."""

    class AllowedRedirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201 (urllib's API)
            try:
                allowed = _allowed(name, newurl, allowed_urls)
            except UsageError:
                raise UsageError("UPLOAD", f"{name}: {url} redirects to {newurl}, which this service does not "
                                           "fetch") from None
            return super().redirect_request(req, fp, code, msg, headers, allowed)

    chunks, size = [], 0
    try:
        with urllib.request.build_opener(AllowedRedirects).open(url, timeout=FETCH_DEADLINE_S) as response:
            while size <= MAX_FETCH_BYTES and (chunk := response.read1(256 * 1024)):
                chunks.append(chunk)
                size += len(chunk)
                if time.monotonic() > deadline:
                    raise UsageError("UPLOAD", f"{name}: fetching {url} took longer than the limit of "
                                               f"{FETCH_DEADLINE_S:g} s")
    except (OSError, ValueError) as exc:
        raise UsageError("UPLOAD", f"{name}: cannot fetch {url}: {exc}") from None
    if size > MAX_FETCH_BYTES:
        raise UsageError("UPLOAD", f"{name}: {url} is larger than {MAX_FETCH_BYTES // 2**20} MiB")
    return b"".join(chunks)


def _upload(name: str, data: bytes) -> Upload:
    """The table, typed by its content (clients often send a generic content type)."""
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n")
    return Upload(name, VOTABLE if head.startswith((b"<?xml", b"<VOTABLE")) else CSV, data)


@dataclass(frozen=True)
class _Column:
    """A table column as read: strings from a CSV file, numbers (None when masked) from a VOTable."""

    name: str
    values: Sequence[object]
    ucd: str = ""
    #: why the column cannot be used at all (a VOTable unit that is not an angle)
    fault: str | None = None


def read_fields(upload: Upload, max_size_deg: float, max_rows: int, max_columns: int = 1000,
                max_table_bytes: int = 64 * 1024 * 1024) -> UploadedFields:
    """The fields of an uploaded table, its shape checked before it is parsed: at most ``max_rows`` rows and
    ``max_columns`` columns, and for a VOTable the limits of `siasync.uws.table_shape.check_votable`.

    Raises
    ------
    UsageError
        On ``UPLOAD``, naming the table, and the row and column at fault, or the limit.
    """
    if not upload.data.strip():
        raise UsageError("UPLOAD", f"{upload.name}: the table is empty")
    if upload.mime_type == VOTABLE:
        check_votable(upload.data, upload.name, max_rows, max_columns, max_table_bytes)
        columns = _votable_columns(upload)
    else:
        columns = _csv_columns(upload, max_rows, max_columns)
    ra, dec = _find(upload, columns, "ra"), _find(upload, columns, "dec")
    size = _find(upload, columns, "size", required=False)
    rows = len(ra.values)
    if rows == 0:
        raise UsageError("UPLOAD", f"{upload.name}: the table has a header but no rows")
    if rows > max_rows:
        raise UsageError("UPLOAD", f"{upload.name}: {rows} rows exceed the limit of {max_rows} fields")
    positions = list(zip(_numbers(upload, ra, lambda x: 0.0 <= x < 360.0, "in [0, 360)"),
                         _numbers(upload, dec, lambda x: -90.0 <= x <= 90.0, "in [-90, 90]"), strict=True))
    sizes: list[float | None] = [None] * rows
    if size is not None:
        sizes = _numbers(upload, size, lambda x: 0.0 < x <= max_size_deg, f"in (0, {max_size_deg:g}] degrees",
                         optional=True)
    return UploadedFields(positions, sizes)


def _numbers(upload: Upload, column: _Column, valid: Callable[[float], bool], expected: str,
             optional: bool = False) -> list:
    """The column's values as finite floats that are ``valid``; empty ones None when ``optional``."""
    if column.fault:
        raise UsageError("UPLOAD", f"{upload.name}: column {column.name}: {column.fault}")
    out: list[float | None] = []
    for row, value in enumerate(column.values, 1):
        if value is None or (isinstance(value, str) and not value.strip()):
            if optional:
                out.append(None)
                continue
            problem = "empty"
        else:
            try:
                number = float(value)  # type: ignore[arg-type]
                problem = f"not a number: {value!r}" if isinstance(value, str) and "_" in value else None
            except (TypeError, ValueError):
                number, problem = math.nan, f"not a number: {value!r}"
            if problem is None and not math.isfinite(number):
                problem = f"not a finite number: {value!r}"
            elif problem is None and not valid(number):
                problem = f"{number:g} is out of range; expected {expected}"
        if problem is not None:
            raise UsageError("UPLOAD", f"{upload.name}: row {row}, column {column.name}: {problem}")
        out.append(number)
    return out


def _csv_columns(upload: Upload, max_rows: int, max_columns: int) -> list[_Column]:
    """The columns of a CSV table; only those that can be ra, dec or size keep their values (a table of
    thousands of columns costs no more than one of three)."""
    try:
        text = upload.data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError("UPLOAD", f"{upload.name}: not a CSV or VOTable: byte {exc.start} is not UTF-8 text") from None
    if "\0" in text:
        raise UsageError("UPLOAD", f"{upload.name}: not a CSV or VOTable: it holds NUL bytes")
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise UsageError("UPLOAD", f"{upload.name}: the table is empty (only comments)")
    try:
        reader = csv.reader(lines, strict=True)
        header = [name.strip() for name in next(reader)]
        if len(header) > max_columns:
            raise UsageError("UPLOAD", f"{upload.name}: {len(header)} columns, more than the limit of {max_columns}")
        kept = [i for i, name in enumerate(header) if name.lower() in ("ra", "dec", "size")]
        values: dict[int, list[str]] = {i: [] for i in kept}
        for row_number, row in enumerate(reader, 1):
            if len(row) != len(header):
                shown = ", ".join(header) if len(header) <= 20 else ", ".join(header[:20]) + ", ..."
                raise UsageError("UPLOAD", f"{upload.name}: row {row_number} has {len(row)} values; the header "
                                           f"names {len(header)} columns ({shown})")
            if row_number > max_rows:
                raise UsageError("UPLOAD", f"{upload.name}: more than {max_rows} rows, the limit of fields")
            for i in kept:
                values[i].append(row[i])
    except csv.Error as exc:
        raise UsageError("UPLOAD", f"{upload.name}: not a valid CSV table: {exc}") from None
    return [_Column(name, values.get(i, ())) for i, name in enumerate(header)]


def _votable_columns(upload: Upload) -> list[_Column]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VOWarning)
            table = parse_single_table(io.BytesIO(upload.data), verify="ignore")
    except Exception as exc:  # noqa: BLE001 (astropy raises many types for malformed XML and VOTables)
        raise UsageError("UPLOAD", f"{upload.name}: not a valid VOTable: {exc}") from None
    columns = []
    for field_, values in zip(table.fields, _columns_of(table), strict=True):
        data, fault = values, None
        if field_.unit is not None and values.dtype.kind in "fiu":
            try:
                data = (values.data * field_.unit).to_value(u.deg)
            except (u.UnitsError, TypeError, ValueError):
                fault = f"its unit {field_.unit} is not an angle"
        mask = np.ma.getmaskarray(values)
        items = np.asarray(data).tolist()
        if mask.any():
            items = [None if m else v for v, m in zip(items, mask.tolist(), strict=True)]
        columns.append(_Column(field_.name, items, (field_.ucd or "").lower(), fault))
    return columns


def _columns_of(table: object) -> list[np.ma.MaskedArray]:
    array = table.array  # type: ignore[attr-defined]
    return [array[name] for name in array.dtype.names]


def _find(upload: Upload, columns: list[_Column], wanted: str, required: bool = True) -> _Column | None:
    """The column named ``wanted`` (or with its UCD in a VOTable); None when optional and absent."""
    ucd = {"ra": "pos.eq.ra", "dec": "pos.eq.dec"}.get(wanted)
    found = ([c for c in columns if c.name.strip().lower() == wanted]
             or [c for c in columns if ucd and ucd in c.ucd.replace(";", " ").split()])
    if len(found) > 1:
        raise UsageError("UPLOAD", f"{upload.name}: {len(found)} columns could be {wanted!r}: "
                                   f"{', '.join(c.name for c in found)}; keep one")
    if found:
        return found[0]
    if not required:
        return None
    also = f" (or a column with UCD {ucd})" if upload.mime_type == VOTABLE and ucd else ""
    raise UsageError("UPLOAD", f"{upload.name}: no column {wanted!r}{also}; the columns are "
                               f"{', '.join(c.name for c in columns) or 'none'}")
