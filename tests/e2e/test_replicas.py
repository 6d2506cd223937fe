"""Several servers, one service: API replicas on one PostgreSQL store and one shared state directory.

Two servers (a third joins for one test) with their local pools, a lease of 4 s so that a
takeover is quick to test, and the store read directly where a test must know which server
runs a job (``jobs.runner``) or holds the reaper's lease.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from astropy.io.votable import parse_single_table
from lxml import etree

from storage.notify import asyncpg_dsn
from tests.e2e.conftest import Server, assert_each_pair_once, free_port, submit, wait_final
from tests.e2e.test_staging import grid

LEASE_S = 4.0
HTTP = httpx.Client(timeout=60)
JSON = {"Accept": "application/json"}


class Replicas:
    """Servers sharing one database and one state directory."""

    def __init__(self, root: Path, archive: Path, url: str) -> None:
        self.root, self.archive, self.url = root, archive, url
        self.state_dir = root / "state"
        self.servers: list[Server] = []

    def add(self, *args: str) -> Server:
        server = Server(self.archive, self.state_dir, self.root / f"server{len(self.servers)}.log", "--workers", "1",
                        "--database-url", self.url, *args,
                        env={"SIASYNC_LEASE_S": str(LEASE_S), "SIASYNC_REAPER_INTERVAL_S": "0.2",
                             "SIASYNC_OWNER_ACTIVE_JOBS": "4"})
        self.servers.append(server.start())
        return server

    def query(self, sql: str, *args: object) -> list:
        async def fetch() -> list:
            connection = await asyncpg.connect(asyncpg_dsn(self.url))
            try:
                return [tuple(row) for row in await connection.fetch(sql, *args)]
            finally:
                await connection.close()
        return asyncio.run(fetch())

    def runner(self, job: str) -> Server | None:
        """The server running a job, as the store says (None: nobody)."""
        found = self.query("SELECT runner FROM jobs WHERE id = $1", job.rsplit("/", 1)[-1])
        pid = int(found[0][0].split(":")[1]) if found and found[0][0] else None
        return next((s for s in self.servers if s.process is not None and s.process.pid == pid), None)

    def other(self, server: Server) -> Server:
        return next(s for s in self.servers if s is not server and s.process.poll() is None)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, demo_archive: Path, new_database) -> Iterator[Replicas]:
    group = Replicas(tmp_path_factory.mktemp("replicas"), demo_archive, new_database())
    try:
        group.add()
        group.add()
        yield group
    finally:
        for server in group.servers:
            server.stop()


def at(server: Server, job: str) -> str:
    """The same job's URL on another server."""
    return server.url + "/async/" + job.rsplit("/", 1)[-1]


def products(job: str) -> int:
    return len(etree.fromstring(HTTP.get(job + "/results").content)) - 1  # the table is listed too


def running(replicas: Replicas, fields: int = 300, **params: object) -> tuple[str, list, Server]:
    """A job started through the first server, once it has a few products; its runner."""
    positions = grid(fields)
    job = submit(replicas.servers[0], POS=[f"{ra},{dec}" for ra, dec in positions], SIZE="0.01", BAND="r",
                 PHASE="RUN", **params)
    deadline = time.monotonic() + 60
    while products(job) < 3:
        assert time.monotonic() < deadline, "no products"
        time.sleep(0.05)
    runner = replicas.runner(job)
    assert runner is not None
    return job, positions, runner


