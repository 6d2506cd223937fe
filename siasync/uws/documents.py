"""Job documents rendered once and shared by every client polling the same job.

A job with tens of thousands of results renders to megabytes; a hundred pollers
must not each render it. A document is re-rendered when the job changes, and only
then: when its version (`storage.jobs.Job.version`, bumped by every change to the job
or its results, on any server) differs from the rendered one's. Every read shows the
job as the store holds it, so a results list read after the ``table`` or after a
``result`` event lists every result they showed. A per-document lock makes concurrent
misses render once.

Results are only ever appended to a job, so each job's rendered result elements are
kept and extended with the results registered since: a re-render reads and formats
only the new results, not the whole list again.

Each document carries a strong ETag, a digest of its bytes computed once per render,
so a poller sending ``If-None-Match`` is answered 304 for as long as the job is unchanged.

A big job's document (thousands of parameters or results) is rendered in the `siasync.cpu.CpuPool`,
off the event loop; so are the result elements of a big batch of new results.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from siasync.cpu import CpuPool
from siasync.uws.representations import TABLE_RESULT, job_json, job_xml, result_json, result_xml, results_xml
from storage.jobs import Job, JobStore

MAX_ENTRIES = 256
#: parameters or new results beyond which rendering goes to the CPU pool (below, a thread costs more than it saves)
BIG = 1000


@dataclass(frozen=True)
class Document:
    """A rendered document and its strong ETag (quoted, as sent in the header)."""

    body: bytes
    etag: str

    @classmethod
    def of(cls, body: bytes) -> Document:
        """The document of these bytes, its ETag their digest."""
        return cls(body, f'"{hashlib.blake2b(body, digest_size=12).hexdigest()}"')


@dataclass
class _Entry:
    job: Job
    document: Document


@dataclass
class _Listing:
    """A job's rendered result elements for one base URL and format, in registration order."""

    parts: list[Any] = field(default_factory=list)
    seq: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class JobDocuments:
    """A bounded cache of rendered job documents: UWS XML, JSON and the results list."""

    def __init__(self, store: JobStore, cpu: CpuPool | None = None) -> None:
        self.store = store
        #: where big documents are rendered (None: on the event loop)
        self.cpu = cpu
        self._entries: OrderedDict[tuple[str, str, str], _Entry] = OrderedDict()
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        self._listings: OrderedDict[tuple[str, str, str], _Listing] = OrderedDict()

    async def _off_loop(self, big: bool, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``: in the CPU pool when ``big``, else here."""
        if big and self.cpu is not None:
            return await self.cpu.run("rendering the job", fn, *args)
        return fn(*args)

    async def xml(self, job: Job, base: str) -> Document:
        """The UWS XML of the job."""
        async def render() -> bytes:
            results = await self._results_xml(job, base)
            return await self._off_loop(len(job.parameters) > BIG or job.last_seq > BIG, _document, job_xml, job,
                                        results, base)
        return await self._get(job, base, "xml", render)

    async def json(self, job: Job, base: str) -> Document:
        """The JSON form of the job, encoded."""
        async def render() -> bytes:
            table = [result_json(job.id, TABLE_RESULT, base)] if job.start_time is not None else []
            listed = table + await self._listed(job.id, base, "json", result_json)
            return await self._off_loop(len(job.parameters) > BIG or len(listed) > BIG, _document,
                                        lambda: msgspec.json.encode(job_json(job, listed, base)))
        return await self._get(job, base, "json", render)

    async def results(self, job: Job, base: str) -> Document:
        """The UWS results list of the job."""
        async def render() -> bytes:
            return await self._off_loop(job.last_seq > BIG, _document, results_xml, await self._results_xml(job, base))
        return await self._get(job, base, "results", render)

    async def _results_xml(self, job: Job, base: str) -> str:
        """The job's ``uws:result`` elements: the growing table first, once started, then the products."""
        table = result_xml(job.id, TABLE_RESULT, base) if job.start_time is not None else ""
        return table + "".join(await self._listed(job.id, base, "xml", result_xml))

    async def _listed(self, job_id: str, base: str, kind: str, render: Callable[[str, Any, str], Any]) -> list[Any]:
        """The rendered products of a job so far, extended with those registered since the last call."""
        key = (job_id, base, kind)
        listing = self._listings.get(key)
        if listing is None:
            listing = self._listings[key] = _Listing()
            while len(self._listings) > MAX_ENTRIES:
                self._listings.popitem(last=False)
        self._listings.move_to_end(key)
        async with listing.lock:
            while new := await self.store.results(job_id, after=listing.seq, limit=10_000):
                listing.parts.extend(await self._off_loop(len(new) > BIG, lambda n=new: [render(job_id, r, base)
                                                                                           for r in n]))
                listing.seq = new[-1].seq
        return listing.parts

    @staticmethod
    def _fresh(entry: _Entry | None, job: Job) -> bool:
        """Whether a rendered document shows the job as it is now: the same version of it."""
        return entry is not None and entry.job.version == job.version and entry.job == job

    async def _get(self, job: Job, base: str, kind: str, render: Callable[[], Awaitable[Document]]) -> Document:
        key = (job.id, base, kind)
        entry = self._entries.get(key)
        if self._fresh(entry, job):
            self._entries.move_to_end(key)
            return entry.document
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            entry = self._entries.get(key)
            if not self._fresh(entry, job):
                entry = _Entry(job, await render())
                self._entries[key] = entry
                self._entries.move_to_end(key)
                while len(self._entries) > MAX_ENTRIES:
                    old, _ = self._entries.popitem(last=False)
                    self._locks.pop(old, None)
        return entry.document


def _document(fn: Callable[..., bytes], *args: Any) -> Document:
    """The document ``fn(*args)`` renders, with its ETag (a digest of megabytes: with the rendering, off the loop)."""
    return Document.of(fn(*args))
