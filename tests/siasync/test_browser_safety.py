"""Browsers and proxies: allowed hosts, changes sent from other sites, the safety headers, uploads served as files,
and header authentication behind a proxy that appends instead of setting.

A browser sends ``Origin`` with every cross-origin POST, so a form on another site that posts here is
refused, whatever it asks for; clients that are not browsers send no ``Origin`` and are not affected.
(`tests/e2e/test_browser.py` drives the same attack from a real page of another origin in Chromium.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from siasync.settings import Settings
from siasync.web.security import CSP, HostPolicy
from tests.siasync.conftest import TEST_HOST
from tests.siasync.helpers import create_job

JOB = {"POS": "150.1,2.2", "SIZE": "0.01"}
OWN = f"http://{TEST_HOST}"


@pytest.fixture(scope="module")
def client(make_module_client) -> Iterator[Any]:
    with make_module_client() as c:
        yield c


def job_ids(client) -> list[str]:
    return [j["jobId"] for j in client.get("/async", headers={"Accept": "application/json"}).json()]


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "testserver.local.evil.example",
                                  "127.0.0.1", "[::1]:8000", "TESTSERVER.LOCAL.x"])
def test_a_host_the_service_does_not_answer_to_is_refused(client, host: str) -> None:
    for method, path in (("GET", "/async"), ("GET", "/capabilities"), ("POST", "/async")):
        response = client.request(method, path, headers={"Host": host}, data=JOB if method == "POST" else None)
        assert response.status_code == 400, (host, path, response.text)
        assert response.text.startswith("UsageError: Host: this service does not answer to")
        assert response.headers["x-content-type-options"] == "nosniff"
    assert "evil" not in client.get("/capabilities").text


@pytest.mark.parametrize("host", ["testserver.local", "TestServer.Local", "testserver.local.", "testserver.local:8080"])
def test_an_allowed_host_is_served_and_written_into_links(client, host: str) -> None:
    response = client.get("/capabilities", headers={"Host": host})
    assert response.status_code == 200
    assert f"http://{host}/sia" in response.text


def test_the_default_hosts_are_the_served_host() -> None:
    loopback = HostPolicy(Settings())
    assert all(loopback.allows(h) for h in ("localhost", "127.0.0.1", "::1"))
    assert not any(loopback.allows(h) for h in ("evil.example", "10.0.0.1", "localhost.evil.example"))
    public = HostPolicy(Settings(public_url="https://images.example.org/siasync"))
    assert public.allows("images.example.org") and public.allows("localhost")  # a proxy may keep its Host
    assert not public.allows("example.org")
    named = HostPolicy(Settings(host="10.1.2.3"))
    assert named.allows("10.1.2.3") and not named.allows("localhost") and not named.allows("10.1.2.4")
    wildcard = HostPolicy(Settings(host="0.0.0.0"))
    assert wildcard.allows("10.1.2.4") and wildcard.allows("localhost") and not wildcard.allows("evil.example")
    listed = HostPolicy(Settings(allowed_hosts=("svc.example", ".images.example")))
    assert listed.allows("svc.example") and listed.allows("a.images.example") and listed.allows("images.example")
    assert not listed.allows("localhost") and not listed.allows("evilimages.example")
    assert HostPolicy(Settings(allowed_hosts=("*",))).allows("anything.example")
    # changes: from the request's own host and port (or the public URL's, or a declared host on any port)
    assert loopback.trusted_origin("http://localhost:8000", "localhost:8000")
    assert loopback.trusted_origin("https://localhost", "localhost:443")
    assert not loopback.trusted_origin("http://localhost:9999", "localhost:8000")  # another server on the laptop
    assert not loopback.trusted_origin("http://127.0.0.1:8000", "localhost:8000")
    assert public.trusted_origin("https://images.example.org", "127.0.0.1:8000")  # behind a proxy
    assert listed.trusted_origin("https://svc.example:8443", "a.images.example")
    assert not listed.trusted_origin("file://", "svc.example") and not listed.trusted_origin("null", "svc.example")
    with pytest.raises(ValueError, match="allowed_hosts"):
        Settings(allowed_hosts=("evil example",))


@pytest.mark.parametrize("origin", [{"Origin": "http://evil.example"}, {"Origin": "null"},
                                    {"Origin": "http://testserver.local.evil.example"},
                                    {"Referer": "http://evil.example/page.html"},
                                    {"Origin": "http://evil.example", "Referer": f"{OWN}/"}])
def test_a_change_sent_from_another_sites_page_is_refused_and_changes_nothing(client, origin: dict) -> None:
    before = job_ids(client)
    victim = create_job(client, JOB)
    refused = [client.post("/async", data={**JOB, "PHASE": "RUN"}, headers=origin, follow_redirects=False),
               client.post(f"/async/{victim}", data={"ACTION": "DELETE"}, headers=origin, follow_redirects=False),
               client.delete(f"/async/{victim}", headers=origin, follow_redirects=False),
               client.post(f"/async/{victim}/phase", data={"PHASE": "RUN"}, headers=origin, follow_redirects=False),
               client.post(f"/async/{victim}/destruction", data={"DESTRUCTION": "2999-01-01T00:00:00Z"},
                           headers=origin, follow_redirects=False)]
    for response in refused:
        assert response.status_code == 403, response.text
        assert response.text.startswith("PermissionDenied: Origin: a "), response.text
    assert job_ids(client) == [victim, *before]
    assert client.get(f"/async/{victim}/phase").text == "PENDING"
    client.delete(f"/async/{victim}")


@pytest.mark.parametrize("origin", [{}, {"Origin": OWN}, {"Origin": "http://TestServer.Local"},
                                    {"Referer": f"{OWN}/async/x?y=1"}])
def test_a_change_from_the_services_own_pages_or_from_an_api_client_is_served(client, origin: dict) -> None:
    made = client.post("/async", data=JOB, headers=origin, follow_redirects=False)
    assert made.status_code == 303, made.text
    deleted = client.post(made.headers["location"], data={"ACTION": "DELETE"}, headers=origin,
                          follow_redirects=False)
    assert deleted.status_code == 303, deleted.text


def test_reads_from_other_sites_are_not_refused(client) -> None:
    """A GET changes nothing (and a page of another site cannot read the answer): served as usual."""
    assert client.get("/async", headers={"Origin": "http://evil.example"}).status_code == 200


def test_every_answer_carries_the_safety_headers(client) -> None:
    job = create_job(client, JOB)
    for path, accept in (("/", "text/html"), (f"/async/{job}", "text/html"), (f"/async/{job}", "application/xml"),
                         ("/async", "text/html"), ("/schema", "text/html"), ("/static/siasync.css", "*/*"),
                         ("/nowhere", "*/*"), (f"/async/{job}/nothing", "text/html")):
        response = client.get(path, headers={"Accept": accept})
        assert response.headers["content-security-policy"] == CSP, path
        assert "frame-ancestors 'none'" in CSP and "script-src 'self'" in CSP and "unsafe" not in CSP
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["x-frame-options"] == "DENY", path
    head = client.head(f"/async/{job}")
    assert head.headers["x-frame-options"] == "DENY"
    client.delete(f"/async/{job}")


def test_an_uploaded_table_comes_back_as_a_file_that_runs_nothing(client) -> None:
    script = (b'<?xml version="1.0"?>\n<VOTABLE version="1.3" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">'
              b'<RESOURCE><TABLE><FIELD name="ra" datatype="double"/><FIELD name="dec" datatype="double"/>'
              b'<DATA><TABLEDATA><TR><TD>150.1</TD><TD>2.2</TD></TR></TABLEDATA></DATA></TABLE></RESOURCE>'
              b'<html:script xmlns:html="http://www.w3.org/1999/xhtml">alert(1)</html:script></VOTABLE>')
    made = client.post("/async", data={"SIZE": "0.01"}, files={"UPLOAD": ("t.xml", script, "text/xml")},
                       follow_redirects=False)
    assert made.status_code == 303, made.text
    table = client.get(made.headers["location"] + "/parameters/upload")
    assert table.content == script
    assert table.headers["content-disposition"] == 'attachment; filename="upload.xml"'
    assert "sandbox" in table.headers["content-security-policy"]
    assert table.headers["content-security-policy"].startswith("default-src 'none'")
    assert table.headers["x-content-type-options"] == "nosniff"
    client.delete(made.headers["location"])


@pytest.fixture(scope="module")
def proxied(make_module_client) -> Iterator[Any]:
    with make_module_client(auth="header") as c:
        yield c


def test_header_mode_refuses_an_identity_header_given_twice(proxied) -> None:
    """A proxy that appends (HAProxy add-header, Apache RequestHeader add) passes the client's own header on:
    the request then carries two, or one joined list, and is refused instead of run as either user."""
    alices = create_job(proxied, JOB, headers={"X-Remote-User": "alice"})
    for headers in ([("X-Remote-User", "alice"), ("X-Remote-User", "mallory")],
                    [("X-Remote-User", "mallory"), ("X-Remote-User", "alice")],
                    [("X-Remote-User", "alice, mallory")], [("X-Remote-User", "alice,alice")]):
        for response in (proxied.get(f"/async/{alices}", headers=headers), proxied.get("/async", headers=headers),
                         proxied.post("/async", data=JOB, headers=headers, follow_redirects=False)):
            assert response.status_code == 400, (headers, response.text)
            assert response.text.startswith("UsageError: X-Remote-User: given more than once"), response.text
    assert proxied.get(f"/async/{alices}/owner", headers={"X-Remote-User": "alice"}).text == "alice"
    refused = proxied.get("/async", headers={"X-Remote-User": "al\x01ice"})
    assert refused.status_code == 400 and "printable" in refused.text
