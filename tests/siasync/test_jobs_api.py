"""The UWS job resources through the app: phases, destruction, WAIT, lists, owners, aliases."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from siasync.uws.events import job_events
from storage.jobs import Job
from tests.siasync.helpers import create_job, in_app, phase, service, wait_for

FUTURE = (datetime.now(UTC) + timedelta(days=1)).isoformat()


def force(client, job_id: str, to_phase: str, **changes) -> None:
    """Put a job in a phase no client request reaches directly (EXECUTING, ERROR, HELD, ARCHIVED)."""
    assert in_app(client, service(client).store.transition, job_id,
                  ("PENDING", "QUEUED", "EXECUTING"), to_phase, **changes)


def post_phase(client, job_id: str, value: str, headers: dict | None = None) -> int:
    return client.post(f"/async/{job_id}/phase", data={"PHASE": value}, headers=headers,
                       follow_redirects=False).status_code


def job_in(client, start_phase: str) -> str:
    if start_phase == "QUEUED":
        return create_job(client, {"POS": "150.1,2.2", "SIZE": "0.01", "START": FUTURE, "PHASE": "RUN"})
    job_id = create_job(client)
    if start_phase == "COMPLETED":
        post_phase(client, job_id, "RUN")
        wait_for(client, job_id, ("COMPLETED",))
    elif start_phase == "ABORTED":
        post_phase(client, job_id, "ABORT")
    elif start_phase != "PENDING":
        force(client, job_id, start_phase, start_time=datetime.now(UTC))
    assert phase(client, job_id) == start_phase
    return job_id


# (phase, PHASE value, expected status, phase afterwards; None: running on)
TABLE = [
    ("PENDING", "RUN", 303, None), ("PENDING", "ABORT", 303, "ABORTED"),
    ("HELD", "RUN", 303, None), ("HELD", "ABORT", 303, "ABORTED"),
    ("QUEUED", "RUN", 403, "QUEUED"), ("QUEUED", "ABORT", 303, "ABORTED"),
    ("EXECUTING", "RUN", 403, "EXECUTING"), ("EXECUTING", "ABORT", 303, "ABORTED"),
    ("COMPLETED", "RUN", 403, "COMPLETED"), ("COMPLETED", "ABORT", 403, "COMPLETED"),
    ("ERROR", "RUN", 403, "ERROR"), ("ERROR", "ABORT", 403, "ERROR"),
    ("ABORTED", "RUN", 403, "ABORTED"), ("ABORTED", "ABORT", 403, "ABORTED"),
    ("PENDING", "SUSPEND", 400, "PENDING"), ("PENDING", "", 400, "PENDING"),
]


@pytest.mark.parametrize("start,value,status,after", TABLE)
def test_phase_table(client, start: str, value: str, status: int, after: str | None) -> None:
    job_id = job_in(client, start)
    response = client.post(f"/async/{job_id}/phase", data={"PHASE": value}, follow_redirects=False)
    assert response.status_code == status, response.text
    if status == 303:
        assert response.headers["location"] == f"http://testserver.local/async/{job_id}"
    else:
        assert response.text.startswith("PermissionDenied: " if status == 403 else "UsageError: PHASE:")
    if after is None:
        assert wait_for(client, job_id, ("COMPLETED",)) == "COMPLETED"
    else:
        assert phase(client, job_id) == after


def test_abort_keeps_results_and_run_stages_real_cutouts(client) -> None:
    job_id = create_job(client, {"POS": ["150.1,2.2", "150.3,2.4"], "SIZE": "0.02", "FORMAT": "ALL",
                                 "PHASE": "RUN"})
    wait_for(client, job_id, ("COMPLETED",))
    results = client.get(f"/async/{job_id}", headers={"Accept": "application/json"}).json()["results"]
    assert results[0]["id"] == "table" and results[0]["mime-type"] == "text/xml;content=x-votable"
    assert {r["mime-type"] for r in results[1:]} == {"image/fits", "image/png"}
    assert post_phase(client, job_id, "ABORT") == 403
    assert len(client.get(f"/async/{job_id}", headers={"Accept": "application/json"}).json()["results"]) == len(results)


@pytest.mark.parametrize("how", ["DELETE", "ACTION=DELETE"])
def test_destroying_a_job_forgets_it_and_its_files(client, how: str) -> None:
    job_id = create_job(client, {"POS": "150.1,2.2", "SIZE": "0.02", "PHASE": "RUN"})
    wait_for(client, job_id, ("COMPLETED",))
    files = service(client).files.job_dir(job_id)
    assert any(files.iterdir())
    if how == "DELETE":
        response = client.delete(f"/async/{job_id}", follow_redirects=False)
    else:
        response = client.post(f"/async/{job_id}", data={"ACTION": "DELETE"}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "http://testserver.local/async"
    assert not files.exists()
    for child in ("", "/phase", "/results", "/parameters", "/destruction", "/error", "/quote", "/owner"):
        assert client.get(f"/async/{job_id}{child}").status_code == 404
    assert client.delete(f"/async/{job_id}", follow_redirects=False).status_code == 404
    assert job_id not in client.get("/async").text


def test_post_to_a_job_needs_action_delete(client) -> None:
    job_id = create_job(client)
    response = client.post(f"/async/{job_id}", data={"ACTION": "EXPLODE"})
    assert response.status_code == 400 and response.text.startswith("UsageError: ACTION:")
    assert phase(client, job_id) == "PENDING"


def test_destruction_and_execution_duration_are_clamped(make_client) -> None:
    with make_client(destruction_default_s=600, destruction_max_s=3600, execution_default_s=300,
                     execution_max_s=600) as client:
        far = (datetime.now(UTC) + timedelta(days=365)).isoformat()
        job_id = create_job(client, {"POS": "150.1,2.2", "SIZE": "0.01", "DESTRUCTION": far,
                                     "EXECUTIONDURATION": "99999"})
        destruction = datetime.fromisoformat(client.get(f"/async/{job_id}/destruction").text)
        assert abs((destruction - datetime.now(UTC)).total_seconds() - 3600) < 60
        assert client.get(f"/async/{job_id}/executionduration").text == "600"
        for value, expected in (("30", "30"), ("0", "600"), ("100000", "600")):
            client.post(f"/async/{job_id}/executionduration", data={"EXECUTIONDURATION": value})
            assert client.get(f"/async/{job_id}/executionduration").text == expected
        assert client.post(f"/async/{job_id}/executionduration", data={"EXECUTIONDURATION": "-5"}).status_code == 400
        soon = (datetime.now(UTC) + timedelta(minutes=10)).replace(microsecond=0)
        client.post(f"/async/{job_id}/destruction", data={"DESTRUCTION": soon.isoformat()})
        assert datetime.fromisoformat(client.get(f"/async/{job_id}/destruction").text) == soon
        client.post(f"/async/{job_id}/destruction", data={"DESTRUCTION": far})
        assert datetime.fromisoformat(client.get(f"/async/{job_id}/destruction").text) < soon + timedelta(hours=1)
        post_phase(client, job_id, "ABORT")
        assert client.post(f"/async/{job_id}/executionduration",
                           data={"EXECUTIONDURATION": "10"}).status_code == 403


def test_reaper_destroys_expired_jobs(make_client) -> None:
    with make_client(destruction_default_s=1, destruction_max_s=2) as client:
        job_id = create_job(client, {"POS": "150.1,2.2", "SIZE": "0.01", "PHASE": "RUN"})
        wait_for(client, job_id, ("COMPLETED",))
        files = service(client).files.job_dir(job_id)
        deadline = time.monotonic() + 15
        while client.get(f"/async/{job_id}").status_code != 404 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get(f"/async/{job_id}").status_code == 404
        assert not files.exists()


def test_execution_duration_running_out_aborts_the_job(make_client) -> None:
    with make_client(execution_default_s=1, workers=1) as client:
        many = [f"{150.1 + 0.01 * (i % 20)},{2.2 + 0.01 * (i // 20)}" for i in range(400)]
        job_id = create_job(client, {"POS": many, "SIZE": "0.05", "FORMAT": "ALL", "PHASE": "RUN"})
        assert wait_for(client, job_id, ("ABORTED", "COMPLETED"), timeout=60) == "ABORTED"
        body = client.get(f"/async/{job_id}", headers={"Accept": "application/json"}).json()
        assert "execution duration of 1 s exceeded" in body["errorSummary"]["message"]
        assert body["results"], "the results made before the abort are kept"
        count = len(body["results"])
        time.sleep(0.5)
        assert len(client.get(f"/async/{job_id}", headers={"Accept": "application/json"}).json()["results"]) == count


def test_wait_returns_on_a_phase_change(client) -> None:
    job_id = create_job(client)
    outcome = {}

    def waiter() -> None:
        start = time.monotonic()
        outcome["phase"] = client.get(f"/async/{job_id}", params={"WAIT": "20"},
                                      headers={"Accept": "application/json"}).json()["phase"]
        outcome["elapsed"] = time.monotonic() - start

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.5)
    assert "phase" not in outcome  # still blocked
    post_phase(client, job_id, "ABORT")
    thread.join(25)
    assert outcome["phase"] == "ABORTED"
    assert outcome["elapsed"] < 15  # woken by the change, well before the 20 s wait ran out


def test_wait_returns_at_once_on_mismatch_or_final_phase_and_respects_its_cap(make_client) -> None:
    cap = 4.0
    with make_client(wait_max_s=int(cap)) as client:
        job_id = create_job(client)

        def timed(params: dict) -> float:
            start = time.monotonic()
            assert client.get(f"/async/{job_id}", params=params).status_code == 200
            return time.monotonic() - start

        # each bound is half the cap or more away from it, so load on the machine cannot flip it
        for params in ({"WAIT": "30", "PHASE": "EXECUTING"}, {"WAIT": "30", "PHASE": "QUEUED"}):
            assert timed(params) < cap / 2  # a PHASE mismatch: no wait at all
        assert cap * 0.9 < timed({"WAIT": "30"}) < cap * 3  # capped at wait_max_s
        assert cap * 0.9 < timed({"WAIT": "-1", "PHASE": "PENDING"}) < cap * 3  # -1: the longest wait allowed
        post_phase(client, job_id, "ABORT")
        assert timed({"WAIT": "30"}) < cap / 2  # a final phase: at once
        for bad in ("soon", "-2", "1.5"):
            response = client.get(f"/async/{job_id}", params={"WAIT": bad})
            assert response.status_code == 400 and response.text.startswith("UsageError: WAIT:")
        bad_phase = client.get(f"/async/{job_id}", params={"WAIT": "1", "PHASE": "NAPPING"})
        assert bad_phase.status_code == 400 and "PHASE" in bad_phase.text


def test_job_list_filters(client) -> None:
    first = create_job(client)
    aborted = create_job(client)
    post_phase(client, aborted, "ABORT")
    time.sleep(0.01)
    middle = datetime.now(UTC)
    time.sleep(0.01)
    archived = create_job(client)
    force(client, archived, "ARCHIVED")
    latest = create_job(client)

    def ids(params: dict | None = None) -> list[str]:
        return [j["jobId"] for j in client.get("/async", params=params, headers={"Accept": "application/json"}).json()]

    assert ids() == [latest, aborted, first]  # newest first, ARCHIVED hidden
    assert ids({"PHASE": "ARCHIVED"}) == [archived]
    assert ids({"PHASE": ["PENDING", "ABORTED"]}) == [latest, aborted, first]
    assert ids({"PHASE": "aborted"}) == [aborted]
    assert ids({"AFTER": middle.isoformat()}) == [latest]
    assert ids({"LAST": "2"}) == [latest, aborted]
    assert ids({"LAST": "1", "PHASE": "PENDING"}) == [latest]
    for params, name in (({"PHASE": "DONE"}, "PHASE"), ({"AFTER": "yesterday"}, "AFTER"),
                         ({"LAST": "0"}, "LAST"), ({"LAST": "x"}, "LAST")):
        response = client.get("/async", params=params)
        assert response.status_code == 400 and response.text.startswith(f"UsageError: {name}:")


def test_aliases_of_the_seed_draft(client) -> None:
    job_id = create_job(client)
    assert client.get(f"/async/{job_id}/termination").text == client.get(f"/async/{job_id}/destruction").text
    instant = (datetime.now(UTC) + timedelta(hours=5)).replace(microsecond=0)
    response = client.post(f"/async/{job_id}/termination", data={"TIME": instant.isoformat()}, follow_redirects=False)
    assert response.status_code == 303
    assert datetime.fromisoformat(client.get(f"/async/{job_id}/destruction").text) == instant
    assert client.post(f"/async/{job_id}/termination", data={}).status_code == 400
    response = client.post(f"/async/{job_id}/quote", follow_redirects=False)
    assert response.status_code == 303
    assert wait_for(client, job_id, ("COMPLETED",)) == "COMPLETED"
    assert client.post(f"/async/{job_id}/quote").status_code == 403  # already run


def test_parameters_can_change_while_pending_only(client) -> None:
    job_id = create_job(client)
    response = client.post(f"/async/{job_id}/parameters", data={"SIZE": "0.03", "POS": "150.2,2.3"},
                           follow_redirects=False)
    assert response.status_code == 303
    params = client.get(f"/async/{job_id}/parameters").text
    assert ">0.03<" in params and ">150.2,2.3<" in params and ">150.1,2.2<" not in params
    bad = client.post(f"/async/{job_id}/parameters", data={"SIZE": "-1"})
    assert bad.status_code == 400 and bad.text.startswith("UsageError: SIZE:")
    post_phase(client, job_id, "ABORT")
    assert client.post(f"/async/{job_id}/parameters", data={"SIZE": "0.02"}).status_code == 403


TOKEN_A = {"Authorization": "Bearer tok-alice"}
TOKEN_B = {"Authorization": "Bearer tok-bob"}


def test_owner_isolation_in_token_mode(make_client) -> None:
    with make_client(auth="token") as client:
        job_id = create_job(client, headers=TOKEN_A)
        assert client.get(f"/async/{job_id}/owner", headers=TOKEN_A).text == "alice"
        reads = ["", "/phase", "/executionduration", "/destruction", "/termination", "/error", "/quote",
                 "/results", "/parameters", "/owner"]
        for child in reads:
            response = client.get(f"/async/{job_id}{child}", headers=TOKEN_B)
            assert response.status_code == 403, child
            assert client.get(f"/async/{job_id}{child}", headers=TOKEN_A).status_code == 200, child
        writes = [("/phase", {"PHASE": "RUN"}), ("/phase", {"PHASE": "ABORT"}),
                  ("/executionduration", {"EXECUTIONDURATION": "10"}), ("/destruction", {"DESTRUCTION": FUTURE}),
                  ("/termination", {"TIME": FUTURE}), ("/quote", {}), ("/parameters", {"SIZE": "0.02"}),
                  ("", {"ACTION": "DELETE"})]
        for child, data in writes:
            response = client.post(f"/async/{job_id}{child}", data=data, headers=TOKEN_B, follow_redirects=False)
            assert response.status_code == 403, child
        assert client.delete(f"/async/{job_id}", headers=TOKEN_B).status_code == 403
        assert client.get(f"/async/{job_id}", params={"WAIT": "1"}, headers=TOKEN_B).status_code == 403
        assert phase(client, job_id, TOKEN_A) == "PENDING"
        bob_job = create_job(client, headers=TOKEN_B)
        assert job_id not in client.get("/async", headers=TOKEN_B).text
        assert bob_job in client.get("/async", headers=TOKEN_B).text
        assert bob_job not in client.get("/async", headers=TOKEN_A).text
        post_phase(client, job_id, "RUN", TOKEN_A)
        wait_for(client, job_id, ("COMPLETED",), headers=TOKEN_A)
        result = client.get(f"/async/{job_id}", headers={**TOKEN_A, "Accept": "application/json"}).json()["results"][0]
        path = result["href"].replace("http://testserver.local", "")
        assert client.get(path, headers=TOKEN_A).status_code == 200
        assert client.get(path, headers=TOKEN_B).status_code == 403
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
            response = client.get("/async", headers=headers)
            assert response.status_code == 401 and "Bearer" in response.headers["www-authenticate"]
            assert response.text.startswith("AuthenticationError:")
            assert client.post("/async", data={"POS": "150.1,2.2", "SIZE": "0.01"}, headers=headers).status_code == 401


def test_header_mode_trusts_the_proxy(make_client) -> None:
    with make_client(auth="header") as client:
        job_id = create_job(client, headers={"X-Remote-User": "carol"})
        assert client.get(f"/async/{job_id}/owner", headers={"X-Remote-User": "carol"}).text == "carol"
        assert client.get(f"/async/{job_id}", headers={"X-Remote-User": "dave"}).status_code == 403
        assert client.get("/async").status_code == 401


def test_parameters_are_accepted_from_query_form_and_multipart_case_insensitively(client) -> None:
    by_query = create_job(client, data={}, params={"pos": "150.1,2.2", "Size": "0.01"})
    by_multipart = client.post("/async", files={"POS": (None, "150.1,2.2"), "size": (None, "0.01")},
                               follow_redirects=False)
    assert by_multipart.status_code == 303
    mixed = create_job(client, data={"SIZE": "0.01"}, params={"POS": "150.1,2.2"})
    for job_id in (by_query, by_multipart.headers["location"].rsplit("/", 1)[-1], mixed):
        assert ">150.1,2.2<" in client.get(f"/async/{job_id}/parameters").text


def test_openapi_schema_is_served(client) -> None:
    response = client.get("/schema/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert "/async" in paths and "/async/{job_id}/phase" in paths


def test_other_requests_are_answered_while_many_clients_wait(client) -> None:
    waiting_on = [create_job(client) for _ in range(5)]
    other = create_job(client)
    threads = [threading.Thread(target=client.get, args=(f"/async/{waiting_on[i % 5]}",),
                                kwargs={"params": {"WAIT": "8"}}) for i in range(40)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    answers = [client.get(f"/async/{other}/phase").text for _ in range(20)]
    assert answers == ["PENDING"] * 20
    assert all(thread.is_alive() for thread in threads)  # answered while all 40 were still blocked
    for job_id in waiting_on:
        post_phase(client, job_id, "ABORT")  # wakes every waiter
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)


def test_per_owner_limits_refuse_more_work_at_creation_and_at_run(make_client) -> None:
    """Deferred jobs keep their owner's slots busy; a third job, or too many fields, is refused by name."""
    with make_client(auth="token", owner_active_jobs=2, owner_queued_fields=5) as client:
        deferred = {"SIZE": "0.01", "START": FUTURE, "PHASE": "RUN"}
        create_job(client, {"POS": "150.1,2.2;150.2,2.2", **deferred}, headers=TOKEN_A)
        # fields: 2 queued, 4 more would make 6 > 5
        response = client.post("/async", data={"POS": "150.1,2.2;150.2,2.2;150.3,2.2;150.4,2.2", **deferred},
                               headers=TOKEN_A, follow_redirects=False)
        assert response.status_code == 400 and response.text.startswith("UsageError: OWNER_QUEUED_FIELDS:")
        assert "exceed the limit of 5" in response.text
        create_job(client, {"POS": "150.1,2.2", **deferred}, headers=TOKEN_A)
        before = client.get("/async", headers={**TOKEN_A, "Accept": "application/json"}).json()
        response = client.post("/async", data={"POS": "150.1,2.2", **deferred}, headers=TOKEN_A,
                               follow_redirects=False)
        assert response.status_code == 400 and "already has 2 unfinished jobs" in response.text
        # nothing was stored
        assert client.get("/async", headers={**TOKEN_A, "Accept": "application/json"}).json() == before
        pending = client.post("/async", data={"POS": "150.1,2.2", "SIZE": "0.01"}, headers=TOKEN_A)
        assert pending.status_code == 400 and "already has 2 unfinished jobs" in pending.text  # PENDING counts
        other = create_job(client, {"POS": "150.1,2.2", **deferred}, headers=TOKEN_B)  # bob has his own limits
        assert phase(client, other, TOKEN_B) == "QUEUED"


