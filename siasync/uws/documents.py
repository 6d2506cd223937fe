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
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from siasync.uws.representations import TABLE_RESULT, job_json, job_xml, result_json, result_xml, results_xml
from storage.jobs import Job, JobStore

MAX_ENTRIES = 256


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

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._entries: OrderedDict[tuple[str, str, str], _Entry] = OrderedDict()
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        self._listings: OrderedDict[tuple[str, str, str], _Listing] = OrderedDict()

    async def xml(self, job: Job, base: str) -> Document:
        """The UWS XML of the job."""
        async def render() -> bytes:
            return job_xml(job, await self._results_xml(job, base), base)
        return await self._get(job, base, "xml", render)

    async def json(self, job: Job, base: str) -> Document:
        """The JSON form of the job, encoded."""
        async def render() -> bytes:
            table = [result_json(job.id, TABLE_RESULT, base)] if job.start_time is not None else []
            return msgspec.json.encode(job_json(job, table + await self._listed(job.id, base, "json", result_json),
                                                base))
        return await self._get(job, base, "json", render)

    async def results(self, job: Job, base: str) -> Document:
        """The UWS results list of the job."""
        async def render() -> bytes:
            return results_xml(await self._results_xml(job, base))
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
                listing.parts.extend(render(job_id, r, base) for r in new)
                listing.seq = new[-1].seq
        return listing.parts

    @staticmethod
    def _fresh(entry: _Entry | None, job: Job) -> bool:
        """Whether a rendered document shows the job as it is now: the same version of it."""
        return entry is not None and entry.job.version == job.version and entry.job == job

    async def _get(self, job: Job, base: str, kind: str, render: Callable[[], Awaitable[bytes]]) -> Document:
        key = (job.id, base, kind)
        entry = self._entries.get(key)
        if self._fresh(entry, job):
            self._entries.move_to_end(key)
            return entry.document
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            entry = self._entries.get(key)
            if not self._fresh(entry, job):
                entry = _Entry(job, Document.of(await render()))
                self._entries[key] = entry
                self._entries.move_to_end(key)
                while len(self._entries) > MAX_ENTRIES:
                    old, _ = self._entries.popitem(last=False)
                    self._locks.pop(old, None)
        return entry.document
