"""Job documents rendered once per version of a job and shared by every client polling it.

A job with tens of thousands of results renders to megabytes; a hundred pollers must
not each render it. A document shows the job at one version (`storage.jobs.Job.version`,
bumped by every change to the job or its results, on any server): its fields, and its
results up to that version's newest (`Job.last_seq`). It is rendered again only when the
version a reader holds differs, so every read shows the job as the store holds it, and a
results list read after the ``table`` or after a ``result`` event lists every result they
showed. A per-document lock makes concurrent misses render once.

A document is made of pieces (`siasync.uws.deflate`): the few kilobytes that change with
every version, the parameters (rendered once a job has left PENDING: they no longer
change), and the result elements, kept in one growing piece per job, format and base URL
and extended with the results registered since. A new version costs the new results and
a copy of the pieces, not the whole list formatted again; and a client that accepts
``deflate`` gets the pieces' compressed forms joined, a tenth of the bytes, without the
document being compressed again.

The parameters and the new results of a big job (over `BIG` of them) are rendered in the
`siasync.cpu.CpuPool`, off the event loop (the parameters compressed there too).

A document is a function of the job's version (and of the format, the base URL and this
code's release), so its strong ETag is made from those, not from its bytes: a poller
sending ``If-None-Match`` gets 304 as long as the job is unchanged, on any server.
"""

from __future__ import annotations

import asyncio
import bisect
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import msgspec

from siasync import __version__
from siasync.cpu import CpuPool
from siasync.uws.deflate import GrowingPiece, Piece, piece, raw, zlib_stream
from siasync.uws.representations import (
    RESULTS_HEAD,
    TABLE_RESULT,
    job_json_frame,
    job_xml_frame,
    parameters_items,
    parameters_json,
    result_json,
    result_xml,
)
from storage.jobs import Job, JobStore, Result

MAX_ENTRIES = 256
#: parameters or new results beyond which rendering goes to the CPU pool (below, a thread costs more than it saves)
BIG = 1000
#: the places in a JSON job document where its parameters and its results go
_NO_PARAMETERS, _NO_RESULTS = b'"parameters":[]', b'"results":[]'


@dataclass
class Document:
    """A rendered document: its pieces, its strong ETag, and (made on first use) its bytes as they are and
    as a zlib stream."""

    pieces: tuple[Piece, ...]
    etag: str

    @cached_property
    def body(self) -> bytes:
        """The document."""
        return raw(self.pieces)

    @cached_property
    def deflated(self) -> bytes:
        """The document as a zlib stream (``Content-Encoding: deflate``)."""
        return zlib_stream(self.pieces)

    @property
    def deflated_etag(self) -> str:
        """The ETag of the deflated form (another representation: another strong tag)."""
        return self.etag[:-1] + '-deflate"'


@dataclass
class _Entry:
    job: Job
    document: Document


