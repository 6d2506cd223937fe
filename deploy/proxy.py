"""A small HTTP reverse proxy that sends each request to the next of several servers, in turn.

Per request, not per connection: two requests on one keep-alive connection go to two
servers, which is the hardest case for replicas (a client's every read may land on a
server that did not make the change it follows). Bodies stream both ways, so event
streams and large downloads pass as they come. The ``Host`` header is passed on, so
the servers write links to the proxy, as behind any load balancer.

    python -m deploy.proxy PORT http://127.0.0.1:8001 http://127.0.0.1:8002
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence
from typing import Any

import httpx

#: headers that belong to one connection, not to the request or response passed on
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


class RoundRobin:
    """The ASGI application of the proxy."""

    def __init__(self, upstreams: Sequence[str]) -> None:
        self.upstreams = list(upstreams)
        self._next = itertools.cycle(self.upstreams)
        self._client: httpx.AsyncClient | None = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                if message["type"] == "lifespan.startup":
                    self._client = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=10),
                                                     limits=httpx.Limits(max_connections=1000))
                    await send({"type": "lifespan.startup.complete"})
            await self._client.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return

        async def body() -> Any:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                yield message.get("body", b"")
                if not message.get("more_body"):
                    return

        upstream = next(self._next)
        url = upstream + scope["raw_path"].decode() + (f"?{scope['query_string'].decode()}"
                                                       if scope["query_string"] else "")
        headers = [(k, v) for k, v in scope["headers"] if k.decode().lower() not in HOP_BY_HOP]
        request = self._client.build_request(scope["method"], url, headers=headers, content=body())
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            message = f"Error: the proxy could not reach {upstream}: {exc!r}\n".encode()
            await send({"type": "http.response.start", "status": 502,
                        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(message)).encode())]})
            await send({"type": "http.response.body", "body": message})
            return
        try:
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": [(k, v) for k, v in response.headers.raw if k.decode().lower() not in HOP_BY_HOP]})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("upstreams", nargs="+", help="base URLs of the servers, e.g. http://127.0.0.1:8001")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    import uvicorn

    uvicorn.run(RoundRobin([u.rstrip("/") for u in args.upstreams]), host=args.host, port=args.port,
                log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
