"""The asynchronous client: `AsyncClient` creates and lists jobs, `AsyncJob` follows and downloads one."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import httpx

from siasync.client._files import Output, part_path
from siasync.client._follow import follow
from siasync.client._models import (
    ClientError,
    JobRef,
    JobStatus,
    Product,
    Progress,
    TransferError,
    job_form,
    service_error,
    upload_part,
)

if TYPE_CHECKING:
    from siasync.client.fetch import FetchProgress, ProgressCallback

#: attempts of a request that failed on the network (or with 502/503/504), and the first pause between them
RETRIES, BACKOFF = 4, 0.5
JSON = {"Accept": "application/json"}
_IDEMPOTENT = {"GET", "HEAD", "DELETE"}
#: the SHA-256 in a ``Repr-Digest`` (RFC 9530: ``sha-256=:B64:``) or ``Digest`` (RFC 3230: ``sha-256=B64``) header
_SHA256 = re.compile(r"(?:^|,)\s*sha-256=:?([A-Za-z0-9+/=]+):?\s*(?:,|$)", re.IGNORECASE)


class AsyncClient:
    """A client of one siasync service (or any UWS 1.1 service with the same JSON and events).

    Parameters
    ----------
    base_url : str
        The service root, such as ``http://127.0.0.1:8000`` (a trailing ``/async`` is accepted).
    token : str, optional
        A bearer token, for a service in ``token`` auth mode.
    timeout : float
        Seconds to wait for a connection or for data, per request.
    transport : httpx.AsyncBaseTransport, optional
        A custom transport (tests use ``httpx.MockTransport``).
    """

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/").removesuffix("/async")
        headers = {"User-Agent": "siasync-client"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.AsyncClient(headers=headers, timeout=timeout, transport=transport)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self.http.aclose()

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request, retried on network failures where that is safe; error statuses raise `ServiceError`."""
        for attempt in range(RETRIES + 1):
            try:
                response = await self.http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                # a request that never reached the service can always be sent again
                if attempt == RETRIES or (method not in _IDEMPOTENT and not isinstance(exc, httpx.ConnectError)):
                    raise TransferError(f"cannot reach {url}: {describe(exc)}") from exc
            else:
                if response.status_code < 400:
                    return response
                if response.status_code not in (502, 503, 504) or method not in _IDEMPOTENT or attempt == RETRIES:
                    raise service_error(response)
            await asyncio.sleep(BACKOFF * 2**attempt)
        raise AssertionError("unreachable")

    async def submit(self, pos: Iterable[tuple[float, float]] = (), size: float | tuple[float, float] | None = None,
                     format: str | None = None, collection: Iterable[str] = (), band: Iterable[str] = (),
                     positions_file: Path | str | None = None, run: bool = True, *, intersect: str | None = None,
                     run_id: str | None = None, params: Mapping[str, str] | None = None) -> AsyncJob:
        """Create a job (and run it, unless ``run`` is false).

        Parameters
        ----------
        pos : iterable of (float, float)
            The fields' centres (ICRS degrees), one POS each.
        size : float or (float, float)
            SIZE in degrees (optional when a positions file gives each field's size).
        format, collection, band, intersect, run_id
            FORMAT, COLLECTION, BAND, INTERSECT and RUNID, as the service takes them.
        positions_file : path, optional
            A CSV or VOTable of positions, sent as a DALI upload (``UPLOAD=fields,param:fields``).
        run : bool
            Send ``PHASE=RUN`` with the job.
        params : mapping, optional
            Any other job parameters by name, such as ``{"MODE": "stack", "NAXIS": "512"}``.

        Returns
        -------
        AsyncJob
            The new job.
        """
        form = job_form(pos, size, format, collection, band, intersect, run_id, run, positions_file is not None, params)
        files = {"fields": upload_part(Path(positions_file))} if positions_file is not None else None
        response = await self.request("POST", f"{self.base_url}/async", data=form, files=files)
        location = response.headers.get("location")
        if location is None:
            raise ClientError(f"the service created no job: HTTP {response.status_code} without a Location")
        return self.job(str(response.url.join(location)))

    def job(self, url: str) -> AsyncJob:
        """The job at ``url`` (or with this id at this service)."""
        if "://" not in url:
            url = f"{self.base_url}/async/{url}"
        return AsyncJob(self, url)

    async def jobs(self, phase: Iterable[str] = (), last: int | None = None) -> list[JobRef]:
        """The job list, newest first when ``last`` is given (``phase`` filters, as UWS PHASE)."""
        params: list[tuple[str, str | int]] = [("PHASE", p) for p in phase]
        if last is not None:
            params.append(("LAST", last))
        response = await self.request("GET", f"{self.base_url}/async", params=params, headers=JSON)
        return [JobRef.from_json(item) for item in decode_json(response)]


