"""Destroy races on one server: DELETE at random moments while jobs run, the destruction time passing
mid-job, and ABORT and DELETE sent at the same instant.

Every trial job has a watcher that reads it over and over (the job, its phase, its table,
a result it has seen) until the job answers 404, and an event stream. Afterwards the job
must answer 404 everywhere, have no file on disk, and have shown a possible history: the
phase never goes back (EXECUTING after ABORTED), a job never has two final phases
(COMPLETED after ABORTED), a destroyed job never reappears, and nothing answers 5xx.
Trials run a few at a time next to long "bystander" jobs, which must complete with each
(field, image) pair once and their files intact. Seeds are printed, for replays.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Server, assert_each_pair_once, serving, submit, wait_final
from tests.e2e.test_staging import grid

#: the order of phases; a job's observed phases may only move up it, and a final phase is the last
RANK = {"PENDING": 0, "QUEUED": 1, "EXECUTING": 2, "COMPLETED": 3, "ABORTED": 3, "ERROR": 3}
GONE = "(404)"
#: one keep-alive client shared by the trials' threads: a fresh httpx.get builds an SSL context each time,
#: whose cost (tens of ms of CPU) would otherwise dominate this module
HTTP = httpx.Client(timeout=60)
CHILDREN = ("", "/phase", "/results", "/results/table", "/events", "/parameters", "/error", "/destruction")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def racing(tmp_path_factory: pytest.TempPathFactory, demo_archive: Path,
           request: pytest.FixtureRequest) -> Iterator[Server]:
    """One server for every trial, on each store: two local workers, and a reaper that sweeps ten times a second."""
    store = () if request.param == "sqlite" else ("--database-url", request.getfixturevalue("new_database")())
    with serving(tmp_path_factory.mktemp("races"), demo_archive, "--workers", "2", *store,
                 env={"SIASYNC_REAPER_INTERVAL_S": "0.1"}) as srv:
        yield srv


def seeded() -> random.Random:
    seed = int(os.environ.get("SIASYNC_TEST_SEED", time.time_ns() % 2**32))
    print(f"seed {seed}")
    return random.Random(seed)


class Watcher:
    """Reads a job until it is gone: its phases in order, every status code, the results it saw.

    Three readers: a poller, an event stream and a WAIT long-poll; the last two must learn
    that the job is gone at once, not when their keep-alive or WAIT runs out.
    """

    def __init__(self, job: str) -> None:
        self.job, self.phases, self.streamed, self.statuses, self.seen = job, [], [], [], set()
        self.ended: dict[str, float] = {}
        self.failures: list[str] = []
        self._client = httpx.Client(timeout=60)
        self._threads = [threading.Thread(target=self._guarded, args=(f,)) for f in (self._poll, self._stream,
                                                                                       self._long_poll)]
        for thread in self._threads:
            thread.start()

    def _guarded(self, reader) -> None:
        try:
            reader()
        except Exception as exc:  # a transport error (a connection cut mid-answer) fails the trial
            self.failures.append(f"{reader.__name__}: {exc!r}")

    def _get(self, url: str, **kwargs: object) -> httpx.Response:
        response = self._client.get(url, **kwargs)
        self.statuses.append((response.status_code, url))
        return response

    def _poll(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            job = self._get(self.job, headers={"Accept": "application/json"})
            if job.status_code == 404:
                self.phases.append(GONE)
                break
            document = job.json()
            self.phases.append(document["phase"])
            self.seen.update(r["href"] for r in document["results"] if r["id"] != "table")
            for href in sorted(self.seen)[:1]:
                self._get(href)
            if document["phase"] != "PENDING":
                self._get(self.job + "/results/table")
            time.sleep(0.3)
        # once gone, gone for good
        for _ in range(3):
            self.phases.append(GONE if self._get(self.job).status_code == 404 else "(back)")

    def _stream(self) -> None:
        """The phase events of the job's stream; it ends with DESTROYED, or once the job is final."""
        with self._client.stream("GET", self.job + "/events", timeout=60) as stream:
            self.statuses.append((stream.status_code, self.job + "/events"))
            if stream.status_code == 404:
                self.streamed.append(GONE)
                return
            event = None
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event == "phase":
                    phase = json.loads(line[5:])["phase"]
                    self.streamed.append(GONE if phase == "DESTROYED" else phase)
        self.ended["stream"] = time.monotonic()

    def _long_poll(self) -> None:
        while self._get(self.job, params={"WAIT": "30"}).status_code != 404:
            pass
        self.ended["WAIT"] = time.monotonic()

    def finish(self, gone_at: float) -> None:
        """Check what was seen; ``gone_at``: when the job was first seen gone."""
        for thread in self._threads:
            thread.join(90)
        self._client.close()
        assert self.failures == []
        for reader, ended in self.ended.items():  # woken by the destroy: not 15 s (keep-alive) or 30 s later
            assert ended - gone_at < 5, f"{reader} ended {ended - gone_at:.1f} s after the job was gone"
        assert [s for s in self.statuses if s[0] >= 500] == []
        assert self.phases[-1] == GONE, self.phases
        assert_possible(self.phases)
        assert_possible(self.streamed)


