"""Server-Sent Events of a job: ``phase``, ``progress`` and ``times`` changes, and a ``result`` per product.

``times`` carries the job's start, quote and end instants (ISO 8601, null when unknown). A
``result`` names the image it was cut from (or the co-add: ``mosaic-r``, ``stack``) with the
image's collection and band, so that a page filtering by them places it without asking.

Result events carry the result's sequence number as their id, so a client that
reconnects with ``Last-Event-ID`` receives exactly the results it has not seen.
The stream ends once the job is in a final phase and every result has been sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

from litestar.response import ServerSentEventMessage

from siasync.errors import UsageError
from siasync.uws.jobs import ACTIVE, JobService
from siasync.uws.representations import image_label, iso, job_info, result_url

KEEPALIVE_S = 15.0
_SEQUENCE = re.compile(r"[0-9]{1,18}")


def last_event_id(value: str | None) -> int:
    """The sequence number a reconnecting client has seen (0 for none)."""
    text = (value or "").strip()  # str.strip takes more whitespace than int() does (\x1c-\x1f)
    if not text:
        return 0
    # str.isdigit also takes '²' and other digits int() refuses; a sequence number has at most 18 digits
    if not _SEQUENCE.fullmatch(text):
        raise UsageError("Last-Event-ID", f"expected a result sequence number, got {value!r}")
    return int(text)


async def job_events(service: JobService, job_id: str, after: int, base: str) -> AsyncIterator[ServerSentEventMessage]:
    """The event stream of one job, from result ``after`` on."""
    phase, info, times = None, None, None
    while True:
        armed = service.results_watch.arm(job_id)  # a result or phase change from here on wakes the wait below
        job = await service.store.get(job_id)
        if job is None:
            yield ServerSentEventMessage(event="phase", data=json.dumps({"phase": "DESTROYED"}))
            return
        if job.phase != phase:
            phase = job.phase
            yield ServerSentEventMessage(event="phase", data=json.dumps({"phase": phase}))
        results = await service.store.results(job_id, after, limit=1000)
        for r in results:
            after = r.seq
            image = r.meta.get("image")
            collection, band = image_label(service.index, image) if service.index is not None and image else ("", "")
            yield ServerSentEventMessage(event="result", id=r.seq, data=json.dumps({
                "id": r.result_id, "href": result_url(base, job_id, r.result_id), "field": r.meta.get("field"),
                "size": r.size, "mime-type": r.mime_type, "image": image,
                "collection": collection or None, "band": band or None}))
        current = job_info(job)
        if current != info:
            info = current
            yield ServerSentEventMessage(event="progress", data=json.dumps(current))
        now = {"startTime": iso(job.start_time) or None, "quote": iso(job.quote) or None,
               "endTime": iso(job.end_time) or None}
        if now != times:
            times = now
            yield ServerSentEventMessage(event="times", data=json.dumps(now))
        if results:
            continue
        if job.phase not in ACTIVE:
            return
        woken = await service.results_watch.wait(job_id, KEEPALIVE_S, armed)
        if not woken:
            yield ServerSentEventMessage(comment="keep-alive", data=None)  # no data line: no empty message event
