"""Remote faults are not our faults: retries with backoff, and errors that say what the remote did.

Whatever a remote does wrong (no answer within the timeout, a refused connection, an HTTP
5xx, 408 or 429, a body cut short, an answer that is not what was asked for) is tried again
after `RemoteSpec.backoff_s`, then twice as long, up to `RemoteSpec.retries` times; a 4xx or
a query the service itself reports as an error is not (asking again would not help). What
still fails raises `RemoteError`, whose message names the remote and the reason; the
callers turn it into a warning of the job (or an INFO of a query answer), never an error.
A remote that has just failed so is asked once per request, without retries, for a while
(`Breaker`): a dead remote costs a big job one attempt per query or image, not minutes of
backoff each.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from typing import TypeVar

import httpx
import requests

from siasync import __version__
from siasync.remote.config import RemoteSpec

T = TypeVar("T")
_RETRY_STATUS = {408, 425, 429}
#: seconds after a remote's last failure during which each request to it is tried once, without retries
SHAKEN_S = 60.0


class RemoteError(Exception):
    """A remote could not give what was asked (after the retries, where they could help).

    Parameters
    ----------
    message : str
    retryable : bool
        Whether asking again may help (a timeout, a 5xx, a body cut short, a malformed answer).
    """

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


def _status_reason(status: int, text: str = "") -> str:
    reason = f"HTTP {status}"
    if text:
        reason += f" {text}"
    return reason


def classify(exc: BaseException) -> tuple[bool, str]:
    """Whether a failure may pass if asked again, and what it was, in words."""
    from pyvo.dal.exceptions import DALFormatError, DALProtocolError, DALQueryError, DALServiceError

    cause = getattr(exc, "cause", None) if isinstance(exc, DALProtocolError) else None
    if isinstance(cause, (httpx.HTTPError, requests.RequestException)):  # pyvo's wrapping of what the network did
        return classify(cause)
    if isinstance(exc, RemoteError):
        return exc.retryable, str(exc)
    if isinstance(exc, (httpx.TimeoutException, requests.Timeout)):
        return True, f"no answer in time ({type(exc).__name__})"
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        return status >= 500 or status in _RETRY_STATUS, _status_reason(status, exc.response.reason_phrase)
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        return status >= 500 or status in _RETRY_STATUS, _status_reason(status, exc.response.reason)
    if isinstance(exc, (httpx.TransportError, requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        return True, f"{type(exc).__name__}: {_short(exc)}"
    if isinstance(exc, DALQueryError):  # the service answered, and said the query failed
        return False, f"the service refused the query: {_short(exc)}"
    if isinstance(exc, DALServiceError):
        code = exc.code or 0
        if code:
            return code >= 500 or code in _RETRY_STATUS, _status_reason(code) + f": {_short(exc)}"
        return True, _short(exc)
    if isinstance(exc, DALFormatError):
        return True, f"a malformed answer: {_short(exc)}"
    if isinstance(exc, MemoryError):
        return False, "MemoryError"
    # anything else a client library raised on the remote's answer (a VOTable or FITS that does not parse...)
    return True, f"a malformed answer: {type(exc).__name__}: {_short(exc)}"


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    # pyvo's VOSI errors go on with a list of what it could mean: the first sentence says what happened
    text = text.split(" This could mean:", 1)[0]
    return text if len(text) <= limit else text[:limit] + "..."


def backoff(spec: RemoteSpec, attempt: int) -> float:
    """Seconds to wait after the failed ``attempt`` (0 for the first): doubling, with a little jitter."""
    return spec.backoff_s * 2**attempt * random.uniform(0.8, 1.2)


def retrying(spec: RemoteSpec, what: str, call: Callable[[], T], sleep: Callable[[float], None] = time.sleep) -> T:
    """``call()``, tried again on the faults that may pass, up to ``spec.retries`` times.

    Raises
    ------
    RemoteError
        ``remote NAME: WHAT: REASON (after N attempts)``.
    """
    attempts = spec.retries + 1
    for attempt in range(attempts):
        try:
            return call()
        except Exception as exc:
            retry, reason = classify(exc)
            if not retry or attempt == attempts - 1:
                tries = f" (after {attempt + 1} attempts)" if attempt else ""
                raise RemoteError(f"remote {spec.name}: {what}: {reason}{tries}", retry) from exc
            sleep(backoff(spec, attempt))
    raise AssertionError("unreachable")  # pragma: no cover


class Breaker:
    """Remotes that failed lately (after their retries): for `SHAKEN_S` seconds after such a failure, each
    request to that remote is tried once, so that a dead remote costs a job one attempt per query or image,
    not every attempt and backoff. A success, or the time passing, restores the retries; a refusal (a
    fault that asking again would not cure, such as a 404) does not count."""

    def __init__(self) -> None:
        self._failed: dict[str, float] = {}

    def spec(self, spec: RemoteSpec) -> RemoteSpec:
        """``spec``, without its retries while its remote is shaken."""
        at = self._failed.get(spec.name)
        if at is not None and time.monotonic() - at < SHAKEN_S and spec.retries:
            return dataclasses.replace(spec, retries=0)
        return spec

    def call(self, spec: RemoteSpec, what: str, call: Callable[[], T],
             sleep: Callable[[float], None] = time.sleep) -> T:
        """`retrying` with the retries this remote deserves now; its outcome is remembered."""
        try:
            result = retrying(self.spec(spec), what, call, sleep)
        except RemoteError as exc:
            if exc.retryable:
                self._failed[spec.name] = time.monotonic()
            raise
        self._failed.pop(spec.name, None)
        return result


class TimeoutSession(requests.Session):
    """A requests session (as pyvo and astroquery use) whose every request has a timeout, unless given one, and
    whose every HTTP error answer raises `requests.HTTPError`: pyvo reads some documents (DataLink's) without
    looking at the status, and would report a 502 page as a malformed VOTable."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout
        self.headers["User-Agent"] = f"siasync/{__version__} " + self.headers.get("User-Agent", "")
        self.hooks["response"].append(_raise_for_status)

    def request(self, method: str, url: str, *args: object, **kwargs: object) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        return super().request(method, url, *args, **kwargs)


def _raise_for_status(response: requests.Response, *args: object, **kwargs: object) -> None:
    response.raise_for_status()
