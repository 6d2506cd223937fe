"""Remote faults: what is retried (with doubling waits), what is not, and how it is told; remote footprints and ids."""

from __future__ import annotations

import re

import httpx
import numpy as np
import pytest
import requests

from cutout.sky import Field, Intersect
from siasync.remote.config import parse_remotes
from siasync.remote.faults import Breaker, RemoteError, TimeoutSession, classify, retrying
from siasync.remote.images import circle_polygon, make_id, matching, region_footprint, tile_image, tile_of

SPEC = parse_remotes({"R": {"protocol": "sia2", "url": "http://127.0.0.1:9/sia2", "retries": 2, "backoff_s": 1.0}})["R"]


def _status(code: int) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "http://remote/x")
    return httpx.HTTPStatusError("x", request=request, response=httpx.Response(code, request=request))


def test_faults_that_may_pass_are_retried_with_doubling_waits() -> None:
    calls, waits = [], []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise _status(503)
        return "answer"

    assert retrying(SPEC, "query", flaky, sleep=waits.append) == "answer"
    assert len(calls) == 3 and 0.8 <= waits[0] <= 1.2 and 1.6 <= waits[1] <= 2.4


def test_a_fault_that_lasts_is_a_remote_error_naming_the_remote_and_the_attempts() -> None:
    waits: list[float] = []
    with pytest.raises(RemoteError, match=r"^remote R: query: no answer in time \(ReadTimeout\) \(after 3 attempts\)$"):
        retrying(SPEC, "query", lambda: (_ for _ in ()).throw(httpx.ReadTimeout("slow")), sleep=waits.append)
    assert len(waits) == 2


@pytest.mark.parametrize("code", [400, 403, 404])
def test_a_refusal_is_not_asked_again(code: int) -> None:
    calls: list[int] = []

    def refused() -> None:
        calls.append(1)
        raise _status(code)

    with pytest.raises(RemoteError) as caught:
        retrying(SPEC, "query", refused, sleep=lambda s: None)
    assert calls == [1] and not caught.value.retryable and f"HTTP {code}" in str(caught.value)


@pytest.mark.parametrize(("exc", "retry", "words"), [
    (requests.ConnectTimeout("x"), True, "no answer in time"),
    (requests.ConnectionError("refused"), True, "ConnectionError: refused"),
    (httpx.RemoteProtocolError("peer closed connection"), True, "RemoteProtocolError"),
    (_status(429), True, "HTTP 429"),
    (_status(502), True, "HTTP 502 Bad Gateway"),
    (ValueError("1:0: syntax error"), True, "a malformed answer: ValueError: 1:0: syntax error"),
    (RemoteError("too big", retryable=False), False, "too big"),
])
def test_each_fault_is_sorted_and_told(exc: Exception, retry: bool, words: str) -> None:
    assert classify(exc)[0] is retry and words in classify(exc)[1]


def test_the_session_raises_on_http_error_answers_and_has_a_timeout() -> None:
    session = TimeoutSession(3.0)
    response = requests.Response()
    response.status_code, response.reason, response.url = 502, "Bad Gateway", "http://remote/x"
    with pytest.raises(requests.HTTPError):
        for hook in session.hooks["response"]:
            hook(response)
    assert session.timeout == 3.0 and session.headers["User-Agent"].startswith("siasync/")


def test_footprints_from_each_form_of_s_region() -> None:
    polygon = region_footprint("POLYGON ICRS 10 10 11 10 11 11 10 11")
    assert polygon.tolist() == [[10, 10], [11, 10], [11, 11], [10, 11]]
    assert region_footprint(np.array([359.5, 0, 0.5, 0, 0.5, 1])).tolist() == [[359.5, 0], [0.5, 0], [0.5, 1]]
    circle = region_footprint("Circle ICRS 150.0 2.0 0.5")
    assert circle is not None and len(circle) == 16
    # the polygon holds the circle: a field at its edge still meets it
    assert matching([_image(circle)], Field(150.0, 2.49, 0.0, 0.0), Intersect.CENTER)
    assert region_footprint("BOX 150 2 1 0.5") is not None
    for bad in ("POINT 1 2", "POLYGON 1 2 3", "POLYGON 1 95 2 95 3 95", "", None, [1.0, np.nan, 2, 3, 4, 5]):
        assert region_footprint(bad) is None


def _image(footprint: np.ndarray):
    from siasync.remote.images import RemoteImage

    return RemoteImage(id="x", remote="R", band="r", title="x", footprint=tuple(map(tuple, footprint.tolist())))


def test_ids_are_url_safe_without_dots_and_stable() -> None:
    image_id = make_id("My Remote.v2", "DEMO-WIDE r t11.fits?x=1", "ivo://x/y?z")
    assert re.fullmatch(r"[a-z0-9_-]+_[A-Za-z0-9_-]+-[0-9a-f]{10}", image_id) and "." not in image_id
    assert image_id == make_id("My Remote.v2", "DEMO-WIDE r t11.fits?x=1", "ivo://x/y?z")
    assert image_id != make_id("My Remote.v2", "DEMO-WIDE r t11.fits?x=1", "ivo://x/y?w")
    assert np.allclose(circle_polygon(10, 20, 1.0).mean(axis=0), [10, 20], atol=0.05)


def test_a_hips_tile_is_found_again_from_its_id() -> None:
    spec = parse_remotes({"H": {"protocol": "hips2fits", "hips": "CDS/P/DSS2/red", "tile_deg": 0.25}})["H"]
    image = tile_image(spec, 8, 436110)
    assert tile_of(spec, image.id) == image
    assert tile_of(spec, image.id.replace("436110", "436111")) is None  # the digest no longer agrees
    assert tile_of(spec, "h_o30c1-0123456789") is None


def test_a_remote_that_failed_is_tried_once_per_request_until_it_answers_again() -> None:
    breaker, calls = Breaker(), []

    def down() -> None:
        calls.append(1)
        raise _status(503)

    with pytest.raises(RemoteError, match=r"after 3 attempts"):
        breaker.call(SPEC, "query", down, sleep=lambda s: None)
    assert len(calls) == 3
    with pytest.raises(RemoteError) as caught:  # shaken: one attempt, no backoff
        breaker.call(SPEC, "query", down, sleep=lambda s: pytest.fail("no wait"))
    assert len(calls) == 4 and "attempts" not in str(caught.value)
    assert breaker.call(SPEC, "query", lambda: "back") == "back"  # an answer restores the retries
    with pytest.raises(RemoteError, match=r"after 3 attempts"):
        breaker.call(SPEC, "query", down, sleep=lambda s: None)
    other = Breaker()
    with pytest.raises(RemoteError):
        other.call(SPEC, "image", lambda: (_ for _ in ()).throw(_status(404)), sleep=lambda s: None)
    assert other.spec(SPEC) is SPEC  # a refusal is the request's fault, not the remote's
