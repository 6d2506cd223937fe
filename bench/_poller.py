"""Pollers for the benchmarks, run as their own process so their cost is not the server's.

Each poller holds one keep-alive HTTP/1.1 connection and sends ``GET path`` every
``interval`` seconds, starting at a random offset so that the pollers are not in step.
The client is written on bare asyncio streams: an HTTP library's own per-request cost
(about a millisecond in httpx) would otherwise queue up inside the client and be
counted as server latency. Prints one JSON object: latencies in ms, failures, and how
many answers were 304 Not Modified.

With ``--conditional``, each poller sends the ETag of its last full answer in
``If-None-Match``, as a client that only wants changes does; 304s count as answers.
With ``--deflate``, each poller sends ``Accept-Encoding: gzip, deflate`` as HTTP libraries
and browsers do (the body is read as sent, not inflated); without it, ``identity``.

    python bench/_poller.py HOST PORT PATH CLIENTS SECONDS [INTERVAL] [--conditional] [--deflate]
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, str | None]:
    """Send a request; the status and the ETag of the answer, its body read and dropped."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length, etag = 0, None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        elif name.strip().lower() == b"etag":
            etag = value.strip().decode()
    await reader.readexactly(length)
    return status, etag


async def poll(host: str, port: int, path: str, clients: int, seconds: float, interval: float,
               conditional: bool = False, deflate: bool = False) -> dict:
    latencies: list[float] = []
    failures = not_modified = 0
    encoding = "gzip, deflate" if deflate else "identity"
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/xml\r\n"
               f"Accept-Encoding: {encoding}\r\n")
    deadline = time.perf_counter() + seconds

    async def poller() -> None:
        nonlocal failures, not_modified
        await asyncio.sleep(random.uniform(0, interval))
        reader, writer = await asyncio.open_connection(host, port, limit=2**24)
        etag = None
        try:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                condition = f"If-None-Match: {etag}\r\n" if conditional and etag else ""
                try:
                    status, tag = await _get(reader, writer, (request + condition + "\r\n").encode())
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    failures += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port, limit=2**24)
                    continue
                if status in (200, 304):
                    latencies.append((time.perf_counter() - start) * 1e3)
                    not_modified += status == 304
                    etag = tag if status == 200 else etag
                else:
                    failures += 1
                await asyncio.sleep(max(0.0, interval - (time.perf_counter() - start)))
        finally:
            writer.close()

    await asyncio.gather(*(poller() for _ in range(clients)))
    return {"latencies_ms": latencies, "failures": failures, "not_modified": not_modified}


def main() -> int:
    args = [a for a in sys.argv[1:] if a not in ("--conditional", "--deflate")]
    host, port, path = args[0], int(args[1]), args[2]
    clients, seconds = int(args[3]), float(args[4])
    interval = float(args[5]) if len(args) > 5 else 0.5
    print(json.dumps(asyncio.run(poll(host, port, path, clients, seconds, interval, "--conditional" in sys.argv,
                                      "--deflate" in sys.argv))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