@dataclass
class _Listing:
    """A job's rendered result elements for one base URL and format, in registration order."""

    items: GrowingPiece = field(default_factory=GrowingPiece)
    #: the newest result number after each append to `items`
    seqs: list[int] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class JobDocuments:
    """A bounded cache of rendered job documents: UWS XML, JSON and the results list."""

    def __init__(self, store: JobStore, cpu: CpuPool | None = None) -> None:
        self.store = store
        #: where big parts of documents are rendered (None: on the event loop)
        self.cpu = cpu
        self._entries: OrderedDict[tuple[str, str, str], _Entry] = OrderedDict()
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        self._listings: OrderedDict[tuple[str, str, str], _Listing] = OrderedDict()
        self._parameters: OrderedDict[tuple[str, str, str], Piece] = OrderedDict()

    async def xml(self, job: Job, base: str) -> Document:
        """The UWS XML of the job."""
        async def render() -> tuple[Piece, ...]:
            before, between, after = job_xml_frame(job, base)
            table = result_xml(job.id, TABLE_RESULT, base).encode() if job.start_time is not None else b""
            parameters = await self._parameters_piece(job, base, "xml", lambda: (
                b"<uws:parameters>" + parameters_items(job, base).encode() + b"</uws:parameters>"))
            return (piece(before), parameters, piece(between + b"<uws:results>" + table),
                    await self._listed(job, base, "xml", _xml_item), piece(b"</uws:results>" + after))
        return await self._get(job, base, "xml", render)

    async def json(self, job: Job, base: str) -> Document:
        """The JSON form of the job, encoded."""
        async def render() -> tuple[Piece, ...]:
            head, _, rest = msgspec.json.encode(job_json_frame(job)).partition(_NO_PARAMETERS)
            between, _, tail = rest.partition(_NO_RESULTS)
            parameters = await self._parameters_piece(job, base, "json", lambda: (
                b'"parameters":' + msgspec.json.encode(parameters_json(job, base))))
            # each product's element starts with a comma: it follows the table's, which a job with results has
            table = msgspec.json.encode(result_json(job.id, TABLE_RESULT, base)) if job.start_time is not None else b""
            return (piece(head), parameters, piece(between + b'"results":[' + table),
                    await self._listed(job, base, "json", _json_item), piece(b"]" + tail))
        return await self._get(job, base, "json", render)

    async def results(self, job: Job, base: str) -> Document:
        """The UWS results list of the job."""
        async def render() -> tuple[Piece, ...]:
            table = result_xml(job.id, TABLE_RESULT, base) if job.start_time is not None else ""
            return (piece((RESULTS_HEAD + table).encode()), await self._listed(job, base, "xml", _xml_item),
                    piece(b"</uws:results>"))
        return await self._get(job, base, "results", render)

    async def _off_loop(self, big: bool, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``: in the CPU pool when ``big``, else here."""
        if big and self.cpu is not None:
            return await self.cpu.run("rendering the job", fn, *args)
        return fn(*args)

    async def _parameters_piece(self, job: Job, base: str, kind: str, render: Callable[[], bytes]) -> Piece:
        """The job's parameters, rendered once it has left PENDING (only then are they for good)."""
        big = len(job.parameters) > BIG
        if job.phase == "PENDING":
            return await self._off_loop(big, lambda: piece(render()))
        key = (job.id, base, kind)
        found = self._parameters.get(key)
        if found is None:
            found = self._parameters[key] = await self._off_loop(big, lambda: piece(render()))
            while len(self._parameters) > MAX_ENTRIES:
                self._parameters.popitem(last=False)
        self._parameters.move_to_end(key)
        return found

    async def _listed(self, job: Job, base: str, kind: str, render: Callable[[str, Result, str], bytes]) -> Piece:
        """The job's rendered products up to its version's newest: the growing piece, extended with those
        registered since (up to that newest, so that every version has a place in it to end at)."""
        key = (job.id, base, kind)
        listing = self._listings.get(key)
        if listing is None:
            listing = self._listings[key] = _Listing()
            while len(self._listings) > MAX_ENTRIES:
                self._listings.popitem(last=False)
        self._listings.move_to_end(key)
        async with listing.lock:
            done = listing.seqs[-1] if listing.seqs else 0
            while done < job.last_seq:
                new = [r for r in await self.store.results(job.id, after=done, limit=10_000) if r.seq <= job.last_seq]
                if not new:
                    break
                # rendered off the loop when big, appended here: a request cancelled (or timed out) while the
                # pool renders leaves the piece and its marks as they were
                data = await self._off_loop(len(new) > BIG, lambda n=new: b"".join(render(job.id, r, base) for r in n))
                listing.items.append(data)
                done = new[-1].seq
                listing.seqs.append(done)
            mark = bisect.bisect_right(listing.seqs, job.last_seq)
            if (listing.seqs[mark - 1] if mark else 0) == job.last_seq:
                return listing.items.upto(mark)
        # an older version than the piece's marks (a reader that held it while another extended the piece):
        # its results, rendered apart
        older = [r for r in await self.store.results(job.id, limit=None) if r.seq <= job.last_seq]
        return await self._off_loop(len(older) > BIG, lambda: piece(b"".join(render(job.id, r, base) for r in older)))

    @staticmethod
    def _fresh(entry: _Entry | None, job: Job) -> bool:
        """Whether a rendered document shows the job as it is now: the same version of it (every change bumps it,
        so comparing the versions spares comparing whole jobs, whose positions may number 100,000)."""
        return entry is not None and entry.job.version == job.version

    async def _get(self, job: Job, base: str, kind: str,
                   render: Callable[[], Awaitable[tuple[Piece, ...]]]) -> Document:
        key = (job.id, base, kind)
        entry = self._entries.get(key)
        if self._fresh(entry, job):
            self._entries.move_to_end(key)
            return entry.document
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            entry = self._entries.get(key)
            if not self._fresh(entry, job):
                entry = _Entry(job, Document(await render(), etag(job, base, kind)))
                self._entries[key] = entry
                self._entries.move_to_end(key)
                while len(self._entries) > MAX_ENTRIES:
                    old, _ = self._entries.popitem(last=False)
                    self._locks.pop(old, None)
        return entry.document


def etag(job: Job, base: str, kind: str) -> str:
    """The strong ETag of a job's document: its version, the format and base URL, and this release of the code."""
    return f'"{job.id}.{job.version}.{kind}.{zlib.crc32(f"{base} {__version__}".encode()):08x}"'


def _xml_item(job_id: str, result: Result, base: str) -> bytes:
    return result_xml(job_id, result, base).encode()


def _json_item(job_id: str, result: Result, base: str) -> bytes:
    return b"," + msgspec.json.encode(result_json(job_id, result, base))