def test_any_server_answers_with_the_current_state_and_wakes_at_once(replicas: Replicas, demo_archive: Path) -> None:
    """WAIT and an event stream on B wake within a second of a change made on A; reads on B right after a change
    on A show it; the stream on B ends when the job does, with every result once."""
    a, b = replicas.servers
    positions = grid(40)
    job = submit(a, POS=[f"{ra},{dec}" for ra, dec in positions], SIZE="0.01", BAND="r")
    on_b, woke, streamed, stream_end = at(b, job), {}, [], {}

    def long_poll() -> None:
        woke["phase"] = httpx.get(on_b, params={"WAIT": "30"}, headers=JSON, timeout=60).json()["phase"]
        woke["at"] = time.monotonic()

    def stream() -> None:
        with httpx.stream("GET", on_b + "/events", timeout=120) as events:
            kind = None
            for line in events.iter_lines():
                if line.startswith("event:"):
                    kind = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and kind in ("phase", "result"):
                    streamed.append((time.monotonic(), kind, json.loads(line[5:])))
        stream_end["at"] = time.monotonic()

    readers = [threading.Thread(target=long_poll), threading.Thread(target=stream)]
    for reader in readers:
        reader.start()
    time.sleep(1.5)  # both wait on B now (the stream has sent PENDING)
    assert "at" not in woke and [e[2]["phase"] for e in streamed] == ["PENDING"]
    changed = time.monotonic()
    assert HTTP.post(a.url + "/async/" + job.rsplit("/", 1)[-1] + "/phase", data={"PHASE": "RUN"}).status_code == 303
    readers[0].join(30)
    assert woke["phase"] in ("QUEUED", "EXECUTING") and woke["at"] - changed < 1.0
    while not (phase_events := [t for t, kind, data in streamed if kind == "phase" and data["phase"] != "PENDING"]):
        assert time.monotonic() - changed < 1.0, "the event stream on B missed the phase change"
        time.sleep(0.01)
    assert phase_events[0] - changed < 1.0
    while HTTP.get(job + "/phase").text != "COMPLETED":  # reads on B follow A's registrations
        seen_on_a = products(job)
        assert products(on_b) >= seen_on_a
        document = HTTP.get(on_b, headers=JSON).json()
        assert len(document["results"]) - 1 >= seen_on_a
    final_on_a = HTTP.get(job, headers=JSON).json()
    # the document B had rendered is not served: the same as A's, but for the links to B
    assert json.loads(HTTP.get(on_b, headers=JSON).text.replace(b.url, a.url)) == final_on_a
    ended = time.monotonic()
    readers[1].join(30)
    assert stream_end["at"] - ended < 1.0  # the stream on B ended with the job
    results = [data["id"] for _, kind, data in streamed if kind == "result"]
    assert results == [r["id"] for r in final_on_a["results"] if r["id"] != "table"]
    assert [data["phase"] for _, kind, data in streamed if kind == "phase"][-1] == "COMPLETED"
    assert_each_pair_once(wait_final(on_b), demo_archive, positions, 0.01, bands=["r"])


def test_abort_delete_and_execution_duration_on_any_server_stop_the_work_where_it_runs(replicas: Replicas) -> None:
    for action in ("ABORT", "DELETE"):
        job, _, runner = running(replicas)
        other = replicas.other(runner)
        directory = replicas.state_dir / "results" / job.rsplit("/", 1)[-1]
        sent = time.monotonic()
        if action == "ABORT":
            assert HTTP.post(at(other, job) + "/phase", data={"PHASE": "ABORT"}).status_code == 303
        else:
            assert HTTP.delete(at(other, job)).status_code == 303
        while replicas.query("SELECT runner FROM jobs WHERE id = $1 AND runner IS NOT NULL", job.rsplit("/", 1)[-1]):
            assert time.monotonic() - sent < 2.0, f"{action}: the runner still runs the job"
            time.sleep(0.02)
        if action == "ABORT":
            kept = {r["id"] for r in HTTP.get(job, headers=JSON).json()["results"] if r["id"] != "table"}
            time.sleep(0.5)  # nothing is written or registered after the stop
            assert {p.name for p in directory.iterdir()} == kept
            assert {r["id"] for r in HTTP.get(job, headers=JSON).json()["results"] if r["id"] != "table"} == kept
        else:
            assert not directory.exists() and HTTP.get(job).status_code == 404
    positions = grid(2000)
    job = submit(replicas.servers[1], POS=[f"{ra},{dec}" for ra, dec in positions], SIZE="0.01", BAND="r",
                 PHASE="RUN", EXECUTIONDURATION="1")
    final = wait_final(job)
    assert final.phase == "ABORTED" and "execution duration" in final.errorsummary.message.content
    assert (final.endtime - final.starttime).to_value("s") < 3


