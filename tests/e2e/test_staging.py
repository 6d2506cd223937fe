"""Progressive staging on a real server with the real process pool and the demo archive."""

from __future__ import annotations

import io
import json
import time

import httpx
import numpy as np
from astropy.io import fits
from astropy.io.votable import parse as parse_votable
from astropy.io.votable import parse_single_table
from lxml import etree
from pyvo.dal.sia import SIAResults
from pyvo.io.uws import parse_job

from cutout.index import ArchiveIndex
from cutout.sky import Field
from tests.e2e.conftest import BOTH_STORES, LOCAL_ONLY, Server, submit, wait_final

SIZE = 0.03


def grid(n: int) -> list[tuple[float, float]]:
    """n fields spread over DEMO-WIDE (several images each, so jobs take a while)."""
    side = int(np.ceil(np.sqrt(n)))
    return [(150.1 - 0.45 + 0.9 * (i % side) / side, 2.2 - 0.45 + 0.9 * (i // side) / side) for i in range(n)]


def start(server: Server, positions: list[tuple[float, float]], **params: object) -> str:
    """Run a job on these fields at once."""
    return submit(server, **{"POS": [f"{ra},{dec}" for ra, dec in positions], "SIZE": str(SIZE),
                             "PHASE": "RUN", **params})


def products(url: str) -> list:
    return [r for r in parse_job(io.BytesIO(httpx.get(url, timeout=30).content)).results if r.id_ != "table"]


def until(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def expected_pairs(index: ArchiveIndex, positions: list[tuple[float, float]]) -> set[tuple[int, str]]:
    return {(i, r.id) for i, (ra, dec) in enumerate(positions) for r in index.lookup(Field(ra, dec, SIZE, SIZE))}


@BOTH_STORES
def test_results_and_table_grow_while_the_job_runs(staging: Server, demo_index: ArchiveIndex) -> None:
    positions = grid(300)
    job = start(staging, positions)
    until(lambda: len(products(job)) >= 3)
    assert httpx.get(job + "/phase").text == "EXECUTING"
    first = products(job)[0]
    with fits.open(io.BytesIO(httpx.get(first.href).content)) as hdul:  # a valid FITS file, mid-job
        hdul.verify("exception")
        assert hdul[0].data.size > 0
    table_bytes = httpx.get(job + "/results/table").content
    # /results is exact; the job document may list up to half a second late (shared rendering)
    listed = {el.get("id") for el in etree.fromstring(httpx.get(job + "/results").content)}
    votable = parse_single_table(io.BytesIO(table_bytes)).to_table()
    sia = SIAResults(parse_votable(io.BytesIO(table_bytes)))  # pyvo reads the same snapshot
    assert httpx.get(job + "/phase").text == "EXECUTING"
    assert 0 < len(votable) == len(sia)
    assert set(votable["result_id"]) <= listed  # every row has its listed result
    for record in list(sia)[:5]:
        assert record.getdataurl().endswith(record["result_id"])
        assert record.format == "image/fits" and record.naxes == 2
        assert httpx.get(record.getdataurl()).status_code == 200
    final = wait_final(job, timeout=180)
    assert final.phase == "COMPLETED"
    table = parse_single_table(io.BytesIO(httpx.get(job + "/results/table").content)).to_table()
    ids = [r.id_ for r in final.results if r.id_ != "table"]
    assert list(table["result_id"]) == ids  # one row per result, in registration order
    assert {(int(f), p) for f, p in zip(table["field"], table["parent_id"], strict=True)} == \
        expected_pairs(demo_index, positions)
    resource = parse_votable(io.BytesIO(httpx.get(job + "/results/table").content)).resources[0]
    info = {i.name: i.value for i in resource.infos}
    assert info["JOB_PHASE"] == "COMPLETED" and info["FIELDS_DONE"] == info["FIELDS_TOTAL"] == "300"
    assert table["access_url"][0] == f"{job}/results/{ids[0]}"
    job_info = httpx.get(job, headers={"Accept": "application/json"}).json()["jobInfo"]
    assert job_info["products"] == len(ids) and job_info["fields_done"] == 300
    assert job_info["bytes"] == sum(r.size for r in final.results if r.id_ != "table")


@LOCAL_ONLY
def test_range_requests_and_conditional_gets(staging: Server) -> None:
    job = start(staging, [(150.1, 2.2)])
    wait_final(job)
    result = products(job)[0]
    whole = httpx.get(result.href)
    assert whole.headers["accept-ranges"] == "bytes" and "etag" in whole.headers and "last-modified" in whole.headers
    for header, expected in (("bytes=0-9", whole.content[:10]), ("bytes=100-", whole.content[100:]),
                             ("bytes=-50", whole.content[-50:]), ("bytes=2879-2880", whole.content[2879:2881])):
        part = httpx.get(result.href, headers={"Range": header})
        assert part.status_code == 206 and part.content == expected, header
        assert part.headers["content-range"].endswith(f"/{len(whole.content)}")
    assert httpx.get(result.href, headers={"Range": f"bytes={len(whole.content)}-"}).status_code == 416
    assert httpx.get(result.href, headers={"Range": "bytes=0-1,5-6"}).content == whole.content  # multi: whole
    assert httpx.get(result.href, headers={"If-None-Match": whole.headers["etag"]}).status_code == 304


def read_events(job: str, headers: dict, phases: list[str], stop_after: int | None = None) -> list[tuple[int, str]]:
    """(id, result id) of the result events of a job's stream, collecting phases on the way."""
    results: list[tuple[int, str]] = []
    with httpx.stream("GET", job + "/events", headers=headers, timeout=120) as stream:
        event, last_id = None, None
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("id:"):
                last_id = int(line.split(":", 1)[1])
            elif line.startswith("data:") and event == "result":
                results.append((last_id, json.loads(line[5:])["id"]))
                if len(results) == stop_after:
                    break  # drop the connection mid-job
            elif line.startswith("data:") and event == "phase":
                phases.append(json.loads(line[5:])["phase"])
    return results


def test_events_deliver_every_result_and_resume_with_last_event_id(staging: Server) -> None:
    job = start(staging, grid(40), FORMAT="ALL")
    phases: list[str] = []
    seen = read_events(job, {}, phases, stop_after=5)
    resumed = read_events(job, {"Last-Event-ID": str(seen[-1][0])}, phases)
    final = wait_final(job)
    ids = [r.id_ for r in final.results if r.id_ != "table"]
    assert [i for _, i in seen + resumed] == ids  # every result exactly once, in order
    assert phases[-1] == "COMPLETED"
    assert httpx.get(job + "/events", headers={"Last-Event-ID": "soon"}).status_code == 400


@BOTH_STORES
def test_delete_mid_job_leaves_no_files(staging: Server) -> None:
    job = start(staging, grid(300))
    until(lambda: len(products(job)) >= 2)
    job_id = job.rsplit("/", 1)[-1]
    directory = staging.state_dir / "results" / job_id
    assert directory.is_dir()
    response = httpx.delete(job, follow_redirects=False)
    assert response.status_code == 303
    time.sleep(2.0)
    assert not directory.exists()
    assert httpx.get(job).status_code == 404
    assert httpx.get(job + "/results/table").status_code == 404


@BOTH_STORES
def test_abort_mid_job_keeps_what_was_registered(staging: Server) -> None:
    job = start(staging, grid(300))
    until(lambda: len(products(job)) >= 2)
    httpx.post(job + "/phase", data={"PHASE": "ABORT"})
    assert httpx.get(job + "/phase").text == "ABORTED"
    time.sleep(1.5)
    kept = products(job)
    assert kept
    for result in kept[::25]:
        assert httpx.get(result.href).status_code == 200
    job_id = job.rsplit("/", 1)[-1]
    on_disk = {p.name for p in (staging.state_dir / "results" / job_id).iterdir()}
    assert on_disk == {r.id_ for r in kept}  # no unregistered output left behind
    table = parse_single_table(io.BytesIO(httpx.get(job + "/results/table").content)).to_table()
    assert list(table["result_id"]) == [r.id_ for r in kept]


def test_execution_duration_running_out_aborts(staging: Server) -> None:
    job = start(staging, grid(2000), EXECUTIONDURATION="1")
    final = wait_final(job, timeout=60)
    assert final.phase == "ABORTED" and "execution duration" in final.errorsummary.message.content
    ran = (final.endtime - final.starttime).to_value("s")
    assert 1 <= ran < 3, ran  # aborted when the duration runs out, not at the reaper's next sweep


@LOCAL_ONLY
def test_metadata_and_empty_fields(staging: Server, demo_index: ArchiveIndex) -> None:
    positions = [(150.1, 2.2), (10.0, 10.0), (150.3, 2.4)]
    job = start(staging, positions, FORMAT="METADATA")
    final = wait_final(job)
    assert final.phase == "COMPLETED" and [r.id_ for r in final.results] == ["table"]
    table = parse_single_table(io.BytesIO(httpx.get(job + "/results/table").content)).to_table()
    assert len(table) == len(expected_pairs(demo_index, positions)) > 0
    assert set(np.asarray(table["field"])) == {0, 2}
    info = httpx.get(job, headers={"Accept": "application/json"}).json()["jobInfo"]
    assert info["empty_fields"] == "1" and info["empty_count"] == 1
    nothing = start(staging, [(10.0, 10.0), (200.0, -40.0)])
    done = wait_final(nothing)
    assert done.phase == "COMPLETED"
    assert len(parse_single_table(io.BytesIO(httpx.get(nothing + "/results/table").content)).to_table()) == 0


@LOCAL_ONLY
def test_an_uploaded_table_of_10000_positions_ends_with_a_row_per_pair(staging: Server,
                                                                      demo_index: ArchiveIndex) -> None:
    rng = np.random.default_rng(11)
    inside = grid(120)  # the rest fall outside the survey: empty fields, quick to plan
    outside = [(float(ra), float(dec)) for ra, dec in zip(rng.uniform(20, 60, 10_000 - len(inside)),
                                                          rng.uniform(-40, -20, 10_000 - len(inside)), strict=True)]
    positions = inside + outside
    sizes = [0.02 if i % 3 == 0 else None for i in range(len(positions))]  # a size column, partly filled
    csv = "RA,Dec,size\n" + "".join(f"{ra!r},{dec!r},{'' if s is None else s}\n"
                                    for (ra, dec), s in zip(positions, sizes, strict=True))
    response = httpx.post(staging.url + "/async", data={"UPLOAD": "fields,param:fields", "SIZE": str(SIZE),
                                                        "FORMAT": "METADATA", "PHASE": "RUN"},
                          files={"fields": ("fields.csv", csv.encode(), "text/csv")}, timeout=60)
    assert response.status_code == 303, response.text
    job = response.headers["location"]
    assert wait_final(job, timeout=240).phase == "COMPLETED"
    table = parse_single_table(io.BytesIO(httpx.get(job + "/results/table", timeout=60).content)).to_table()
    expected = {(i, r.id) for i, ((ra, dec), s) in enumerate(zip(positions, sizes, strict=True))
                for r in demo_index.lookup(Field(ra, dec, s or SIZE, s or SIZE))}
    assert len(table) == len(expected) > 100
    rows = zip(np.asarray(table["field"]).tolist(), np.asarray(table["parent_id"]).tolist(), strict=True)
    assert set(rows) == expected