def assert_possible(phases: list[str]) -> None:
    """A phase history a job can have: never back down the order, one final phase at most, gone for good."""
    assert phases, "no phase seen"
    alive = [p for p in phases if p != GONE]
    assert phases[len(alive):] == [GONE] * (len(phases) - len(alive)), phases  # no return from 404
    ranks = [RANK[p] for p in alive]
    assert ranks == sorted(ranks), phases
    assert len({p for p in alive if RANK[p] == 3}) <= 1, phases


def assert_destroyed(server: Server, job: str, seen: set[str]) -> None:
    """404 for the job and every child, the results it had included; no file of it on disk."""
    for child in CHILDREN:
        assert HTTP.get(job + child, timeout=30).status_code == 404, child
    for href in sorted(seen)[:3] or [job + "/results/00000.none.fits"]:
        assert HTTP.get(href, timeout=30).status_code == 404
    assert not (server.state_dir / "results" / job.rsplit("/", 1)[-1]).exists()


def trial_job(server: Server, rng: random.Random, **params: object) -> str:
    """A running job of 20 to 80 fields in random places over the survey: 25 to 110 products."""
    fields = rng.sample(grid(400), rng.randint(20, 80))
    return submit(server, POS=[f"{ra},{dec}" for ra, dec in fields], SIZE="0.02", BAND="r", PHASE="RUN",
                  **params)


def destroy_trial(server: Server, seed: int, how: str) -> str:
    """Destroy a job at a random moment, by DELETE, ACTION=DELETE, or a destruction time; the phase it was in."""
    rng = random.Random(seed)
    if how == "DESTRUCTION":  # at creation: a moment from now
        soon = datetime.now(UTC) + timedelta(seconds=rng.uniform(1.0, 2.0))
        job = trial_job(server, rng, DESTRUCTION=soon.isoformat())
    else:
        job = trial_job(server, rng)
    watcher = Watcher(job)
    time.sleep(rng.uniform(0, 0.5))
    answer = HTTP.get(job + "/phase")
    phase = answer.text if answer.status_code == 200 else GONE
    if how == "DELETE":
        assert HTTP.delete(job, timeout=60).status_code == 303
    elif how == "ACTION=DELETE":
        assert HTTP.post(job, data={"ACTION": "DELETE"}, timeout=60).status_code == 303
    elif how == "destruction":  # changed while the job runs, to a moment from now
        soon = datetime.now(UTC) + timedelta(seconds=rng.uniform(0.8, 1.5))
        assert HTTP.post(job + "/destruction", data={"DESTRUCTION": soon.isoformat()}).status_code in (303, 404)
    deadline = time.monotonic() + 10  # the reaper sweeps every 0.1 s
    while HTTP.get(job).status_code != 404:
        assert time.monotonic() < deadline, f"{job} not destroyed"
        time.sleep(0.05)
    gone_at = time.monotonic()
    assert_destroyed(server, job, watcher.seen)
    watcher.finish(gone_at)
    return phase


