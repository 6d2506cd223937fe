"""Quotas per owner and per job: the estimated output of a job, and what an owner's unfinished jobs and stored
uploads hold; each served at its value and refused past it with a 400 that gives the estimate and the limit.

The estimate of a cutout job's bytes is checked against the bytes the job really stages.
"""

from __future__ import annotations

from typing import Any

from tests.siasync.helpers import create_job, wait_for

ALICE = {"Authorization": "Bearer tok-alice"}
BOB = {"Authorization": "Bearer tok-bob"}
JOB = {"POS": ["150.1,2.2", "150.3,2.4"], "SIZE": "0.02", "FORMAT": "image/fits"}


def info(client, job_id: str, headers: dict | None = None) -> dict[str, Any]:
    return client.get(f"/async/{job_id}", headers={"Accept": "application/json", **(headers or {})}).json()


def test_the_estimate_of_a_cutout_job_is_the_bytes_it_stages(make_client) -> None:
    with make_client(workers=1) as client:
        job_id = create_job(client, {**JOB, "PHASE": "RUN"})
        wait_for(client, job_id, ("COMPLETED",), timeout=60)
        document = info(client, job_id)
        products = [r for r in document["results"] if r["id"] != "table"]
        assert document["jobInfo"]["output_bytes"] == sum(r["size"] for r in products) > 0
        assert document["jobInfo"]["cost"] == len(products)


def test_a_job_past_the_limit_of_one_job_is_refused_with_its_estimate(make_client) -> None:
    with make_client(workers=1) as client:
        job_info = info(client, create_job(client, JOB))["jobInfo"]
    estimate, pairs = job_info["output_bytes"], job_info["cost"]
    with make_client(workers=1, max_job_bytes=estimate) as client:
        create_job(client, JOB)  # at the limit
    with make_client(workers=1, max_job_bytes=estimate - 1) as client:
        before = client.get("/async", headers={"Accept": "application/json"}).json()
        refused = client.post("/async", data=JOB)
        assert refused.status_code == 400
        assert refused.text.startswith("UsageError: MAX_JOB_BYTES: the job would stage about ")
        assert f"({estimate} bytes) in {pairs} products (estimated), more than the limit of " in refused.text
        assert f"({estimate - 1} bytes) for one job" in refused.text
        assert client.get("/async", headers={"Accept": "application/json"}).json() == before  # nothing stored


def test_the_issues_job_of_100000_fields_at_size_2_is_refused_at_creation(make_client) -> None:
    """Accepted before with an estimate of 26 TB: refused by the default limit of one job, naming the estimate."""
    with make_client(workers=1) as client:
        refused = client.post("/async", data={"POS": "\n".join(["150.1,2.2"] * 100_000), "SIZE": "2"})
        assert refused.status_code == 400, refused.text
        assert refused.text.startswith("UsageError: MAX_JOB_BYTES: the job would stage about ")
        assert " TB (" in refused.text and "more than the limit of 100.0 GB (100000000000 bytes)" in refused.text


def test_an_owners_estimated_output_and_uploads_are_bounded_and_freed_by_deleting(make_client) -> None:
    with make_client(workers=1) as client:
        estimate = info(client, create_job(client, JOB))["jobInfo"]["output_bytes"]
    table = b"ra,dec\n150.1,2.2\n"
    with make_client(workers=1, auth="token", owner_output_bytes=2 * estimate,
                     owner_upload_bytes=3 * len(table)) as client:
        first = create_job(client, JOB, headers=ALICE)
        second = create_job(client, {**JOB, "PHASE": "RUN", "START": "2999-01-01T00:00:00Z"}, headers=ALICE)
        refused = client.post("/async", data=JOB, headers=ALICE)
        assert refused.status_code == 400
        assert refused.text.startswith("UsageError: OWNER_OUTPUT_BYTES: alice's unfinished jobs would stage about ")
        assert f"({2 * estimate} bytes) (estimated); this job's " in refused.text
        assert "more would exceed the limit of " in refused.text and f"({2 * estimate} bytes)" in refused.text
        assert create_job(client, JOB, headers=BOB)  # Bob's own
        client.post(f"/async/{second}/phase", data={"PHASE": "ABORT"}, headers=ALICE)
        create_job(client, JOB, headers=ALICE)  # a finished job no longer counts

        uploads = [create_job(client, {"SIZE": "0.01", "FORMAT": "METADATA"}, headers=BOB,
                              files={"UPLOAD": ("t.csv", table, "text/csv")}) for _ in range(3)]
        refused = client.post("/async", data={"SIZE": "0.01", "FORMAT": "METADATA"}, headers=BOB,
                              files={"UPLOAD": ("t.csv", table, "text/csv")})
        assert refused.status_code == 400
        assert refused.text.startswith(f"UsageError: OWNER_UPLOAD_BYTES: bob's jobs hold {3 * len(table)} bytes of "
                                       f"uploaded tables; this job's {len(table)} bytes more would exceed the limit")
        client.post(f"/async/{uploads[0]}/phase", data={"PHASE": "ABORT"}, headers=BOB)
        assert client.post("/async", data={"SIZE": "0.01"}, headers=BOB,
                           files={"UPLOAD": ("t.csv", table, "text/csv")}).status_code == 400  # still stored
        client.delete(f"/async/{uploads[0]}", headers=BOB)
        assert create_job(client, {"SIZE": "0.01", "FORMAT": "METADATA"}, headers=BOB,
                          files={"UPLOAD": ("t.csv", table, "text/csv")})
        assert first
