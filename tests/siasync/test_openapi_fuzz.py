"""Schemathesis against the app's own OpenAPI document (``/schema/openapi.json``).

Every operation of the document gets cases made from its documented examples and generated from
its declared parameters, valid (positive) and invalid (negative), serialised by schemathesis as a
client would send them and posted to the app, in-process. Two cases in three that name a job are
pointed at a real one (a COMPLETED job with results and an uploaded table for reads, a PENDING job
for changes, made again when a case has destroyed or run it), so the fuzzing reaches past "no such
job". The checks: schemathesis' ``not_a_server_error``, and that every 4xx carries a ``Name:
message`` text.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from siasync.app import create_app
from siasync.settings import Settings
from tests.siasync.helpers import wait_for

BASE = "http://testserver.local"
#: the operations, read at collection time from the document an app with default settings serves
OPERATIONS = sorted((method.upper(), path) for path, item in create_app(Settings()).openapi_schema.to_schema()[
    "paths"].items() for method in item)
EXAMPLES = 12  # per operation; every case makes one request (and a second when a PENDING job must be made again)
_MESSAGE = re.compile(r"^[A-Za-z]+: \S")
_STATUS = re.compile(r'<INFO name="QUERY_STATUS" value="ERROR">([^<]*)</INFO>')


def error_has_a_message(ctx: Any, response: Any, case: Any) -> None:
    """A 4xx answer is ``Name: message`` in text/plain, or from a DALI query (SIA 2.0, DataLink) an error VOTable
    whose QUERY_STATUS ERROR says ``Fault: message``."""
    if 400 <= response.status_code < 500:
        text = response.content.decode("utf-8", "replace")
        content_type = response.headers.get("content-type", [""])[0]
        if content_type.startswith("application/x-votable+xml"):
            status = _STATUS.search(text)
            assert status and _MESSAGE.match(html.unescape(status.group(1))), text[:500]
            return
        assert content_type.startswith("text/plain"), response.headers
        assert _MESSAGE.match(text), f"{response.status_code} without a message: {text[:200]!r}"


@pytest.fixture(scope="module")
def api(make_module_client) -> Iterator[dict[str, Any]]:
    """The app, its document loaded by schemathesis, and its real jobs."""
    # small limits: the jobs that cases start (PHASE=RUN) stay small, and WAIT returns within a second
    with make_module_client(workers=1, max_fields=5, max_size_deg=0.02, wait_max_s=1) as client:
        done = client.post("/async", data={"SIZE": "0.01", "PHASE": "RUN"}, follow_redirects=False,
                           files={"UPLOAD": ("fields.csv", b"ra,dec\n150.1,2.2\n", "text/csv")})
        assert done.status_code == 303, done.text
        done_id = done.headers["location"].rsplit("/", 1)[-1]
        wait_for(client, done_id, ("COMPLETED",))
        results = client.get(f"/async/{done_id}", headers={"Accept": "application/json"}).json()["results"]
        document = client.get("/schema/openapi.json")
        assert document.status_code == 200
        yield {"client": client, "schema": schemathesis.openapi.from_dict(document.json()), "done": done_id,
               "results": [r["id"] for r in results], "pending": None, "cases": 0}


def pending_job(api: dict[str, Any]) -> str:
    """A PENDING job, made again when a case has run, aborted or destroyed the last one."""
    client = api["client"]
    if api["pending"] is None or client.get(f"/async/{api['pending']}/phase").text != "PENDING":
        made = client.post("/async", data={"POS": "150.1,2.2", "SIZE": "0.01"}, follow_redirects=False)
        api["pending"] = made.headers["location"].rsplit("/", 1)[-1]
    return api["pending"]


def aim(api: dict[str, Any], case: Any, choice: int) -> None:
    """Point the case at a real job (and a real result or table), as ``choice`` says."""
    parameters = case.path_parameters or {}
    if "job_id" not in parameters or choice == 0:
        return
    parameters["job_id"] = api["done"] if case.method == "GET" else pending_job(api)
    if "result_id" in parameters and choice == 2:
        parameters["result_id"] = api["results"][len(str(parameters["result_id"])) % len(api["results"])]
    if "name" in parameters and choice == 2:
        parameters["name"] = "upload"


def send(api: dict[str, Any], case: Any) -> Any:
    """The request as schemathesis builds it for a client (requests), sent to the app."""
    kwargs = case.as_transport_kwargs(base_url=BASE)
    request = requests.Request(**{k: kwargs[k] for k in ("method", "url", "headers", "params", "data", "json",
                                                         "files", "cookies") if k in kwargs})
    try:
        prepared = request.prepare()
        headers = {k: v.encode("latin-1") if isinstance(v, str) else v for k, v in prepared.headers.items()}
    except (ValueError, TypeError, UnicodeError, requests.RequestException):
        assume(False)  # not something a client can send
    try:
        return api["client"].request(prepared.method, prepared.url, content=prepared.body, headers=headers,
                                     follow_redirects=False)
    except UnicodeError:  # a header the HTTP client will not encode
        assume(False)


def test_the_document_describes_the_parameters_handlers_read(api) -> None:
    """Not Litestar's bare signatures: the query and form parameters, and the text/plain errors."""
    document = api["client"].get("/schema/openapi.json").json()["paths"]
    assert sorted((m.upper(), p) for p, item in document.items() for m in item) == OPERATIONS
    create = document["/async"]["post"]
    form = create["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]["properties"]
    assert {"POS", "SIZE", "FORMAT", "INTERSECT", "UPLOAD", "PHASE", "DESTRUCTION"} <= set(form)
    assert create["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]["UPLOAD"]["format"] == \
        "binary"
    assert "text/plain" in create["responses"]["400"]["content"]
    job = document["/async/{job_id}"]["get"]
    assert {"WAIT", "PHASE"} <= {p["name"] for p in job["parameters"]}
    assert set(job["responses"]["200"]["content"]) == {"application/xml", "application/json", "text/html"}
    assert {p["name"] for p in document["/sia"]["get"]["parameters"]} >= {"POS", "SIZE", "FORMAT", "VERB"}


@pytest.mark.parametrize("method,path", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_every_operation_answers_no_5xx_and_4xx_with_a_message(api, method: str, path: str) -> None:
    operation = api["schema"][path][method]
    cases = st.one_of(*api["schema"].get_strategies_from_examples(operation),  # the documented examples
                      operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
                      operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))

    @settings(max_examples=EXAMPLES, suppress_health_check=list(HealthCheck))
    @given(cases, st.integers(0, 2))
    def run(case: Any, choice: int) -> None:
        aim(api, case, choice)
        response = send(api, case)
        api["cases"] += 1
        case.validate_response(response, checks=[not_a_server_error, error_has_a_message])

    run()
