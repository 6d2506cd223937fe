"""Helpers shared by the HTTP handlers: parameters, negotiation, links, plain responses."""

from __future__ import annotations

from litestar import Request, Response
from litestar.response import Redirect

from siasync.uws.deflate import accepts_deflate
from siasync.uws.documents import Document
from siasync.uws.params import JOB_PARAMETERS, RawParams, gather
from siasync.web.body import read_params

XML = "application/xml"
HTML = "text/html"
JSON = "application/json"
TEXT = "text/plain"
_OFFERS = {"application/xml": XML, "text/xml": XML, "text/html": HTML, "application/xhtml+xml": HTML,
           "application/json": JSON}


def preferred(request: Request) -> str:
    """The representation the client prefers: XML (the default), HTML or JSON."""
    best, best_q = XML, 0.0
    for part in request.headers.get("accept", "").split(","):
        media, *options = [p.strip() for p in part.split(";")]
        q = 1.0
        for option in options:
            if option.startswith("q="):
                try:
                    q = float(option[2:])
                except ValueError:
                    q = 0.0
        offer = _OFFERS.get(media.lower())
        if offer is not None and q > best_q:
            best, best_q = offer, q
    return best


async def raw_params(request: Request) -> RawParams:
    """Parameters from the query string and a form-encoded or multipart body."""
    return (await job_input(request))[0]


async def job_input(request: Request, blank_is_absent: bool = False) -> tuple[RawParams, dict[str, tuple[str, bytes]]]:
    """The parameters, and the multipart file parts by name: (content type, bytes), read under the limits of
    `siasync.web.body`.

    A file part named like a job parameter other than UPLOAD (``-F POS=@list.txt``)
    is that parameter's value; the others are tables for UPLOAD. ``blank_is_absent``: leave
    out the values that are empty or blank (a browser's form sends every field left blank).
    """
    state = request.app.state
    body = await request.body() if request.method == "POST" else None
    query, form, files = await read_params(request.scope.get("query_string", b""),
                                           request.headers.get("content-type", ""), body, state.param_limits,
                                           state.cpu)
    form = [(name, value) for name, value in form if value or name.upper() != "UPLOAD"]  # an empty file input
    parts: dict[str, tuple[str, bytes]] = {}
    for name, (content_type, data) in files.items():
        if name.upper() in JOB_PARAMETERS and name.upper() != "UPLOAD":
            form.append((name, data.decode("utf-8", "replace")))
        else:
            parts[name] = (content_type, data)
    params = gather(query, form)
    if blank_is_absent:
        params = [(n, v) for n, v in params if v.strip()]
    return params, parts


def one(params: RawParams, name: str) -> str | None:
    """The last value of a parameter, or None."""
    values = [v for n, v in params if n == name]
    return values[-1] if values else None


def base_url(request: Request, public_url: str | None) -> str:
    """Absolute base for links: the configured public URL, or the request's own."""
    return (public_url or str(request.base_url)).rstrip("/")


def text(body: str, status: int = 200) -> Response:
    """A text/plain response."""
    return Response(body, media_type=TEXT, status_code=status)


def see_other(request: Request, public_url: str | None, path: str) -> Redirect:
    """A 303 redirect to ``path`` under the service's base, as an absolute URL (as every link the service gives)."""
    return Redirect(base_url(request, public_url) + path, status_code=303)


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weak comparison, RFC 9110 13.1.2), or is ``*``."""
    if not if_none_match:
        return False
    tags = [tag.strip() for tag in if_none_match.split(",")]
    return "*" in tags or any(tag.removeprefix("W/") == etag for tag in tags)


def conditional(request: Request, document: Document, media_type: str, vary: str = "") -> Response:
    """A rendered job document with its ETag, or 304 Not Modified when the request's ``If-None-Match`` names
    it; deflated (``Content-Encoding: deflate``, another ETag) for a client that accepts it."""
    deflate = accepts_deflate(request.headers.get("accept-encoding"))
    etag = document.deflated_etag if deflate else document.etag
    headers = {"ETag": etag, "Vary": ", ".join(filter(None, (vary, "Accept-Encoding")))}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(b"", status_code=304, headers=headers)
    if deflate:
        return Response(document.deflated, media_type=media_type, headers={**headers, "Content-Encoding": "deflate"})
    return Response(document.body, media_type=media_type, headers=headers)
