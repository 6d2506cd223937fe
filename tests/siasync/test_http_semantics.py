"""HTTP semantics of every resource: HEAD, conditional GETs, absolute redirects, and UWS details."""

from __future__ import annotations

import time
import zlib
from datetime import datetime

import pytest
from lxml import etree

from tests.siasync.helpers import assert_valid, create_job, uws_schema, wait_for

NS = {"uws": "http://www.ivoa.net/xml/UWS/v1.0", "xsi": "http://www.w3.org/2001/XMLSchema-instance"}
#: headers that may differ between two answers to the same request
_VOLATILE = {"date"}


def _compare_head_with_get(client, path: str, headers: dict | None = None) -> None:
    get = client.get(path, headers=headers)
    head = client.head(path, headers=headers)
    assert head.status_code == get.status_code, path
    assert head.content == b"", path
    same = {k: v for k, v in get.headers.items() if k not in _VOLATILE}
    assert {k: v for k, v in head.headers.items() if k not in _VOLATILE} == same, path


def test_head_answers_every_get_resource_with_the_headers_get_sends(client) -> None:
    job_id = create_job(client, {"POS": "150.1,2.2", "SIZE": "0.01", "FORMAT": "ALL", "PHASE": "RUN"})
    wait_for(client, job_id, ("COMPLETED",))
    product = client.get(f"/async/{job_id}", headers={"Accept": "application/json"}).json()["results"][1]["id"]
    job = f"/async/{job_id}"
    for path in ["/async", job, *(f"{job}/{child}" for child in (
            "phase", "executionduration", "destruction", "termination", "error", "quote", "owner", "parameters",
            "results", "results/table", f"results/{product}")),
                 "/sia?POS=150.1,2.2&SIZE=0.01", "/capabilities", "/availability", "/schema/openapi.json",
                 f"{job}/results/nosuchresult", "/async/nosuchjob"]:
        _compare_head_with_get(client, path)
    for accept in ("application/json", "text/html"):
        _compare_head_with_get(client, job, {"Accept": accept})
    # a byte range of a file, and the page
    _compare_head_with_get(client, f"{job}/results/{product}", {"Range": "bytes=0-99"})
    _compare_head_with_get(client, "/", {"Accept": "text/html"})


def test_head_on_an_event_stream_ends_at_once_with_its_headers(client) -> None:
    job_id = create_job(client)  # PENDING: its stream would stay open
    start = time.monotonic()
    head = client.head(f"/async/{job_id}/events")
    assert head.status_code == 200 and head.headers["content-type"].startswith("text/event-stream")
    assert head.content == b"" and time.monotonic() - start < 10


