"""Following a job: its Server-Sent Events, reconnected with ``Last-Event-ID``, or polling where there are none."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx

from siasync.client._models import ClientError, JobStatus, Product, Progress, service_error
from siasync.client._sse import SSEDecoder

if TYPE_CHECKING:
    from siasync.client._async import AsyncJob

#: reconnections of a failed event stream (with no event between them) before polling instead, and the first pause
SSE_RETRIES, RECONNECT = 3, 0.5
#: polling pauses: the shortest (while results come) and the longest (while nothing moves)
POLL_MIN, POLL_MAX = 0.5, 3.0
#: the events that tell something (any other is ignored)
KINDS = frozenset({"phase", "progress", "result"})
#: the event stream sends a keep-alive every 15 s: a stream silent for longer is broken
STREAM_TIMEOUT = httpx.Timeout(30.0, read=90.0)


async def follow(job: AsyncJob) -> AsyncIterator[Product | Progress]:
    """Products and changes of phase or progress, each product once, until the job is final."""
    seen: set[str] = set()
    progress, failures, decoder, first = Progress("UNKNOWN"), 0, SSEDecoder(), None
    while failures <= SSE_RETRIES:
        decoder = SSEDecoder(decoder.last_event_id, decoder.retry)  # a new connection starts with empty buffers
        headers = {"Accept": "text/event-stream"}
        if decoder.last_event_id:
            headers["Last-Event-ID"] = decoder.last_event_id
        try:
            async with job.client.http.stream("GET", f"{job.url}/events", headers=headers,
                                              timeout=STREAM_TIMEOUT) as response:
                if response.status_code == 404:
                    first = await job.info()  # raises when the job itself is gone
                    break  # a service without events
                if response.status_code >= 400 and response.status_code not in (502, 503, 504):
                    await response.aread()
                    raise service_error(response)
                if response.status_code < 400:
                    async for line in response.aiter_lines():
                        if (event := decoder.decode(line)) is None:
                            continue
                        failures = 0
                        if event.event not in KINDS:  # such as Litestar's keep-alive: a comment with empty data
                            continue
                        for update in _apply(event.event, _event_data(event.data), progress, seen):
                            progress = update if isinstance(update, Progress) else progress
                            yield update
            if progress.final:
                return
        except httpx.TransportError:
            pass  # the stream broke: reconnect, from the last event seen
        failures += 1
        await asyncio.sleep(decoder.retry / 1000 if decoder.retry else RECONNECT * 2 ** (failures - 1))
    async for update in _poll(job, seen, first):
        yield update


async def _poll(job: AsyncJob, seen: set[str], status: JobStatus | None) -> AsyncIterator[Product | Progress]:
    """Follow the job document: the products not seen yet, and its progress when it changes."""
    previous, pause = None, POLL_MIN
    while True:
        status = status or await job.info()
        fresh = [p for p in status.results if p.id not in seen]
        for product in fresh:
            seen.add(product.id)
            yield product
        progress = Progress(status.phase, status.info)
        if progress != previous:
            previous = progress
            yield progress
        if progress.final:
            return
        pause = POLL_MIN if fresh else min(pause * 1.5, POLL_MAX)
        await asyncio.sleep(pause)
        status = None


def _apply(kind: str, data: dict[str, Any], progress: Progress, seen: set[str]) -> list[Product | Progress]:
    """What one event of the stream tells: a new product, or the job's new phase or progress."""
    if kind == "result":
        product = Product.from_json(data)
        if product.id in seen:
            return []
        seen.add(product.id)
        return [product]
    if kind == "phase":
        return [Progress(str(data["phase"]), progress.info)]
    if kind == "progress":
        return [Progress(progress.phase, data)]
    return []


def _event_data(data: str) -> dict[str, Any]:
    try:
        decoded = json.loads(data)
    except ValueError:
        decoded = None
    if not isinstance(decoded, dict):
        raise ClientError(f"the event stream sent malformed data: {data[:80]!r}")
    return decoded
