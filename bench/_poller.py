"""Pollers for the benchmarks, run as their own process so their cost is not the server's.

Each poller holds one keep-alive HTTP/1.1 connection and sends ``GET path`` every
``interval`` seconds, starting at a random offset so that the pollers are not in step.
The client is written on bare asyncio streams: an HTTP library's own per-request cost
(about a millisecond in httpx) would otherwise queue up inside the client and be
counted as server latency. Prints one JSON object: latencies in ms and failures.

    python bench/_poller.py HOST PORT PATH CLIENTS SECONDS [INTERVAL]
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def poll(host: str, port: int, path: str, clients: int, seconds: float, interval: float) -> dict:
    latencies: list[float] = []
    failures = 0
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/xml\r\n\r\n".encode()
    deadline = time.perf_counter() + seconds

    async def poller() -> None:
        nonlocal failures
        await asyncio.sleep(random.uniform(0, interval))
        reader, writer = await asyncio.open_connection(host, port, limit=2**24)
        try:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                try:
                    status = await _get(reader, writer, request)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    failures += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port, limit=2**24)
                    continue
                if status == 200:
                    latencies.append((time.perf_counter() - start) * 1e3)
                else:
                    failures += 1
                await asyncio.sleep(max(0.0, interval - (time.perf_counter() - start)))
        finally:
            writer.close()

    await asyncio.gather(*(poller() for _ in range(clients)))
    return {"latencies_ms": latencies, "failures": failures}


def main() -> int:
    host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    clients, seconds = int(sys.argv[4]), float(sys.argv[5])
    interval = float(sys.argv[6]) if len(sys.argv) > 6 else 0.5
    print(json.dumps(asyncio.run(poll(host, port, path, clients, seconds, interval))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