@pytest.mark.parametrize("accept", ["application/xml", "application/json"])
def test_job_documents_are_conditional_and_change_their_etag_with_the_job(client, accept: str) -> None:
    job_id = create_job(client)
    headers = {"Accept": accept}
    first = client.get(f"/async/{job_id}", headers=headers)
    etag = first.headers["etag"]
    assert etag.startswith('"') and first.headers["vary"] == "Accept, Accept-Encoding"
    again = client.get(f"/async/{job_id}", headers={**headers, "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    # weak comparison, lists and * (RFC 9110)
    assert client.get(f"/async/{job_id}", headers={**headers, "If-None-Match": f'"x", W/{etag}'}).status_code == 304
    assert client.get(f"/async/{job_id}", headers={**headers, "If-None-Match": "*"}).status_code == 304
    assert client.get(f"/async/{job_id}", headers={**headers, "If-None-Match": '"other"'}).status_code == 200
    client.post(f"/async/{job_id}/phase", data={"PHASE": "RUN"})
    wait_for(client, job_id, ("COMPLETED",))
    changed = client.get(f"/async/{job_id}", headers={**headers, "If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    # the XML and JSON forms are different documents with different tags
    other = "application/json" if accept == "application/xml" else "application/xml"
    assert client.get(f"/async/{job_id}", headers={"Accept": other}).headers["etag"] != changed.headers["etag"]


def _raw(client, path: str, headers: dict) -> tuple[dict, bytes]:
    """An answer's headers and its body as sent (not decoded)."""
    with client.stream("GET", path, headers=headers) as response:
        return dict(response.headers), b"".join(response.iter_raw())


@pytest.mark.parametrize("path_accept", [("", "application/xml"), ("", "application/json"), ("/results", "")])
def test_job_documents_are_deflated_for_clients_that_ask_and_the_same_once_inflated(client, path_accept) -> None:
    path, accept = path_accept
    job_id = create_job(client, {"POS": ["150.1,2.2", "150.2,2.3"], "SIZE": "0.01", "FORMAT": "ALL",
                                 "PHASE": "RUN"})
    wait_for(client, job_id, ("COMPLETED",))
    url = f"/async/{job_id}{path}"
    plain_headers, plain = _raw(client, url, {"Accept": accept, "Accept-Encoding": "identity"})
    deflated_headers, deflated = _raw(client, url, {"Accept": accept, "Accept-Encoding": "gzip, deflate"})
    assert "content-encoding" not in plain_headers and deflated_headers["content-encoding"] == "deflate"
    assert zlib.decompress(deflated) == plain  # a zlib stream (RFC 1950) with the right Adler-32
    assert len(deflated) < len(plain) and plain.count(b"/results/") > 10
    assert deflated_headers["content-type"] == plain_headers["content-type"]
    assert "Accept-Encoding" in deflated_headers["vary"] and "Accept-Encoding" in plain_headers["vary"]
    # two representations, two strong tags, each answered 304 only for itself
    assert deflated_headers["etag"] != plain_headers["etag"]
    for encoding, tag, other in (("deflate", deflated_headers["etag"], plain_headers["etag"]),
                                 ("identity", plain_headers["etag"], deflated_headers["etag"])):
        headers = {"Accept": accept, "Accept-Encoding": encoding}
        assert client.get(url, headers={**headers, "If-None-Match": tag}).status_code == 304
        assert client.get(url, headers={**headers, "If-None-Match": other}).status_code == 200
    # refusing deflate by quality is honoured
    assert "content-encoding" not in _raw(client, url, {"Accept": accept, "Accept-Encoding": "deflate;q=0"})[0]


def test_results_and_table_are_conditional(client) -> None:
    job_id = create_job(client, {"POS": "150.1,2.2", "SIZE": "0.01", "PHASE": "RUN"})
    wait_for(client, job_id, ("COMPLETED",))
    for child in ("results", "results/table"):
        first = client.get(f"/async/{job_id}/{child}")
        etag = first.headers["etag"]
        assert client.get(f"/async/{job_id}/{child}", headers={"If-None-Match": etag}).status_code == 304
    # a new job of the same fields has other results, so other tags
    other = create_job(client, {"POS": "150.1,2.2", "SIZE": "0.01", "PHASE": "RUN"})
    wait_for(client, other, ("COMPLETED",))
    for child in ("results", "results/table"):
        assert client.get(f"/async/{other}/{child}").headers["etag"] != client.get(
            f"/async/{job_id}/{child}").headers["etag"]


def test_every_redirect_is_an_absolute_url(client) -> None:
    created = client.post("/async", data={"POS": "150.1,2.2", "SIZE": "0.01"}, follow_redirects=False)
    location = created.headers["location"]
    assert location.startswith("http://testserver.local/async/")
    job = location.removeprefix("http://testserver.local")
    for path, data in [("/phase", {"PHASE": "ABORT"}), ("/destruction", {"DESTRUCTION": "2100-01-01T00:00:00Z"}),
                       ("", {"ACTION": "DELETE"})]:
        answer = client.post(job + path, data=data, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"].startswith("http://testserver.local/async")


def test_an_anonymous_job_has_a_nil_owner_in_every_representation(client) -> None:
    job_id = create_job(client)
    doc = assert_valid(uws_schema(), client.get(f"/async/{job_id}").content)
    owner = doc.find("uws:ownerId", NS)
    assert owner.get(f"{{{NS['xsi']}}}nil") == "true" and not owner.text
    listed = assert_valid(uws_schema(), client.get("/async").content).find("uws:jobref/uws:ownerId", NS)
    assert listed.get(f"{{{NS['xsi']}}}nil") == "true"
    assert client.get(f"/async/{job_id}", headers={"Accept": "application/json"}).json()["ownerId"] is None
    assert client.get("/async", headers={"Accept": "application/json"}).json()[0]["ownerId"] is None


def test_an_authenticated_owner_is_shown_and_anonymous_is_a_reserved_name(make_client) -> None:
    with make_client(auth="header") as client:
        job_id = create_job(client, headers={"X-Remote-User": "alice"})
        doc = etree.fromstring(client.get(f"/async/{job_id}", headers={"X-Remote-User": "alice"}).content)
        assert doc.find("uws:ownerId", NS).text == "alice"
        refused = client.get("/async", headers={"X-Remote-User": "anonymous"})
        assert refused.status_code == 401 and "reserved" in refused.text


def test_after_excludes_the_jobs_created_at_the_instant_shown(client) -> None:
    ids = [create_job(client) for _ in range(6)]
    listed = {j["jobId"]: j["creationTime"] for j in client.get(
        "/async", headers={"Accept": "application/json"}).json()}
    for job_id in ids:
        shown = listed[job_id]
        after = {j["jobId"] for j in client.get("/async", params={"AFTER": shown},
                                                headers={"Accept": "application/json"}).json()}
        assert job_id not in after  # a client paging from the last creationTime it saw gets no duplicate
        assert after == {j for j, t in listed.items() if datetime.fromisoformat(t) > datetime.fromisoformat(shown)}
