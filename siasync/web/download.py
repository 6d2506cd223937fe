"""Result downloads: streamed from disk with aiofiles, with ETag, Last-Modified and byte ranges.

A result registered with the SHA-256 of its bytes is served with it: as its strong ETag and as
``Digest`` (RFC 3230) and ``Repr-Digest`` (RFC 9530), of the whole file whatever range is
sent, so that a client can tell a file changed on disk since it was made.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import AsyncIterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiofiles
from litestar import Request, Response
from litestar.background_tasks import BackgroundTask
from litestar.response import Stream

from siasync.errors import NotFound

CHUNK = 256 * 1024
_RANGE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")
#: beyond any file's size: a longer byte position means the same and is not converted (int() refuses 4300 digits)
_BEYOND = 10**18


def _position(digits: str) -> int:
    return int(digits) if len(digits.lstrip("0")) < 18 else _BEYOND


def byte_range(header: str, size: int) -> tuple[int, int] | None | bool:
    """The inclusive (start, end) of a single ``bytes=`` range.

    Returns None when the range cannot be satisfied, and False when the header is
    not a single byte range (then the whole file is sent, as RFC 9110 allows).
    """
    match = _RANGE.match(header.strip())
    if not match or not (match.group(1) or match.group(2)):
        return False
    first, last = match.group(1), match.group(2)
    if not first:  # a suffix: the last N bytes
        length = _position(last)
        return (max(size - length, 0), size - 1) if length > 0 and size > 0 else None
    start = _position(first)
    end = min(_position(last), size - 1) if last else size - 1
    if start >= size or (last and _position(last) < start):
        return None
    return start, end


async def _chunks(f: Any, start: int, end: int) -> AsyncIterator[bytes]:
    try:
        await f.seek(start)
        remaining = end - start + 1
        while remaining > 0:
            chunk = await f.read(min(CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk
    finally:
        await f.close()


def digest_headers(sha256: str) -> dict[str, str]:
    """The ETag, ``Digest`` and ``Repr-Digest`` of a file whose SHA-256 is ``sha256`` (hexadecimal)."""
    b64 = base64.b64encode(bytes.fromhex(sha256)).decode()
    return {"ETag": f'"sha256-{sha256}"', "Digest": f"sha-256={b64}", "Repr-Digest": f"sha-256=:{b64}:"}


async def file_response(request: Request, path: Path, media_type: str, filename: str,
                        sha256: str | None = None) -> Response:
    """A complete or partial (206) response for a result file, with its checksum when it is known.

    The file is opened before anything is answered: a job destroyed during the download
    deletes the file's name, but the open file still reads whole to its end.
    """
    try:
        f = await aiofiles.open(path, "rb")
    except FileNotFoundError:
        raise NotFound(f"result {filename!r} is gone") from None
    try:
        return _respond(request, f, os.fstat(f.fileno()), media_type, filename, sha256)
    except BaseException:
        await f.close()
        raise


def _respond(request: Request, f: Any, st: os.stat_result, media_type: str, filename: str,
             sha256: str | None) -> Response:
    size = st.st_size
    checksum = digest_headers(sha256) if sha256 else {"ETag": f'"{size:x}-{st.st_mtime_ns:x}"'}
    etag = checksum["ETag"]
    headers = {**checksum, "Last-Modified": formatdate(st.st_mtime, usegmt=True), "Accept-Ranges": "bytes",
               "Content-Disposition": f'inline; filename="{filename}"'}
    if request.headers.get("if-none-match") in (etag, "*"):
        return Response(b"", status_code=304, headers=headers, background=BackgroundTask(f.close))
    start, end, status = 0, size - 1, 200
    wanted = request.headers.get("range")
    if wanted and request.headers.get("if-range", etag) == etag:
        chosen = byte_range(wanted, size)
        if chosen is None:
            return Response(f"UsageError: Range: {wanted.strip()[:100]!r} is not within the file's {size} bytes\n",
                            status_code=416, media_type="text/plain",
                            headers={**headers, "Content-Range": f"bytes */{size}"}, background=BackgroundTask(f.close))
        if chosen:
            (start, end), status = chosen, 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(max(end - start + 1, 0))
    return Stream(_chunks(f, start, end), status_code=status, media_type=media_type, headers=headers)
