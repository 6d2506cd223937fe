"""Owner isolation in token mode: a matrix over every resource of a job and every verb.

Alice owns two jobs: one COMPLETED (results, the table, an uploaded table) and one PENDING (where
her own changes would be accepted, so a refusal to Bob is about ownership, not phase). Bob, no
token, a wrong token and a wrong scheme try every (resource, verb) pair on both. Bob gets 403
"belongs to another owner" wherever the route exists (404 is also accepted for result files); the
others get 401 with a ``WWW-Authenticate`` challenge; a verb the route does not have is 405 for
everyone. Afterwards Alice's jobs are exactly as they were. Bob's job list, with every filter and
in every representation, never shows Alice's jobs. A guard test fails when a new route under
``/async/{job_id}`` is not in the matrix.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.siasync.helpers import wait_for

ALICE = {"Authorization": "Bearer tok-alice"}
BOB = {"Authorization": "Bearer tok-bob"}
#: callers without a valid identity, and the error their challenge must carry (None: a plain challenge)
NOBODY = {"no token": ({}, None), "unknown token": ({"Authorization": "Bearer tok-mallory"}, "invalid_token"),
          "a real token's prefix": ({"Authorization": "Bearer tok-ali"}, "invalid_token"),
          "token with junk": ({"Authorization": "Bearer tok-alice junk"}, "invalid_token"),
          "empty bearer": ({"Authorization": "Bearer "}, None), "basic scheme": ({"Authorization": "Basic dG9r"}, None),
          "token without scheme": ({"Authorization": "tok-alice"}, None)}
FUTURE = "2999-01-01T00:00:00Z"
#: every resource of a job (under /async/{job}), the methods it has, and the body a change would carry
RESOURCES: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "": (("GET", "POST", "DELETE"), {"ACTION": "DELETE"}),
    "/phase": (("GET", "POST"), {"PHASE": "ABORT"}),
    "/parameters": (("GET", "POST"), {"SIZE": "0.02"}),
    "/parameters/{upload}": (("GET",), {}),
    "/results": (("GET",), {}),
    "/results/{result}": (("GET",), {}),
    "/results/table": (("GET",), {}),
    "/events": (("GET",), {}),
    "/error": (("GET",), {}),
    "/quote": (("GET", "POST"), {}),
    "/destruction": (("GET", "POST"), {"DESTRUCTION": FUTURE}),
    "/termination": (("GET", "POST"), {"TIME": FUTURE}),
    "/executionduration": (("GET", "POST"), {"EXECUTIONDURATION": "5"}),
    "/owner": (("GET",), {}),
    "/results.zip": (("GET",), {}),
    "/sky.svg": (("GET",), {}),
}
VERBS = ("GET", "POST", "DELETE", "PUT", "PATCH")
CELLS = [(resource, verb) for resource in RESOURCES for verb in VERBS]


@pytest.fixture(scope="module")
def alice(make_module_client) -> Iterator[dict[str, Any]]:
    """Token mode, Alice's COMPLETED and PENDING jobs, and a job of Bob's."""
    with make_module_client(auth="token", workers=1) as client:
        done = client.post("/async", data={"SIZE": "0.01", "PHASE": "RUN"}, headers=ALICE, follow_redirects=False,
                           files={"UPLOAD": ("fields.csv", b"ra,dec\n150.1,2.2\n", "text/csv")})
        pending = client.post("/async", data={"POS": "150.1,2.2", "SIZE": "0.01"}, headers=ALICE,
                              files={"UPLOAD": ("fields.csv", b"ra,dec\n150.2,2.2\n", "text/csv")},
                              follow_redirects=False)
        bobs = client.post("/async", data={"POS": "150.1,2.2", "SIZE": "0.01"}, headers=BOB, follow_redirects=False)
        assert done.status_code == pending.status_code == bobs.status_code == 303
        done_id, pending_id, bob_id = (r.headers["location"].rsplit("/", 1)[-1] for r in (done, pending, bobs))
        wait_for(client, done_id, ("COMPLETED",), headers=ALICE)
        results = client.get(f"/async/{done_id}", headers={**ALICE, "Accept": "application/json"}).json()["results"]
        result = next(r["id"] for r in results if r["id"] != "table")
        yield {"client": client, "jobs": {"COMPLETED": done_id, "PENDING": pending_id}, "bob": bob_id,
               "result": result}


def url(world: dict[str, Any], job: str, resource: str) -> str:
    return f"/async/{world['jobs'][job]}" + resource.format(upload="upload", result=world["result"])


def snapshot(world: dict[str, Any]) -> list[Any]:
    """Everything Alice can see of her jobs, as Alice sees it."""
    client, seen = world["client"], []
    for job in world["jobs"]:
        for resource in RESOURCES:
            if resource not in ("/events", "/results.zip"):  # a stream; a zip dated when it is made, of the above
                response = client.get(url(world, job, resource), headers=ALICE)
                seen.append((job, resource, response.status_code, response.content))
    return seen


def ask(world: dict[str, Any], job: str, resource: str, verb: str, headers: dict[str, str]) -> Any:
    data = RESOURCES[resource][1] if verb == "POST" else None
    return world["client"].request(verb, url(world, job, resource), data=data, headers=headers,
                                   follow_redirects=False)


@pytest.mark.parametrize("job", ["COMPLETED", "PENDING"])
def test_bob_is_refused_every_resource_and_verb_of_alices_jobs(alice, job: str) -> None:
    before = snapshot(alice)
    problems = []
    for resource, verb in CELLS:
        response = ask(alice, job, resource, verb, BOB)
        exists = verb in RESOURCES[resource][0]
        where = f"Bob {verb} {resource or '/'} of the {job} job: {response.status_code} {response.text[:100]!r}"
        if not exists:
            if response.status_code != 405:
                problems.append(where)
        elif resource == "/results/{result}" and response.status_code == 404:
            continue
        elif response.status_code != 403 or not response.text.startswith("PermissionDenied: ") \
                or "another owner" not in response.text:
            problems.append(where)
        if alice["result"].encode() in response.content and resource != "/results/{result}":
            problems.append(f"{where}: the answer names Alice's results")
    assert not problems, "\n".join(problems)
    assert snapshot(alice) == before  # nothing Bob did changed anything of Alice's


@pytest.mark.parametrize("who", list(NOBODY))
def test_without_valid_credentials_every_resource_is_401_with_a_challenge(alice, who: str) -> None:
    headers, error = NOBODY[who]
    before = snapshot(alice)
    problems = []
    for job in alice["jobs"]:
        for resource, verb in CELLS:
            response = ask(alice, job, resource, verb, headers)
            where = f"{who}: {verb} {resource or '/'} of the {job} job: {response.status_code} {response.text[:80]!r}"
            if verb not in RESOURCES[resource][0]:
                if response.status_code != 405:
                    problems.append(where)
                continue
            challenge = response.headers.get("www-authenticate", "")
            if response.status_code != 401 or not challenge.startswith('Bearer realm="siasync"') \
                    or (error is not None and f'error="{error}"' not in challenge) \
                    or not response.text.startswith("AuthenticationError: "):
                problems.append(f"{where} challenge={challenge!r}")
    for path in ("/async", "/sia?POS=150.1,2.2&SIZE=0.1", "/sia/cutout?ID=x&POS=150.1,2.2&SIZE=0.1"):
        for verb in ("GET", "POST") if path == "/async" else ("GET",):
            response = alice["client"].request(verb, path, headers=headers, data={"POS": "1,2", "SIZE": "0.1"}
                                               if verb == "POST" else None)
            if response.status_code != 401 or "www-authenticate" not in response.headers:
                problems.append(f"{who}: {verb} {path}: {response.status_code}")
    assert not problems, "\n".join(problems)
    assert snapshot(alice) == before


def test_alice_herself_may_use_every_resource(alice) -> None:
    """The control for the matrix: the same requests with Alice's token are answered."""
    client = alice["client"]
    for job in alice["jobs"]:
        for resource in RESOURCES:
            if job == "PENDING" and resource == "/events":
                continue  # the stream of a job that has not ended stays open
            response = client.get(url(alice, job, resource), headers=ALICE)
            unstarted = ("/results/{result}", "/results/table")  # no results yet, and no table before it starts
            expected = 404 if job == "PENDING" and resource in unstarted else 200
            assert response.status_code == expected, (job, resource, response.text[:200])
    lower = client.get(url(alice, "PENDING", "/owner"), headers={"Authorization": "bearer tok-alice"})
    assert lower.status_code == 200 and lower.text == "alice"  # the scheme is case-insensitive (RFC 9110)


