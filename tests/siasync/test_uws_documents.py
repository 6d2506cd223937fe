"""UWS documents in every phase, against the official XSD and pyvo's parser."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from astropy.io import fits
from lxml import etree
from pyvo.io.uws import parse_job, parse_job_list

from tests.siasync.helpers import assert_valid, create_job, in_app, phase, service, uws_schema, wait_for

NS = {"uws": "http://www.ivoa.net/xml/UWS/v1.0", "xlink": "http://www.w3.org/1999/xlink"}
SCHEMA = uws_schema()


def test_the_schema_accepts_the_standards_own_example_and_rejects_a_broken_one() -> None:
    from tests.siasync.helpers import UWS_DATA

    assert_valid(SCHEMA, (UWS_DATA / "UWS-1.1-example-job.xml").read_bytes())
    with pytest.raises(AssertionError):
        assert_valid(SCHEMA, b'<uws:job xmlns:uws="http://www.ivoa.net/xml/UWS/v1.0"><uws:phase>DONE</uws:phase></uws:job>')


def _force(client, job_id: str, to_phase: str, **changes) -> None:
    store = service(client).store
    assert in_app(client, store.transition, job_id, ("PENDING", "QUEUED", "EXECUTING"), to_phase, **changes)


@pytest.mark.parametrize("target", ["PENDING", "QUEUED", "EXECUTING", "COMPLETED", "ERROR", "ABORTED"])
@pytest.mark.parametrize("run_id", [None, "my run <&> id"])
def test_job_document_is_valid_in_every_phase(client, target: str, run_id: str | None) -> None:
    data = {"POS": ["150.1,2.2", "150.2,2.3"], "SIZE": "0.01", "FORMAT": "ALL"}
    if run_id:
        data["RUNID"] = run_id
    job_id = create_job(client, data)
    if target == "QUEUED":
        future = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
        job_id = create_job(client, {**data, "START": future, "PHASE": "RUN"})
    elif target == "EXECUTING":
        _force(client, job_id, "EXECUTING", start_time=datetime.now(UTC))
    elif target == "COMPLETED":
        client.post(f"/async/{job_id}/phase", data={"PHASE": "RUN"})
        wait_for(client, job_id, ("COMPLETED",))
    elif target == "ERROR":
        _force(client, job_id, "ERROR", error_type="fatal", error_message="the disk is full <&>",
               end_time=datetime.now(UTC))
    elif target == "ABORTED":
        client.post(f"/async/{job_id}/phase", data={"PHASE": "ABORT"})
    assert phase(client, job_id) == target
    document = client.get(f"/async/{job_id}").content
    root = assert_valid(SCHEMA, document)
    assert root.get("version") == "1.1"
    assert root.findtext("uws:phase", namespaces=NS) == target
    assert root.findtext("uws:runId", namespaces=NS) == run_id
    results = root.findall("uws:results/uws:result", NS)
    ids = [r.get("id") for r in results]
    assert (ids[:1] == ["table"]) == (target in ("EXECUTING", "COMPLETED"))  # listed once the job starts
    assert (len([i for i in ids if i != "table"]) > 0) == (target == "COMPLETED")
    for result in results:
        href = result.get(f"{{{NS['xlink']}}}href")
        assert href.startswith("http://testserver.local/async/")
        download = client.get(href.replace("http://testserver.local", ""))
        assert download.status_code == 200
        if result.get("id") == "table":
            assert result.get("size") is None and download.content.startswith(b"<?xml")
            continue
        assert len(download.content) == int(result.get("size"))
        if result.get("mime-type") == "image/fits":
            fits.open(io.BytesIO(download.content)).verify("exception")
    summary = root.find("uws:errorSummary", NS)
    assert (summary is not None) == (target == "ERROR")
    # pyvo reads the same document
    job = parse_job(io.BytesIO(document))
    assert job.jobid == job_id and job.phase == target and job.runid == run_id
    assert len(job.results) == len(results)
    if target == "ERROR":
        assert job.errorsummary.message.content == "the disk is full <&>"
        assert client.get(f"/async/{job_id}/error").text == "the disk is full <&>"
    for child in ("results", "parameters"):
        assert_valid(SCHEMA, client.get(f"/async/{job_id}/{child}").content)


def test_job_list_is_valid_and_pyvo_reads_it(client) -> None:
    ids = [create_job(client, {"POS": "150.1,2.2", "SIZE": "0.01", "RUNID": f"r{i}"}) for i in range(3)]
    document = client.get("/async").content
    root = assert_valid(SCHEMA, document)
    refs = root.findall("uws:jobref", NS)
    assert [r.get("id") for r in refs] == ids[::-1]  # newest first
    assert all(r.get(f"{{{NS['xlink']}}}href").endswith(f"/async/{r.get('id')}") for r in refs)
    parsed = parse_job_list(io.BytesIO(document))
    assert [j.jobid for j in parsed] == ids[::-1]
    assert {j.phase for j in parsed} == {"PENDING"}
    assert_valid(SCHEMA, client.get("/async", params={"PHASE": "COMPLETED"}).content)  # an empty list too


def test_times_are_utc_iso_with_z_and_atomic_children_are_text(client) -> None:
    job_id = create_job(client)
    for child in ("destruction", "termination"):
        response = client.get(f"/async/{job_id}/{child}")
        assert response.headers["content-type"].startswith("text/plain")
        assert response.text.endswith("Z") and datetime.fromisoformat(response.text).tzinfo is not None
    assert client.get(f"/async/{job_id}/executionduration").text == str(12 * 3600)
    assert client.get(f"/async/{job_id}/quote").text == ""
    assert client.get(f"/async/{job_id}/owner").text == ""  # nobody is authenticated: no owner
    assert client.get(f"/async/{job_id}/error").text == ""
    assert client.get(f"/async/{job_id}/nosuchchild").status_code == 404


def test_json_representation(client) -> None:
    job_id = create_job(client, {"POS": "150.1,2.2", "SIZE": "0.01", "RUNID": "j"})
    body = client.get(f"/async/{job_id}", headers={"Accept": "application/json"}).json()
    assert body["jobId"] == job_id and body["phase"] == "PENDING" and body["runId"] == "j"
    assert {"id": "pos", "value": "150.1,2.2"} in body["parameters"]
    listing = client.get("/async", headers={"Accept": "application/json"}).json()
    assert listing[0]["jobId"] == job_id


def test_every_version_of_a_growing_job_lists_exactly_its_results_in_any_order_of_reading(client) -> None:
    """One shared listing serves each version its own results, whether read as the job grows, at once after
    it, or for an older version after a newer one (a reader that held a job while another extended the piece)."""
    import dataclasses
    import json
    import random
    import zlib

    from siasync.uws.documents import JobDocuments

    job_id = create_job(client, {"POS": [f"150.{i},2.{i}" for i in range(1, 7)], "SIZE": "0.01", "FORMAT": "ALL",
                                 "PHASE": "RUN"})
    wait_for(client, job_id, ("COMPLETED",))
    store = service(client).store
    job = in_app(client, store.get, job_id)
    results = in_app(client, store.results, job_id, limit=None)
    seqs = [r.seq for r in results]
    assert len(seqs) > 6 and seqs == sorted(seqs)
    versions = [dataclasses.replace(job, version=-seq, last_seq=seq) for seq in [0, *seqs]]

    def listed(document, kind: str) -> list[str]:
        assert zlib.decompress(document.deflated) == document.body
        if kind == "json":
            return [r["id"] for r in json.loads(document.body)["results"]]
        root = assert_valid(SCHEMA, document.body) if kind == "xml" else etree.fromstring(document.body)
        return [r.get("id") for r in root.iter("{%s}result" % NS["uws"])]

    def expected(version) -> list[str]:
        return ["table", *(r.result_id for r in results if r.seq <= version.last_seq)]

    base = "http://testserver.local"
    orders = {"growing": versions, "newest first": versions[::-1],
              "shuffled": random.Random(7).sample(versions, len(versions))}
    for order in orders.values():
        documents = JobDocuments(store)
        for version in order:
            for kind, render in (("xml", documents.xml), ("json", documents.json), ("results", documents.results)):
                assert listed(in_app(client, render, version, base), kind) == expected(version), (kind, version)


def test_control_characters_in_an_echoed_value_keep_every_document_well_formed(client) -> None:
    """A warning naming an archive file whose name holds control characters is echoed in the job's XML, valid against
    the UWS schema with the characters shown as escapes, and in its JSON as they are."""
    job_id = create_job(client)
    warning = "image x (a\x01b\x1f.fits) skipped: unreadable"
    in_app(client, service(client).store.update, job_id, info={"fields_total": 1, "warnings": [warning]})
    document = client.get(f"/async/{job_id}")
    root = assert_valid(SCHEMA, document.content)
    info = root.find("{http://www.ivoa.net/xml/UWS/v1.0}jobInfo")
    assert [e.text for e in info if e.tag.endswith("warning1")] == ["image x (a\\x01b\\x1f.fits) skipped: unreadable"]
    assert client.get(f"/async/{job_id}", headers={"Accept": "application/json"}).json()["jobInfo"]["warning1"] == \
        warning
