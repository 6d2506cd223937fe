"""The real server with real clients: pyvo drives jobs, and a restart loses nothing."""

from __future__ import annotations

import io
import signal
import time
from datetime import UTC, datetime, timedelta

import httpx
from astropy.io import fits
from astropy.time import Time
from pyvo.dal import AsyncTAPJob
from pyvo.io.uws import parse_job

from tests.e2e.conftest import (
    BOTH_STORES,
    LOCAL_BOTH_STORES,
    LOCAL_ONLY,
    Server,
    assert_each_pair_once,
    submit,
    wait_final,
)


def create(server: Server, **params: object) -> str:
    """A job on one demo field, with these parameters changed."""
    return submit(server, **{"POS": "150.1,2.2", "SIZE": "0.02", **params})


@LOCAL_ONLY
def test_pyvo_drives_a_job_against_the_real_server(server: Server) -> None:
    job = AsyncTAPJob(create(server, FORMAT="ALL"), delete=False)
    assert job.phase == "PENDING"
    job.execution_duration = 600
    assert job.execution_duration.to_value("s") == 600
    new = Time((datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0))
    job.destruction = new
    assert abs((job.destruction - new).sec) < 1
    job.run()
    job.wait(timeout=60)
    assert job.phase == "COMPLETED"
    document = parse_job(io.BytesIO(httpx.get(job.url).content))
    assert document.results
    fits_results = [r for r in document.results if r.href.endswith(".fits")]
    assert document.results[0].id_ == "table"
    with fits.open(io.BytesIO(httpx.get(fits_results[0].href).content)) as hdul:
        hdul.verify("exception")
        assert hdul[0].header["PARENTID"] in fits_results[0].href
    url = job.url
    job.delete()
    assert httpx.get(url).status_code == 404


@LOCAL_BOTH_STORES
def test_a_restart_keeps_every_job_phase_parameter_and_result(server: Server) -> None:
    done = create(server, FORMAT="ALL", RUNID="kept", PHASE="RUN")
    wait_final(done)
    pending = create(server, POS="150.2,2.3")
    aborted = create(server)
    httpx.post(aborted + "/phase", data={"PHASE": "ABORT"})
    before = {url: httpx.get(url).content for url in (done, pending, aborted)}
    files = {r: httpx.get(r).content for r in
             [res.href for res in parse_job(io.BytesIO(before[done])).results]}
    assert files
    server.stop(signal.SIGTERM)
    server.start()
    for url, document in before.items():
        assert httpx.get(url).content == document
    for href, content in files.items():
        assert httpx.get(href).content == content
    httpx.post(pending + "/phase", data={"PHASE": "RUN"})
    assert wait_final(pending).phase == "COMPLETED"


def test_a_queued_job_survives_a_kill_and_runs_after_restart(server: Server) -> None:
    later = (datetime.now(UTC) + timedelta(seconds=4)).isoformat()
    job = create(server, START=later, PHASE="RUN")
    assert httpx.get(job + "/phase").text == "QUEUED"
    server.stop(signal.SIGKILL)
    server.start()
    final = wait_final(job)
    assert final.phase == "COMPLETED" and final.results


@BOTH_STORES
def test_an_executing_job_resumes_after_sigkill_with_each_product_once(server: Server, demo_archive) -> None:
    positions = [(150.1 + 0.004 * (i % 25), 2.2 + 0.004 * (i // 25)) for i in range(150)]
    job = create(server, POS=[f"{ra},{dec}" for ra, dec in positions], SIZE="0.03", PHASE="RUN")
    deadline = time.monotonic() + 60
    while len(parse_job(io.BytesIO(httpx.get(job).content)).results) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # the table is listed first; wait for a product
    assert httpx.get(job + "/phase").text == "EXECUTING"
    server.stop(signal.SIGKILL)
    server.start()
    final = wait_final(job, timeout=120)
    assert final.phase == "COMPLETED"
    ids = assert_each_pair_once(final, demo_archive, positions, 0.03)
    directory = server.state_dir / "results" / job.rsplit("/", 1)[-1]
    assert {p.name for p in directory.iterdir()} == set(ids)  # no temporary or orphan file is left
    for path in directory.iterdir():  # every file opens
        with fits.open(path) as hdul:
            hdul.verify("exception")
