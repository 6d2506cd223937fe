"""No request starves the others: the bombs of issue 20 run against a real server while a small job
is made, followed and downloaded, and its latency stays within a ratio of its latency alone, measured in the same run.

The bombs: parameter bombs (a 12 MB body of 4M unknown parameters, refused by their count, and 101,000 unknown
parameters, at the limit, parsed), upload shape bombs (a VOTable of 40,000 FIELDs, refused by its shape, and one of
1,000 FIELDs and 200 rows, at the limit, parsed by astropy), each sent again as soon as it is answered; and the job
list and job documents of jobs of 20,000 fields, asked 20 times a second each. They are another owner's, sent from
another (niced) process. Their CPU work runs in the bounded pool, at a lower priority than the event loop and apart
from file I/O; the small job's requests (creation, WAIT, its download, ``/availability``) never queue behind it.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Server, serving

#: the small job's latency beside the bombs, at most this many times its latency alone (medians of rounds taken in
#: turns). Measured on 2 shared cores: 13-20 times at a load of 3-5, up to 47 under a whole test suite's load: every
#: request of the small job waits for the GIL behind the pool's threads (longer when the machine is loaded, as the
#: niced threads holding it wait for a core), and its cutout's worker shares the cores with them. A blocked loop
#: misses it by far (the issue's tiny request waited 13.6 s, 300 times), and so did the small job's estimate queued
#: in the pool behind the bombs (90 times)
RATIO = 60.0
ROUNDS = 6
BIG_FIELDS = 20_000


SMALL = {"Authorization": "Bearer tok-small"}
BOMBER = {"Authorization": "Bearer tok-bomber"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, demo_archive: Path) -> Iterator[Server]:
    """The bombs are another owner's: their jobs fill their owner's quotas, not the small job's."""
    root = tmp_path_factory.mktemp("bombs")
    (root / "tokens").write_text("tok-small small\ntok-bomber bomber\n")
    with serving(root, demo_archive, "--workers", "1", "--auth", "token", "--tokens-file", str(root / "tokens")) as srv:
        yield srv


def small_job(client: httpx.Client, url: str) -> float:
    """Seconds to create a one-field job, wait for it to complete, download its cutout and ask /availability."""
    start = time.perf_counter()
    created = client.post(f"{url}/async", data={"POS": "150.1,2.2", "SIZE": "0.01", "COLLECTION": "DEMO-WIDE",
                                                "BAND": "r", "PHASE": "RUN"})
    assert created.status_code == 303, created.text
    job = created.headers["location"]
    for _ in range(60):
        phase = client.get(job + "/phase").text
        if phase == "COMPLETED":
            break
        client.get(job, params={"WAIT": "10", "PHASE": phase})
    assert phase == "COMPLETED"
    results = client.get(job, headers={"Accept": "application/json"}).json()["results"]
    product = next(r for r in results if r["id"] != "table")
    assert len(client.get(product["href"]).content) == product["size"]
    assert client.get(f"{url}/availability").status_code == 200
    elapsed = time.perf_counter() - start
    client.delete(job)
    return elapsed


def vot_fields(n: int, rows: int) -> bytes:
    fields = "".join(f'<FIELD name="c{i}" datatype="double"/>' for i in range(n))
    row = "<TR>" + "<TD>150.1</TD><TD>2.2</TD>" + "<TD>1</TD>" * (n - 2) + "</TR>"
    return (f'<?xml version="1.0"?><VOTABLE version="1.4"><RESOURCE><TABLE>'
            f'<FIELD name="ra" datatype="double"/><FIELD name="dec" datatype="double"/>{fields}'
            f'<DATA><TABLEDATA>{row * rows}</TABLEDATA></DATA></TABLE></RESOURCE></VOTABLE>').encode()


