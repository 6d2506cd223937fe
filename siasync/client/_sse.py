"""A small Server-Sent Events decoder (the WHATWG ``text/event-stream`` rules), fed one line at a time."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event: its type, its data (lines joined by newlines), and the last event id so far."""

    event: str
    data: str
    id: str
    retry: int | None = None


class SSEDecoder:
    """Turns the lines of an event stream into events.

    Lines come without their end-of-line characters (as ``httpx.Response.aiter_lines``
    gives them). The decoder keeps the last event id across events, as a client that
    reconnects with ``Last-Event-ID`` needs.
    """

    def __init__(self, last_event_id: str = "", retry: int | None = None) -> None:
        self.last_event_id = last_event_id
        #: the reconnection time the server asked for, in milliseconds
        self.retry = retry
        self._event, self._data = "", []

    def decode(self, line: str) -> ServerSentEvent | None:
        """Take one line; return the event it completes, if any."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):  # a comment: keep-alive
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self.last_event_id = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        event, data = self._event or "message", self._data
        self._event, self._data = "", []
        if not data:
            return None
        return ServerSentEvent(event, "\n".join(data), self.last_event_id, self.retry)
