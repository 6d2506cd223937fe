"""Scheduling on a real server: small jobs overtake bulk jobs, deferred starts, and the quote."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
from lxml import etree

from tests.e2e.conftest import LOCAL_ONLY, Server, submit, wait_final


def fields(n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    return "\n".join(f"{150.1 + rng.uniform(-0.5, 0.5):.6f},{2.2 + rng.uniform(-0.5, 0.5):.6f}" for _ in range(n))


def info(job: str) -> dict:
    return httpx.get(job, headers={"Accept": "application/json"}, timeout=30).json()


def registered(job: str) -> int:
    """Products listed by /results right now (the list is exact; the job document's progress may lag)."""
    return len(etree.fromstring(httpx.get(job + "/results", timeout=30).content)) - 1  # the table is listed too


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_small_job_overtakes_a_bulk_job_which_keeps_progressing(staging: Server) -> None:
    bulk = submit(staging, POS=fields(3000, 1), SIZE="0.01", COLLECTION="DEMO-WIDE", PHASE="RUN")
    deadline = time.monotonic() + 60
    while registered(bulk) < 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    before = registered(bulk)
    small = submit(staging, POS=fields(10, 2), SIZE="0.01", COLLECTION="DEMO-WIDE", PHASE="RUN")
    assert wait_final(small).phase == "COMPLETED"
    during = registered(bulk)
    assert httpx.get(bulk + "/phase").text == "EXECUTING"  # the small job did not wait for the bulk one
    assert during > before  # and the bulk job was not starved meanwhile
    small_doc = info(small)
    assert small_doc["jobInfo"]["products"] == small_doc["jobInfo"]["cost"] > 0
    httpx.delete(bulk)


@LOCAL_ONLY
def test_a_deferred_start_keeps_the_job_queued_until_then(staging: Server) -> None:
    start = datetime.now(UTC) + timedelta(seconds=3)
    job = submit(staging, POS="150.1,2.2", SIZE="0.01", START=start.isoformat(), PHASE="RUN")
    doc = info(job)
    assert doc["phase"] == "QUEUED" and instant(doc["jobInfo"]["start"]) == start.replace(microsecond=(
        start.microsecond // 1000) * 1000)
    final = wait_final(job)
    assert final.phase == "COMPLETED"
    assert final.starttime.to_datetime(timezone=UTC) >= start - timedelta(milliseconds=1)


@LOCAL_ONLY
def test_the_quote_is_empty_before_any_measurement_then_predicts_completion(staging: Server) -> None:
    # the staging server has run other jobs in this module; a fresh one has measured nothing
    fresh = Server(staging.archive, staging.state_dir.parent / "fresh-state",
                   staging.log_path.parent / "fresh.log", *staging.args).start()
    try:
        pending = submit(fresh, POS="150.1,2.2", SIZE="0.01")
        assert info(pending)["quote"] is None
        # the measurement comes from pairs of the kind the quoted job makes: those of other collections cost
        # more, and so would the first reads of parents the quoted job's fields share. Enough of them that the
        # first open of each parent by each worker (about 10 ms, against under 2 ms a pair since rows come
        # from the index) does not weigh on the rate
        assert wait_final(submit(fresh, POS=fields(400, 3), SIZE="0.01", COLLECTION="DEMO-WIDE", BAND="r",
                                 PHASE="RUN")).phase == "COMPLETED"
        job = submit(fresh, POS=fields(1000, 4), SIZE="0.01", COLLECTION="DEMO-WIDE", BAND="r", PHASE="RUN")
        deadline = time.monotonic() + 30
        while (doc := info(job))["quote"] is None and time.monotonic() < deadline:
            time.sleep(0.05)
        final = wait_final(job, timeout=120)
        assert final.phase == "COMPLETED"
        created = instant(doc["creationTime"])
        predicted = (instant(doc["quote"]) - created).total_seconds()
        actual = (final.endtime.to_datetime(timezone=UTC) - created).total_seconds()
        assert 0.5 <= actual / predicted <= 2.0, (predicted, actual)
    finally:
        fresh.stop()
