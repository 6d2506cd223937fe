"""A request's parameters, read under limits: from the query string and a form-encoded or multipart body.

Every parameter, whatever its name, costs memory and time to parse, so the limits apply before
the parse: ``MAX_PARAMS`` name=value pairs (counted in the raw bytes: one per ``&``-separated
piece, one per multipart part), ``MAX_PARAM_BYTES`` bytes of them as sent (the query string,
a form-encoded body, the text parts of a multipart body; file parts are bounded by
``MAX_BODY_BYTES``), and at most `MAX_PARTS` multipart parts. A body bigger than `INLINE_BYTES`
is parsed in the `siasync.cpu.CpuPool`, off the event loop. Names and values are kept in the
order sent; names are upper-cased later (`siasync.uws.params.gather`).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from multipart import MultipartSegment, ParserError, ParserLimitReached, PushMultipartParser

from siasync.cpu import CpuPool
from siasync.errors import ServiceError, UsageError

#: multipart parts in one body (Litestar's own default)
MAX_PARTS = 1000
#: a body up to this size is parsed on the event loop: a thread costs more than the parse
INLINE_BYTES = 64 * 1024

Pairs = list[tuple[str, str]]
#: the file parts of a multipart body by name: (content type, bytes)
Files = dict[str, tuple[str, bytes]]


@dataclass(frozen=True)
class ParamLimits:
    """How many parameters a request may carry, and how many bytes of them."""

    max_params: int
    max_param_bytes: int


class TooLarge(ServiceError):
    """A body with more parts than the limit (413, naming it)."""

    status = 413
    name = "UsageError"


def _too_many(count: int, limits: ParamLimits) -> UsageError:
    return UsageError("request", f"{count} parameters (name=value pairs), more than the limit of "
                                 f"{limits.max_params}; give many positions in one POS value (one per line) or "
                                 "as an UPLOAD table")


def _too_big(size: int, limits: ParamLimits) -> UsageError:
    return UsageError("request", f"the parameters take {size} bytes, more than the limit of "
                                 f"{limits.max_param_bytes}; give many positions as an UPLOAD table")


def _pieces(encoded: bytes) -> int:
    """The name=value pairs a query string or form-encoded body holds at most (empty pieces are dropped later)."""
    return encoded.count(b"&") + 1 if encoded else 0


def _decode(encoded: bytes) -> Pairs:
    """Pairs of a query string or form-encoded body, as Litestar decodes them (blank values kept)."""
    return parse_qsl(encoded.decode("latin-1"), keep_blank_values=True, separator="&")


def _multipart(body: bytes, boundary: bytes, limits: ParamLimits, room: int) -> tuple[Pairs, Files]:
    """The text parts (decoded in their charset) and file parts of a multipart body."""
    texts: Pairs = []
    files: Files = {}
    text_bytes = 0
    segment: MultipartSegment | None = None
    data = bytearray()
    try:
        with PushMultipartParser(boundary, max_segment_count=MAX_PARTS) as parser:
            for chunk in (body, b""):
                for event in parser.parse(chunk):
                    if isinstance(event, MultipartSegment):
                        segment, data = event, bytearray()
                    elif event:
                        data.extend(event)
                    elif segment is not None:  # the end of a part
                        # a file input left empty: a browser sends filename="" and no bytes (a blank value)
                        if segment.filename is not None and (segment.filename or data):
                            files[segment.name] = (segment.content_type or "text/plain", bytes(data))
                        else:
                            text_bytes += len(data)
                            if text_bytes > limits.max_param_bytes:
                                raise _too_big(text_bytes, limits)
                            texts.append((segment.name, data.decode(segment.charset or "utf-8")))
                            if len(texts) > room:
                                raise _too_many(len(texts) + limits.max_params - room, limits)
                        segment = None
    except ParserLimitReached:
        raise TooLarge(f"request body: more than the limit of {MAX_PARTS} multipart parts") from None
    except ParserError as exc:
        raise UsageError("request body", f"not a valid multipart/form-data body: {exc}") from None
    except (UnicodeDecodeError, LookupError) as exc:  # a text part not in its (or a known) charset
        raise UsageError("request body", f"a multipart text part cannot be decoded: {exc}") from None
    return texts, files


def _content_type(header: str) -> tuple[str, dict[str, str]]:
    media, _, rest = header.partition(";")
    options = {}
    for option in rest.split(";"):
        key, _, value = option.strip().partition("=")
        if key:
            options[key.lower()] = value.strip().strip('"')
    return media.strip().lower(), options


async def read_params(query: bytes, content_type: str, body: bytes | None, limits: ParamLimits,
                      cpu: CpuPool) -> tuple[Pairs, Pairs, Files]:
    """The query string's pairs, the body's pairs and the body's file parts, each limit checked before parsing.

    ``body`` is None when the request's body holds no parameters (not a POST).
    """
    if len(query) > limits.max_param_bytes:
        raise _too_big(len(query), limits)
    count = _pieces(query)
    if count > limits.max_params:
        raise _too_many(count, limits)
    query_pairs = _decode(query)
    media, options = _content_type(content_type)
    if body is None or media not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return query_pairs, [], {}
    if media == "application/x-www-form-urlencoded":
        if len(query) + len(body) > limits.max_param_bytes:
            raise _too_big(len(query) + len(body), limits)
        if count + _pieces(body) > limits.max_params:
            raise _too_many(count + _pieces(body), limits)
        pairs = _decode(body) if len(body) <= INLINE_BYTES else await cpu.run("request body", _decode, body)
        return query_pairs, pairs, {}
    boundary = options.get("boundary")
    if not boundary:
        raise UsageError("request body", "multipart boundary missing in Content-Type")
    if body.count(b"--" + boundary.encode("latin-1")) > MAX_PARTS + 1:
        raise TooLarge(f"request body: more than the limit of {MAX_PARTS} multipart parts")
    args = (body, boundary.encode("latin-1"), ParamLimits(limits.max_params, limits.max_param_bytes - len(query)),
            limits.max_params - count)
    texts, files = _multipart(*args) if len(body) <= INLINE_BYTES else await cpu.run("request body", _multipart, *args)
    return query_pairs, texts, files
