"""The tests' remote archives, on loopback: the real servers cannot be reached from the test machines.

Run alone (``python -m tests.e2e.loopback_remote --upstream URL --archive DIR --port N``), it serves
until interrupted, without faults: the README's example of remote collections uses it so.

`Loopback` is one HTTP server (uvicorn, in a thread of the test process) that plays two parts:

* **a proxy** to a second siasync process serving the demo archive, which is the remote
  SIAP 1.0 (``/sia``), SIA 2.0 (``/sia2``), DataLink and SODA archive: every request is
  passed on unchanged (so pyvo and astroquery, in the server under test, talk to a real
  siasync), except where a test injects a fault;
* **a stand-in for the hips2fits service** (``/hips2fits``), which cannot be reached from
  here: it answers the hips2fits protocol (``hips``, and ``wcs`` as a JSON header or
  ``width``/``height``/``projection``/``ra``/``dec``/``fov``/``rotation_angle``; ``format=fits``)
  by computing the requested grid from the demo archive with siasync's own mosaic code
  (`cutout.mosaic`). Its surveys are named ``DEMO/P/<COLLECTION>/<band>``. It is not CDS's
  service, whose HiPS are built from real surveys; it only speaks its protocol, as
  astroquery's client uses it, so that the service's HiPS path runs end to end.

**Faults** (`Loopback.fault`), per path prefix: a delay before answering, an HTTP status
instead of the answer, a body cut short of its Content-Length, a malformed body (HTML
where FITS or a VOTable was asked for), or holding requests until released; each for the
next N requests or all of them. `Loopback.count` says how many requests a prefix received.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import numpy as np
import uvicorn
from astropy.io import fits

from cutout.engine import ParentImage
from cutout.errors import NoOverlapError
from cutout.index import ArchiveIndex
from cutout.mosaic import Grid, coadd, read_input
from cutout.sky import Field, Intersect
from tests.e2e.conftest import free_port

#: the path prefixes faults and counts are kept for
PREFIXES = ("/hips2fits", "/sia2", "/sia", "/datalink", "/archive", "/soda")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length",
              "content-encoding"}


@dataclass
class Fault:
    """What to do to the requests of a prefix: ``times`` of them (None: every one)."""

    delay: float = 0.0
    status: int | None = None
    truncate: bool = False
    garbage: bool = False
    hold: bool = False
    times: int | None = None


class Hips2FitsStandIn:
    """The hips2fits protocol over the demo archive, computed with `cutout.mosaic` (see the module docstring)."""

    def __init__(self, archive: Path) -> None:
        self.index = ArchiveIndex.load(archive)

    def answer(self, params: dict[str, str]) -> tuple[int, str, bytes]:
        """(status, content type, body) for a hips2fits query."""
        hips = params.get("hips", "")
        parts = hips.split("/")
        if len(parts) != 4 or parts[:2] != ["DEMO", "P"] or parts[2] not in self.index.collections:
            return _refusal("Unknown HiPS", f"no HiPS {hips!r} here: DEMO/P/<COLLECTION>/<band>")
        if params.get("format", "fits") != "fits":
            return _refusal("Bad format", "this stand-in makes FITS only")
        try:
            grid = _grid(params)
        except (KeyError, ValueError) as exc:
            return _refusal("Bad request", f"{type(exc).__name__}: {exc}")
        collection, band = parts[2], parts[3]
        nx, ny = grid.naxis
        scale = abs(grid.cdelt[1])
        extent = min(30.0, max(nx, ny) * scale * 1.5)
        field = Field(grid.crval[0] % 360.0, grid.crval[1], extent, extent)
        inputs = []
        for record in self.index.lookup(field, Intersect.OVERLAPS, [collection], [band]):
            with ParentImage(self.index.path_of(record), record.hdu, record.id, record.path) as parent:
                try:
                    inputs.append(read_input(parent, grid, band, record.mjd))
                except NoOverlapError:
                    continue
        header = grid.header()
        data = coadd(inputs, grid).data if inputs else np.full(grid.shape, np.nan, dtype=np.float32)
        header["HIPS"] = (hips, "a collection and band of the demo archive")
        return 200, "application/fits", _fits_bytes(fits.PrimaryHDU(data, header))


def _grid(params: dict[str, str]) -> Grid:
    if "wcs" in params:
        header = json.loads(params["wcs"])
        proj = str(header["CTYPE1"])[5:8]
        c1 = float(header.get("CDELT1", 1.0)) * float(header.get("PC1_1", 1.0))
        c2 = float(header.get("CDELT2", 1.0)) * float(header.get("PC2_2", 1.0))
        return Grid(naxis=(int(header["NAXIS1"]), int(header["NAXIS2"])),
                    crval=(float(header["CRVAL1"]), float(header["CRVAL2"])), cdelt=(c1, c2),
                    crpix=(float(header["CRPIX1"]), float(header["CRPIX2"])), proj=proj)
    width, height = int(params["width"]), int(params["height"])
    step = float(params["fov"]) / max(width, height)
    return Grid(naxis=(width, height), crval=(float(params["ra"]), float(params["dec"])), cdelt=(-step, step),
                crpix=((width + 1) / 2, (height + 1) / 2), rotang=float(params.get("rotation_angle", 0.0)),
                proj=params.get("projection", "TAN"))


def _refusal(title: str, description: str) -> tuple[int, str, bytes]:
    return 400, "application/json", json.dumps({"title": title, "description": description}).encode()


def _fits_bytes(hdu: fits.PrimaryHDU) -> bytes:
    import io

    buffer = io.BytesIO()
    hdu.writeto(buffer)
    return buffer.getvalue()


class Loopback:
    """The proxy and the hips2fits stand-in, served in a thread on a free loopback port."""

    def __init__(self, upstream: str, archive: Path, port: int | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.standin = Hips2FitsStandIn(archive)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._faults: dict[str, Fault] = {}
        self._counts: Counter = Counter()
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._server = uvicorn.Server(uvicorn.Config(self._app, host="127.0.0.1", port=self.port,
                                                     log_level="warning", lifespan="off",
                                                     interface="asgi3"))
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="loopback-remote")

    def start(self) -> Loopback:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the loopback remote did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.release()
        self._server.should_exit = True
        self._thread.join(10)

    # -- what the tests control ------------------------------------------------------------------

    def fault(self, prefix: str, fault: Fault | None) -> None:
        """Injure the requests of ``prefix`` (None: heal it)."""
        if prefix not in PREFIXES:
            raise ValueError(prefix)
        with self._lock:
            if fault is None:
                self._faults.pop(prefix, None)
            else:
                self._faults[prefix] = fault
                if fault.hold:
                    self._released.clear()

    def heal(self) -> None:
        """No more faults, and held requests go on."""
        with self._lock:
            self._faults.clear()
        self.release()

    def release(self) -> None:
        """Let held requests go on."""
        self._released.set()

    def unspent(self) -> list[str]:
        """The prefixes whose faults of a set number of requests have not all struck yet."""
        with self._lock:
            return sorted(p for p, f in self._faults.items() if f.times is not None)

    def count(self, prefix: str) -> int:
        """Requests received for ``prefix`` so far."""
        with self._lock:
            return self._counts[prefix]

    def _take(self, path: str) -> tuple[str, Fault | None]:
        prefix = next((p for p in PREFIXES if path == p or path.startswith(p + "/") or path.startswith(p + "?")),
                      "")
        with self._lock:
            self._counts[prefix] += 1
            fault = self._faults.get(prefix)
            if fault is not None and fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    del self._faults[prefix]
        return prefix, fault

    # -- the ASGI application -----------------------------------------------------------------------

    async def _app(self, scope: dict, receive: object, send: object) -> None:
        if scope["type"] != "http":
            return
        prefix, fault = self._take(scope["path"])
        fault = fault or Fault()
        if fault.hold:
            while not self._released.is_set():
                await asyncio.sleep(0.05)
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.status is not None:
            await _respond(send, fault.status, "text/plain", f"injected fault: HTTP {fault.status}\n".encode())
            return
        query = scope["query_string"].decode()
        if prefix == "/hips2fits":
            status, mime, body = await asyncio.to_thread(self.standin.answer, dict(parse_qsl(query)))
        else:
            status, mime, body = await self._forward(scope, receive, query)
        if fault.garbage:
            status, mime, body = 200, mime, b"<html><body>Service temporarily replaced by a web page</body></html>"
        await _respond(send, status, mime, body, truncate=fault.truncate)

    async def _forward(self, scope: dict, receive: object, query: str) -> tuple[int, str, bytes]:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        url = self.upstream + scope["path"] + (f"?{query}" if query else "")
        headers = {k.decode(): v.decode() for k, v in scope["headers"]
                   if k.decode().lower() not in HOP_BY_HOP | {"host", "accept-encoding"}}
        try:
            async with httpx.AsyncClient(timeout=60) as client:
                response = await client.request(scope["method"], url, headers=headers, content=body)
        except httpx.TransportError as exc:
            return 502, "text/plain", f"the loopback could not reach the remote archive: {exc!r}\n".encode()
        mime = response.headers.get("content-type", "application/octet-stream")
        content = response.content
        if "xml" in mime or mime.startswith(("text/", "application/json")):
            # links in the remote's documents name the remote itself: clients keep coming through here
            content = content.replace(self.upstream.encode(), self.url.encode())
        return response.status_code, mime, content


async def _respond(send: object, status: int, mime: str, body: bytes, truncate: bool = False) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", mime.encode()), (b"content-length", str(len(body)).encode())]})
    if truncate:  # half the body, then the connection is closed: shorter than its Content-Length
        await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
        raise ConnectionAbortedError("injected fault: the body is cut short")
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    """Serve the loopback (proxy and hips2fits stand-in) until interrupted."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--upstream", required=True, help="the siasync server playing the remote archive")
    parser.add_argument("--archive", type=Path, required=True, help="its archive (for the hips2fits stand-in)")
    parser.add_argument("--port", type=int, default=8002)
    args = parser.parse_args()
    loop = Loopback(args.upstream, args.archive, args.port).start()
    print(f"loopback remote at {loop.url}: proxy to {loop.upstream}, hips2fits stand-in at {loop.url}/hips2fits",
          flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        loop.stop()


if __name__ == "__main__":
    main()
