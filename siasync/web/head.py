"""HEAD on every GET resource (RFC 9110, 9.3.2): the GET handler runs, and only its headers are sent.

Litestar routes a HEAD request only to handlers declared for HEAD, and answers 405 for the
others. `HeadAsGet` wraps the application's ASGI handler: it routes a HEAD request as a GET,
sends the status and headers GET would send (Content-Length, ETag, Last-Modified, Content-Type
and the rest), and ends the answer there. A streamed body (the growing ``table``, an event
stream, a file download) is stopped at its first chunk instead of being produced for nobody.
"""

from __future__ import annotations

from litestar.types import ASGIApp, Message, Receive, Scope, Send


class _Answered(Exception):
    """Raised into the GET handler once the HEAD answer is complete: nothing more is needed from it."""


class HeadAsGet:
    """ASGI middleware: answer HEAD with the status and headers of GET, and no body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        answered = False

        async def headers_only(message: Message) -> None:
            nonlocal answered
            if answered:
                raise _Answered
            if message["type"] == "http.response.start":
                await send(message)
            elif message["type"] == "http.response.body":
                answered = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                if message.get("more_body", False):
                    raise _Answered

        try:
            await self.app({**scope, "method": "GET"}, receive, headers_only)
        except Exception:
            # what a handler raises once the answer is complete (our _Answered, as it is or wrapped by
            # the framework's error handling) can change nothing for the client; anything else is a fault
            if not answered:
                raise