def test_a_job_carries_its_cost_estimate(client) -> None:
    """Exact for a small job: the (field, image) pairs the index finds."""
    from cutout.sky import Field

    positions = [(150.1, 2.2), (150.3, 2.4), (10.0, 10.0)]
    job_id = create_job(client, {"POS": ";".join(f"{ra},{dec}" for ra, dec in positions), "SIZE": "0.01",
                                 "COLLECTION": "DEMO-WIDE"})
    info = client.get(f"/async/{job_id}", headers={"Accept": "application/json"}).json()["jobInfo"]
    index = client.app.state.index
    expected = sum(len(index.lookup(Field(ra, dec, 0.01, 0.01), collections=["DEMO-WIDE"])) for ra, dec in positions)
    assert info["cost"] == expected > 0


def test_the_event_stream_keep_alive_is_a_bare_comment(monkeypatch) -> None:
    """A keep-alive must not reach a browser's EventSource as an empty ``message`` event."""
    now = datetime.now(UTC)
    job = Job(id="j", owner="o", run_id=None, phase="EXECUTING", creation_time=now, start_time=now, end_time=None,
              execution_duration=60, destruction=now, quote=None, start_after=None, error_type=None,
              error_message=None, parameters=[], spec={}, info={})

    class Quiet:  # a running job that makes nothing: the stream can only keep the connection alive
        class store:
            async def get(job_id: str) -> Job:
                return job

            async def results(job_id: str, after: int, limit: int) -> list:
                return []

        class results_watch:
            def arm(job_id: str) -> None:
                return None

            async def wait(job_id: str, timeout: float, armed: None) -> bool:
                return False

    async def first_messages() -> list[bytes]:
        stream = job_events(Quiet, "j", 0, "http://x")
        return [(await anext(stream)).encode() for _ in range(4)]

    phase, progress, times, keep_alive = asyncio.run(first_messages())
    assert phase.startswith(b"event: phase") and progress.startswith(b"event: progress")
    assert times.startswith(b"event: times")
    assert keep_alive == b": keep-alive\r\n\r\n"
