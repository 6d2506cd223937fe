"""One snapshot: what the table or an event has shown, the results list and the job document show too.

A 300-field job runs on a real server while clients poll as hard as they can: one reads the
``table`` and then ``/results``, one follows the event stream and reads ``/results`` and the job
document after each ``result`` event, and one polls the job document with ``If-None-Match``.
Every result the table or an event named must be in every list read after it, and a 304 must
only ever answer a poller whose copy is current.
"""

from __future__ import annotations

import io
import json
import threading

import httpx
from astropy.io.votable import parse_single_table
from lxml import etree

from tests.e2e.conftest import LOCAL_ONLY, Server, submit, wait_final
from tests.e2e.test_staging import SIZE, grid

NS = {"uws": "http://www.ivoa.net/xml/UWS/v1.0"}


def listed(client: httpx.Client, job: str) -> set[str]:
    return {r.get("id") for r in etree.fromstring(client.get(job + "/results").content).iterfind("uws:result", NS)}


def documented(client: httpx.Client, job: str) -> set[str]:
    return {r["id"] for r in client.get(job, headers={"Accept": "application/json"}).json()["results"]}


@LOCAL_ONLY
def test_results_and_the_job_document_never_lag_the_table_or_the_events(staging: Server) -> None:
    job = submit(staging, POS=[f"{ra},{dec}" for ra, dec in grid(300)], SIZE=str(SIZE), PHASE="RUN")
    lags: list[str] = []
    checked = {"table": 0, "event": 0, "etag": 0}
    done = threading.Event()

    def follow_events() -> None:
        with httpx.Client(timeout=60) as client, client.stream("GET", job + "/events", timeout=60) as stream:
            event = None
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event == "result":
                    shown = json.loads(line[5:])["id"]
                    for where, ids in (("results", listed(client, job)), ("document", documented(client, job))):
                        if shown not in ids:
                            lags.append(f"event {shown} not in the {where} read after it")
                    checked["event"] += 1

    def poll_conditionally() -> None:
        etag, body = None, None
        with httpx.Client(timeout=60) as client:
            while not done.is_set():
                answer = client.get(job, headers={"If-None-Match": etag} if etag else {})
                if answer.status_code == 304:  # a tag names one document: the same tag again is our copy
                    fresh = client.get(job)
                    if fresh.headers["etag"] == etag and fresh.content != body:
                        lags.append("one ETag for two different documents")
                    checked["etag"] += 1
                else:
                    etag, body = answer.headers["etag"], answer.content

    threads = [threading.Thread(target=follow_events), threading.Thread(target=poll_conditionally)]
    for thread in threads:
        thread.start()
    with httpx.Client(timeout=60) as client:
        while client.get(job + "/phase").text in ("QUEUED", "EXECUTING"):
            table = client.get(job + "/results/table")
            if table.status_code == 404:  # not started yet
                continue
            rows = set(parse_single_table(io.BytesIO(table.content)).to_table()["result_id"])
            missing = rows - listed(client, job)
            if missing:
                lags.append(f"{len(missing)} table rows not in the results read after it")
            checked["table"] += 1
    done.set()
    for thread in threads:
        thread.join(60)
    final = wait_final(job)
    assert final.phase == "COMPLETED"
    assert lags == []
    products = len(final.results) - 1
    # the checks ran while the job did: many table rounds and every result event
    assert checked["table"] >= 5 and checked["event"] == products and checked["etag"] >= 1, (checked, products)
