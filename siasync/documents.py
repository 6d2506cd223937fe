"""Job documents rendered once and shared by every client polling the same job.

A job with tens of thousands of results renders to megabytes; a hundred pollers
must not each render it. A document is re-rendered when the job changes. While
only its progress and results move, it is re-rendered at most every `MAX_AGE`
seconds (pollers may see a list up to that old, never a result that does not
exist); any other change, such as the phase, is shown at once. A per-job lock makes
concurrent misses render once.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from siasync.representations import job_json, job_xml, listed_results
from storage.jobs import Job, JobStore

MAX_AGE = 0.5
MAX_ENTRIES = 256


@dataclass
class _Entry:
    job: Job
    last_seq: int
    at: float
    body: Any


class JobDocuments:
    """A bounded cache of rendered job documents (XML bytes or JSON data)."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._entries: OrderedDict[tuple[str, str, str], _Entry] = OrderedDict()
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}

    async def xml(self, job: Job, base: str) -> bytes:
        """The UWS XML of the job."""
        return await self._get(job, base, "xml", job_xml)

    async def json(self, job: Job, base: str) -> dict[str, Any]:
        """The JSON form of the job."""
        return await self._get(job, base, "json", job_json)

    def _fresh(self, entry: _Entry | None, job: Job, last_seq: int) -> bool:
        """Whether a rendered document may be served for the job as it is now.

        Only progress (jobInfo) and new results may be shown up to `MAX_AGE` late;
        any other change to the job (phase, times, parameters, errors) is shown at once.
        """
        if entry is None or replace(entry.job, info={}) != replace(job, info={}):
            return False
        return (entry.job.info == job.info and entry.last_seq == last_seq) or time.monotonic() - entry.at < MAX_AGE

    async def _get(self, job: Job, base: str, kind: str, render: Callable[..., Any]) -> Any:
        key = (job.id, base, kind)
        last_seq = await self.store.last_result_seq(job.id)
        entry = self._entries.get(key)
        if self._fresh(entry, job, last_seq):
            self._entries.move_to_end(key)
            return entry.body
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            entry = self._entries.get(key)
            if not self._fresh(entry, job, last_seq):
                results = listed_results(job, await self.store.results(job.id))
                entry = _Entry(job, last_seq, time.monotonic(), render(job, results, base))
                self._entries[key] = entry
                self._entries.move_to_end(key)
                while len(self._entries) > MAX_ENTRIES:
                    old, _ = self._entries.popitem(last=False)
                    self._locks.pop(old, None)
        return entry.body