def bystander(server: Server, fields: int) -> tuple[str, list[tuple[float, float]]]:
    positions = grid(fields)
    return submit(server, POS=[f"{ra},{dec}" for ra, dec in positions], SIZE="0.01", BAND="r",
                  PHASE="RUN"), positions


def assert_untouched(server: Server, archive: Path, job: str, positions: list[tuple[float, float]]) -> None:
    """A bystander completed with one product per pair and every file of it present."""
    final = wait_final(job, timeout=180)
    assert final.phase == "COMPLETED"
    ids = assert_each_pair_once(final, archive, positions, 0.01, bands=["r"])
    directory = server.state_dir / "results" / job.rsplit("/", 1)[-1]
    assert sorted(p.name for p in directory.iterdir()) == sorted(ids)
    assert HTTP.get(job + "/results/table", timeout=60).text.count("<TR>") == len(ids)


@pytest.mark.parametrize("trials", [50, pytest.param(300, marks=pytest.mark.soak)])
def test_destroy_at_random_moments_leaves_nothing_and_spares_other_jobs(racing: Server, demo_archive: Path,
                                                                        trials: int) -> None:
    rng = seeded()
    ways = ["DELETE", "DELETE", "DELETE", "ACTION=DELETE", "DESTRUCTION", "destruction"]
    with ThreadPoolExecutor(5) as pool:
        running = [pool.submit(destroy_trial, racing, rng.getrandbits(32), ways[i % len(ways)])
                   for i in range(trials)]
        bystanders = [bystander(racing, 200)]
        while not all(f.done() for f in running):  # bystanders running among the destroys, one after another
            if len(bystanders) < 3 and HTTP.get(bystanders[-1][0] + "/phase").text not in ("QUEUED", "EXECUTING"):
                bystanders.append(bystander(racing, 200))
            time.sleep(0.1)
        phases = [f.result() for f in running]
    print({p: phases.count(p) for p in set(phases)}, f"{len(bystanders)} bystanders")
    assert phases.count("EXECUTING") >= trials // 2  # most destroys hit a running job
    for job, positions in bystanders:
        assert_untouched(racing, demo_archive, job, positions)
    remaining = {p.name for p in (racing.state_dir / "results").iterdir()}
    assert remaining == {job.rsplit("/", 1)[-1] for job, _ in bystanders}  # nothing of any destroyed job


def abort_and_delete(server: Server, seed: int) -> tuple[int, int]:
    """ABORT and DELETE at the same instant, at a random moment; their status codes."""
    rng = random.Random(seed)
    job = trial_job(server, rng)
    watcher = Watcher(job)
    time.sleep(rng.uniform(0, 0.5))
    together = threading.Barrier(2)

    def send(request: str) -> httpx.Response:
        with httpx.Client(timeout=60) as client:
            together.wait()
            if request == "ABORT":
                return client.post(job + "/phase", data={"PHASE": "ABORT"})
            return client.delete(job)

    with ThreadPoolExecutor(2) as pair:
        aborted, deleted = pair.map(send, ["ABORT", "DELETE"])
    assert deleted.status_code == 303
    # aborted first, or gone, or already aborted by the DELETE or finished: never "cannot abort" a running job
    assert aborted.status_code in (303, 404) or re.search("in phase (ABORTED|COMPLETED)$", aborted.text), aborted.text
    gone_at = time.monotonic()
    assert_destroyed(server, job, watcher.seen)
    watcher.finish(gone_at)
    return aborted.status_code, deleted.status_code


@pytest.mark.parametrize("trials", [12, pytest.param(200, marks=pytest.mark.soak)])
def test_abort_and_delete_together_never_fail_or_rewrite_history(racing: Server, trials: int) -> None:
    rng = seeded()
    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda seed: abort_and_delete(racing, seed), [rng.getrandbits(32)
                                                                            for _ in range(trials)]))
    print({c: codes.count(c) for c in set(codes)})