class AsyncJob:
    """One job: its phase and progress, its products as they come, and their download."""

    def __init__(self, client: AsyncClient, url: str) -> None:
        self.client, self.url = client, url.rstrip("/")

    def __repr__(self) -> str:
        return f"AsyncJob({self.url!r})"

    @property
    def id(self) -> str:
        """The job id (the last part of its URL)."""
        return self.url.rsplit("/", 1)[-1]

    async def phase(self) -> str:
        """The current phase."""
        return (await self.client.request("GET", f"{self.url}/phase")).text.strip()

    async def info(self, wait: float | None = None) -> JobStatus:
        """The job document; with ``wait``, block up to that many seconds while the job is active (UWS WAIT)."""
        params = {"WAIT": str(int(wait))} if wait is not None else None
        timeout = httpx.Timeout((self.client.http.timeout.read or 30.0) + wait) if wait else httpx.USE_CLIENT_DEFAULT
        response = await self.client.request("GET", self.url, params=params, headers=JSON, timeout=timeout)
        return JobStatus.from_json(decode_json(response))

    async def results(self) -> list[Product]:
        """The products listed so far (the table is left out; see `table`)."""
        return list((await self.info()).results)

    async def wait(self, timeout: float | None = None) -> JobStatus:
        """Block until the job is final (or ``timeout`` seconds passed); return the job document."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        status = await self.info()
        while not status.final and (deadline is None or loop.time() < deadline):
            left = 30.0 if deadline is None else max(1.0, min(30.0, deadline - loop.time()))
            status = await self.info(wait=left)
        return status

    async def table(self) -> bytes:
        """The SIAP VOTable of the products registered so far."""
        return (await self.client.request("GET", f"{self.url}/results/table")).content

    async def abort(self) -> None:
        """Stop the job; the products made so far are kept."""
        await self.client.request("POST", f"{self.url}/phase", data={"PHASE": "ABORT"})

    async def delete(self) -> None:
        """Destroy the job and every file it staged."""
        await self.client.request("DELETE", self.url)

    async def stream(self) -> AsyncIterator[Product]:
        """Each product, as soon as it is listed (the ones already made first), until the job is final."""
        async for update in self.updates():
            if isinstance(update, Product):
                yield update

    def updates(self) -> AsyncIterator[Product | Progress]:
        """Products and changes of phase or progress, until the job is final.

        Follows the Server-Sent Events stream, reconnecting with ``Last-Event-ID``; polls the
        job document instead where the service has no stream or the stream keeps failing.
        Every product is yielded once.
        """
        return follow(self)

    async def fetch(self, directory: Path | str, progress: ProgressCallback | None = None,
                    parallel: int = 4) -> FetchProgress:
        """Download every product into ``directory`` as they come, and the table; see `siasync.client.fetch`."""
        from siasync.client.fetch import fetch  # fetch builds on this module

        return await fetch(self, directory, progress, parallel)

    async def download(self, product: Product, directory: Path | str) -> Path:
        """Download one product into ``directory`` (named by its id), unless its file there is complete."""
        with Output(directory) as out:
            await self.download_into(out, product)
        return out.target(product)

    async def download_into(self, out: Output, product: Product) -> int | None:
        """Download a product into an open `Output`: the bytes written, or None when its file was complete.

        The file is written under a hidden temporary name and renamed once its size is right and
        its SHA-256 is the one the service gives (``Repr-Digest`` or ``Digest``, when it gives one).
        Network failures, short transfers and wrong checksums are retried.
        """
        target = out.target(product)
        complete = out.complete(product)
        if complete:
            return None
        etag = out.etag(product) if complete is None else None
        headers = {"If-None-Match": etag} if etag else {}
        part, problem = part_path(target), ""
        for attempt in range(RETRIES + 1):
            try:
                async with self.client.http.stream("GET", product.href, headers=headers) as response:
                    if response.status_code == 304:
                        return None
                    if response.status_code >= 400:
                        await response.aread()
                        if response.status_code not in (502, 503, 504):
                            raise service_error(response)
                        problem = f"HTTP {response.status_code}"
                    else:
                        written, sha256 = await _write(response, part)
                        expected = product.size if product.size is not None else _length(response)
                        announced = _sha256(response)
                        if expected is not None and written != expected:
                            problem = f"got {written} of {expected} bytes"
                        elif announced is not None and sha256 != announced:
                            problem = (f"the SHA-256 of the {written} bytes received is {sha256}, the service's is "
                                       f"{announced}: the file differs from the one made")
                        else:
                            os.replace(part, target)
                            out.record_etag(product, response.headers.get("etag"))
                            return written
            except httpx.TransportError as exc:
                problem = describe(exc)
            finally:
                part.unlink(missing_ok=True)
            if attempt < RETRIES:
                await asyncio.sleep(BACKOFF * 2**attempt)
        raise TransferError(f"{product.id}: {problem} (after {RETRIES + 1} attempts)")


async def _write(response: httpx.Response, part: Path) -> tuple[int, str]:
    """Write the body into ``part``: its length and its SHA-256 (hexadecimal)."""
    # plain writes: a chunk of at most 256 KiB goes to the page cache in microseconds, less than a thread hop costs
    written, digest = 0, hashlib.sha256()
    with open(part, "wb") as f:
        async for chunk in response.aiter_bytes(256 * 1024):
            f.write(chunk)
            digest.update(chunk)
            written += len(chunk)
    return written, digest.hexdigest()


def _sha256(response: httpx.Response) -> str | None:
    """The SHA-256 of the whole file (hexadecimal) the service announced, if any (of a 200 answer only: a part's
    bytes are not the whole file's)."""
    if response.status_code != 200:
        return None
    for header in ("repr-digest", "digest"):
        match = _SHA256.search(response.headers.get(header, ""))
        if match:
            try:
                return base64.b64decode(match.group(1), validate=True).hex()
            except ValueError:
                return None
    return None


def _length(response: httpx.Response) -> int | None:
    """The length of the body as sent (None when unknown, or when it is encoded, such as compressed)."""
    if response.headers.get("content-encoding", "identity") != "identity":
        return None
    value = response.headers.get("content-length")
    return int(value) if value and value.isdigit() else None


def decode_json(response: httpx.Response) -> Any:
    """The JSON body of a response, or a clear error when it is not JSON."""
    try:
        return response.json()
    except ValueError:
        kind = response.headers.get("content-type", "no content type")
        raise ClientError(f"expected JSON from {response.request.url}, got {kind}") from None


def describe(exc: BaseException) -> str:
    """A network error in one line (httpx's messages are sometimes empty)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