def test_owner_limits_hold_across_servers(replicas: Replicas) -> None:
    """Four active jobs per owner (SIASYNC_OWNER_ACTIVE_JOBS): twelve creations at once, through both servers."""
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()

    def create(i: int) -> httpx.Response:
        server = replicas.servers[i % 2]
        return httpx.post(server.url + "/async", data={"POS": "150.1,2.2", "SIZE": "0.01", "START": later,
                                                       "PHASE": "RUN"}, headers={"X-Remote-User": "eve"}, timeout=60)

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(create, range(12)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [303] * 4 + [400] * 8, codes
    assert all(a.text.startswith("UsageError: OWNER_ACTIVE_JOBS: anonymous already has 4 unfinished jobs")
               for a in answers if a.status_code == 400)
    for answer in answers:
        if answer.status_code == 303:
            HTTP.delete(answer.headers["location"])


def test_one_reaper_at_a_time(replicas: Replicas) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    # four: PENDING jobs count among the owner's four unfinished jobs
    jobs = [submit(replicas.servers[i % 2], POS="150.1,2.2", SIZE="0.01", DESTRUCTION=soon) for i in range(4)]
    deadline = time.monotonic() + 10
    while any(HTTP.get(job).status_code != 404 for job in jobs):
        assert time.monotonic() < deadline, "not destroyed"
        time.sleep(0.1)
    holders = replicas.query("SELECT holder FROM leases WHERE name = 'reaper'")
    alive = {s.process.pid for s in replicas.servers if s.process.poll() is None}
    assert len(holders) == 1 and int(holders[0][0].split(":")[1]) in alive


def test_a_killed_server_s_jobs_are_taken_over_within_the_lease(replicas: Replicas, demo_archive: Path) -> None:
    job, positions, runner = running(replicas)
    survivor = replicas.other(runner)
    os.killpg(runner.process.pid, signal.SIGKILL)  # the server, its forkserver and its workers
    runner.process.wait(10)
    killed = time.monotonic()
    while replicas.runner(job) is not survivor:
        assert time.monotonic() - killed < LEASE_S, "not taken over within the lease"
        assert HTTP.get(at(survivor, job) + "/phase").text == "EXECUTING"
        time.sleep(0.05)
    final = wait_final(at(survivor, job), timeout=180)
    assert final.phase == "COMPLETED"
    ids = assert_each_pair_once(final, demo_archive, positions, 0.01, bands=["r"])
    directory = replicas.state_dir / "results" / job.rsplit("/", 1)[-1]
    assert {p.name for p in directory.iterdir()} == set(ids)  # no temporary or orphan file
    runner.start()  # the group stays two servers for the next tests


def test_a_server_starting_never_takes_a_job_whose_lease_is_alive(replicas: Replicas, demo_archive: Path) -> None:
    job, positions, runner = running(replicas, fields=400)
    third = None
    runners: set[str] = set()
    watching = threading.Event()

    def watch() -> None:
        while not watching.is_set():
            runners.add(replicas.query("SELECT phase, runner FROM jobs WHERE id = $1",
                                       job.rsplit("/", 1)[-1])[0])
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        third = Server(replicas.archive, replicas.state_dir, replicas.root / "third.log", "--workers", "1",
                       "--database-url", replicas.url, env={"SIASYNC_LEASE_S": str(LEASE_S)}).start()
        assert len(replicas.query("SELECT id FROM servers")) == 3
        final = wait_final(job, timeout=180)
    finally:
        watching.set()
        watcher.join()
        if third is not None:
            third.stop()
    assert final.phase == "COMPLETED"
    running_phases = {(phase, owner) for phase, owner in runners if phase == "EXECUTING"}
    assert {int(owner.split(":")[1]) for _, owner in running_phases} == {runner.process.pid}
    ids = assert_each_pair_once(final, demo_archive, positions, 0.01, bands=["r"])
    assert {p.name for p in (replicas.state_dir / "results" / job.rsplit("/", 1)[-1]).iterdir()} == set(ids)


def test_fetch_through_a_round_robin_proxy_completes(replicas: Replicas, tmp_path: Path) -> None:
    port = free_port()
    proxy = subprocess.Popen([sys.executable, "-m", "deploy.proxy", str(port), *(s.url for s in replicas.servers)],
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if HTTP.get(f"http://127.0.0.1:{port}/availability").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the proxy did not start"
                time.sleep(0.1)
        positions = grid(30)
        done = subprocess.run([sys.executable, "-m", "siasync", "fetch", f"http://127.0.0.1:{port}", "--size", "0.01",
                               "--band", "r", "--out", str(tmp_path / "out"),
                               *(a for ra, dec in positions for a in ("--pos", f"{ra},{dec}"))],
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
    finally:
        os.killpg(proxy.pid, signal.SIGTERM)
        proxy.wait(20)
    fetched = sorted(p.name for p in (tmp_path / "out").iterdir() if p.name != "table.xml" and p.name[0] != ".")
    table = (tmp_path / "out" / "table.xml").read_text()
    assert fetched and table.count("<TR>") == len(fetched)
    assert sorted(parse_single_table(io.BytesIO(table.encode())).to_table()["result_id"]) == fetched