def bombs(url: str, big_jobs: list[str]) -> list[tuple[Callable[[httpx.Client], httpx.Response], float]]:
    """Each bomb: how to send it, and the pause after each answer."""
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    counted = b"POS=150.1,2.2&SIZE=0.01&" + b"x=&" * 4_000_000  # 12 MB: refused by its count
    at_limit = b"POS=150.1,2.2&SIZE=0.01&" + b"&".join(b"x%d=" % i for i in range(100_998))
    shaped = vot_fields(40_000, 1)  # refused by its shape, before astropy
    parsed = vot_fields(1_000 - 2, 200)  # at the limit of columns: astropy parses it

    def upload(data: bytes) -> Callable[[httpx.Client], httpx.Response]:
        return lambda c: c.post(f"{url}/async", data={"SIZE": "0.01"},
                                files={"UPLOAD": ("t.xml", data, "application/x-votable+xml")})

    paced = 0.05  # the job list and documents are cheap now: a client asking 20 times a second, not a flood
    return [(lambda c: c.post(f"{url}/async", content=counted, headers=form), 0.0),
            (lambda c: c.post(f"{url}/async", content=at_limit, headers=form), 0.0),
            (upload(shaped), 0.0), (upload(parsed), 0.0),
            (lambda c: c.get(f"{url}/async", headers={"Accept": "application/json"}), paced),
            (lambda c: c.get(f"{url}/async"), paced),
            *((lambda c, j=j: c.get(j), paced) for j in big_jobs),
            (lambda c: c.get(big_jobs[0] + "/parameters"), paced)]


def test_a_small_job_keeps_its_latency_beside_every_bomb(server: Server) -> None:
    with httpx.Client(timeout=120, follow_redirects=False, headers=SMALL) as client:
        big_jobs = []
        for i in range(3):
            pos = "\n".join(f"{150.0 + (k % 200) * 0.005:.4f},{2.0 + (k // 200) * 0.005 + i * 1e-4:.4f}"
                            for k in range(BIG_FIELDS))
            made = client.post(f"{server.url}/async", data={"POS": pos, "SIZE": "0.01"}, headers=BOMBER)
            assert made.status_code == 303, made.text
            big_jobs.append(made.headers["location"])
        small_job(client, server.url)  # warm: the worker's first cutout opens its parent

        context = multiprocessing.get_context("spawn")
        go, stop, busy, report = context.Event(), context.Event(), context.Value("i", 0), context.Queue()
        # from another process (niced, as a client on another machine would be): its threads never take the GIL
        # from the small job's client
        bombers = context.Process(target=bomb_all, args=(server.url, big_jobs, go, stop, busy, report))
        bombers.start()
        alone, beside = [], []
        try:
            assert report.get(timeout=60) == "started"
            for _ in range(ROUNDS):  # in turns, so that the machine's other load weighs on both alike
                go.clear()
                while busy.value:  # every bomb answered
                    time.sleep(0.01)
                alone.append(small_job(client, server.url))
                go.set()
                time.sleep(0.5)  # every bomb under way
                beside.append(small_job(client, server.url))
        finally:
            stop.set()
            go.set()
            answered, problems = report.get(timeout=180)
            bombers.join(30)
    assert not problems, problems[:5]
    assert len(answered) >= 10 and {400, 413} & set(answered) and 200 in set(answered)
    ratio = statistics.median(beside) / statistics.median(alone)
    assert ratio <= RATIO, f"the small job took {beside} s beside the bombs, {alone} s alone"


def bomb_all(url: str, big_jobs: list[str], go: Any, stop: Any, busy: Any, report: Any) -> None:
    """Send every bomb, each from a thread of its own, while ``go`` is set, until ``stop``; ``busy``: the bombs
    unanswered. Report the statuses and any failure (a dropped connection, or a 5xx other than 503, which the bounded
    pool answers when full)."""
    os.nice(10)
    answered, problems = [], []

    def bomb(send: Callable[[httpx.Client], httpx.Response], pause: float) -> None:
        with httpx.Client(timeout=120, headers=BOMBER) as own:
            while not stop.wait(pause):
                if not go.wait(0.1):
                    continue
                with busy.get_lock():
                    busy.value += 1
                try:
                    response = send(own)
                except httpx.TransportError as exc:
                    problems.append(repr(exc))
                    return
                finally:
                    with busy.get_lock():
                        busy.value -= 1
                answered.append(response.status_code)
                if response.status_code >= 500 and response.status_code != 503:
                    problems.append(f"{response.status_code}: {response.text[:300]}")

    threads = [threading.Thread(target=bomb, args=sent) for sent in bombs(url, big_jobs)]
    for thread in threads:
        thread.start()
    report.put("started")
    for thread in threads:
        thread.join()
    report.put((answered, problems))
