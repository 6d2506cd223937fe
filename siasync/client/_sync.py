"""The synchronous client: `Client` and `Job` run the asynchronous ones on a private event loop.

The loop lives in a daemon thread owned by the client, so the synchronous API works in
scripts and in notebooks (whose own loop is left alone), and both APIs share one
implementation. Callbacks given to `Job.fetch` run in that thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import weakref
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Self, TypeVar

import httpx

from siasync.client._async import AsyncClient, AsyncJob
from siasync.client._models import JobRef, JobStatus, Product, Progress
from siasync.client.fetch import FetchProgress, ProgressCallback, fetch

T = TypeVar("T")


class _Portal:
    """An event loop in a thread, and the way in from synchronous code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="siasync-client", daemon=True)
        self._thread.start()
        self._finalizer = weakref.finalize(self, _stop, self.loop, self._thread)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the loop and wait for it; an interrupt (Ctrl-C) cancels it."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            concurrent.futures.wait([future], timeout=10)  # let it clean up (partial files) before going on
            raise

    def iterate(self, iterator: AsyncIterator[T]) -> Iterator[T]:
        """An asynchronous iterator, iterated from synchronous code."""
        try:
            while True:
                try:
                    yield self.call(iterator.__anext__())  # type: ignore[arg-type]
                except StopAsyncIteration:
                    return
        finally:
            if not self.loop.is_closed():
                self.call(iterator.aclose())  # type: ignore[attr-defined]

    def close(self) -> None:
        """Stop the loop and its thread."""
        self._finalizer()


def _stop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    if not loop.is_closed():
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


class Client:
    """A synchronous client of one siasync service.

    Parameters
    ----------
    base_url : str
        The service root, such as ``http://127.0.0.1:8000``.
    token : str, optional
        A bearer token, for a service in ``token`` auth mode.
    timeout : float
        Seconds to wait for a connection or for data, per request.
    transport : httpx.AsyncBaseTransport, optional
        A custom transport (tests use ``httpx.MockTransport``).

    Examples
    --------
    >>> with Client("http://127.0.0.1:8000") as client:          # doctest: +SKIP
    ...     job = client.submit(pos=[(150.1, 2.2)], size=0.05)
    ...     for product in job.stream():
    ...         print(product.id, product.size)
    """

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._portal = _Portal()
        self.aio = AsyncClient(base_url, token, timeout=timeout, transport=transport)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def base_url(self) -> str:
        """The service root."""
        return self.aio.base_url

    def close(self) -> None:
        """Close the connections and stop the client's thread."""
        if not self._portal.loop.is_closed():
            self._portal.call(self.aio.aclose())
            self._portal.close()

    def submit(self, pos: Iterable[tuple[float, float]] = (), size: float | tuple[float, float] | None = None,
               format: str | None = None, collection: Iterable[str] = (), band: Iterable[str] = (),
               positions_file: Path | str | None = None, run: bool = True, *, intersect: str | None = None,
               run_id: str | None = None, params: Mapping[str, str] | None = None) -> Job:
        """Create a job (and run it, unless ``run`` is false); the parameters are those of `AsyncClient.submit`."""
        return Job(self, self._portal.call(self.aio.submit(
            pos, size, format, collection, band, positions_file, run, intersect=intersect, run_id=run_id,
            params=params)))

    def job(self, url: str) -> Job:
        """The job at ``url`` (or with this id at this service)."""
        return Job(self, self.aio.job(url))

    def jobs(self, phase: Iterable[str] = (), last: int | None = None) -> list[JobRef]:
        """The job list (``phase`` filters; ``last``: the newest n)."""
        return self._portal.call(self.aio.jobs(phase, last))


class Job:
    """One job, synchronously: its phase and progress, its products as they come, and their download."""

    def __init__(self, client: Client, job: AsyncJob) -> None:
        self.client, self.aio = client, job

    def __repr__(self) -> str:
        return f"Job({self.url!r})"

    @property
    def url(self) -> str:
        """The job's URL."""
        return self.aio.url

    @property
    def id(self) -> str:
        """The job id."""
        return self.aio.id

    @property
    def phase(self) -> str:
        """The current phase (asked of the service at each use)."""
        return self._call(self.aio.phase())

    def info(self, wait: float | None = None) -> JobStatus:
        """The job document; with ``wait``, block up to that many seconds while the job is active."""
        return self._call(self.aio.info(wait))

    def results(self) -> list[Product]:
        """The products listed so far."""
        return self._call(self.aio.results())

    def wait(self, timeout: float | None = None) -> JobStatus:
        """Block until the job is final (or ``timeout`` seconds passed); return the job document."""
        return self._call(self.aio.wait(timeout))

    def table(self) -> bytes:
        """The SIAP VOTable of the products registered so far."""
        return self._call(self.aio.table())

    def abort(self) -> None:
        """Stop the job; the products made so far are kept."""
        self._call(self.aio.abort())

    def delete(self) -> None:
        """Destroy the job and every file it staged."""
        self._call(self.aio.delete())

    def stream(self) -> Iterator[Product]:
        """Each product as soon as it is listed, until the job is final."""
        return self.client._portal.iterate(self.aio.stream())

    def updates(self) -> Iterator[Product | Progress]:
        """Products and changes of phase or progress, until the job is final."""
        return self.client._portal.iterate(self.aio.updates())

    def download(self, product: Product, directory: Path | str) -> Path:
        """Download one product into ``directory`` (unless complete there); return its path."""
        return self._call(self.aio.download(product, directory))

    def fetch(self, directory: Path | str, progress: ProgressCallback | None = None) -> FetchProgress:
        """Download every product into ``directory`` as they come, and the table; see `siasync.client.fetch`."""
        return self._call(fetch(self.aio, directory, progress))

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.client._portal.call(coro)