JOB_LISTS = [{}, {"PHASE": "COMPLETED"}, {"PHASE": "PENDING"}, {"PHASE": ["PENDING", "COMPLETED", "ARCHIVED"]},
             {"AFTER": "2000-01-01T00:00:00Z"}, {"LAST": "100"}, {"PHASE": "COMPLETED", "LAST": "1"}]


@pytest.mark.parametrize("accept", ["application/xml", "application/json", "text/html"])
def test_bobs_job_list_never_shows_alices_jobs(alice, accept: str) -> None:
    client = alice["client"]
    for query in JOB_LISTS:
        response = client.get("/async", params=query, headers={**BOB, "Accept": accept})
        assert response.status_code == 200, response.text
        for job_id in alice["jobs"].values():
            assert job_id not in response.text, (query, accept)
        if query.get("PHASE") in (None, "PENDING"):
            assert alice["bob"] in response.text, (query, accept)
    mine = client.get("/async", params={"PHASE": ["PENDING", "COMPLETED"]}, headers={**ALICE, "Accept": accept})
    assert all(job_id in mine.text for job_id in alice["jobs"].values()) and alice["bob"] not in mine.text


def test_the_matrix_covers_every_route_of_a_job(alice) -> None:
    """A route added under /async/{job_id} must be added to RESOURCES (and so to the matrix)."""
    covered = {resource.replace("{upload}", "{name:str}").replace("{result}", "{result_id:str}"): set(methods)
               for resource, (methods, _) in RESOURCES.items()}
    for route in alice["client"].app.routes:
        if route.path.startswith("/async/{job_id:str}"):
            child = route.path.removeprefix("/async/{job_id:str}")
            assert child in covered, f"{route.path} is not in the isolation matrix"
            assert set(route.methods) - {"OPTIONS", "HEAD"} == covered[child], route.path

