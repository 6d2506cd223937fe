"""The local recipe (``make replicas``, `deploy.local`) and Dask's faults under it.

Two replicas behind the round-robin proxy, a Dask scheduler and two workers, all on
loopback, started by the recipe itself. While a job runs, the scheduler is SIGKILLed
(its workers exit with it; the recipe starts both again a few seconds later, as a
service manager would): meanwhile ``/availability`` says why no job can run and new jobs
are refused with 503, and once a scheduler answers again the job resumes and completes
with every product exactly once. Each server's share of the cluster follows its size.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from pyvo.io.vosi import parse_availability

from tests.e2e.conftest import assert_each_pair_once, free_port, wait_final
from tests.e2e.test_replicas import products
from tests.e2e.test_staging import grid

HTTP = httpx.Client(timeout=60)


def availability(url: str):
    return parse_availability(io.BytesIO(HTTP.get(url + "/availability").content))


def until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_two_replicas_on_dask_resume_after_the_scheduler_is_lost(tmp_path: Path, demo_archive: Path) -> None:
    root, port = tmp_path / "recipe", free_port()
    recipe = subprocess.Popen([sys.executable, "-m", "deploy.local", "--root", str(root), "--archive",
                               str(demo_archive), "--port", str(port), "--restart-after", "3"],
                              stdout=open(tmp_path / "recipe.log", "wb"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    described: dict = {}
    try:
        until(lambda: (root / "processes.json").exists() or recipe.poll() is not None, 240, "the recipe did not start")
        assert recipe.poll() is None, (tmp_path / "recipe.log").read_text()
        described = json.loads((root / "processes.json").read_text())
        proxy, servers = described["url"], [s["url"] for s in described["servers"]]
        for server in servers:  # two single-threaded workers for two servers: one each
            until(lambda s=server: "1 worker process for this server, one of 2 servers" in " ".join(
                availability(s).notes), 30, "the servers do not share the cluster")
        positions = grid(200)
        created = HTTP.post(proxy + "/async", data={"POS": [f"{ra},{dec}" for ra, dec in positions], "SIZE": "0.01",
                                                    "BAND": "r", "PHASE": "RUN"})
        assert created.status_code == 303, created.text
        job = created.headers["location"]
        assert job.startswith(proxy + "/async/")  # the proxy passes the Host on: links lead back through it
        until(lambda: products(job) >= 3, 120, "no products")
        os.kill(described["scheduler"]["pid"], signal.SIGKILL)
        for server in servers:
            until(lambda s=server: not availability(s).available, 5, "availability did not notice")
            assert any("Dask scheduler" in note for note in availability(server).notes)
            refused = HTTP.post(server + "/async", data={"POS": "150.1,2.2", "SIZE": "0.01", "PHASE": "RUN"})
            assert refused.status_code == 503 and refused.text.startswith("Unavailable: no job can run")
        assert HTTP.get(job + "/phase").text == "EXECUTING"
        final = wait_final(job, timeout=240)
        assert final.phase == "COMPLETED"
        ids = assert_each_pair_once(final, demo_archive, positions, 0.01, bands=["r"])
        assert {p.name for p in (root / "state" / "results" / job.rsplit("/", 1)[-1]).iterdir()} == set(ids)
        for server in servers:
            until(lambda s=server: availability(s).available, 30, "availability did not recover")
        scheduler = json.loads((root / "processes.json").read_text())["scheduler"]["address"]
        third = subprocess.Popen([sys.executable, "-m", "dask", "worker", scheduler, "--nthreads", "2", "--nworkers",
                                  "1", "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)
        try:  # four threads now: two for each server
            until(lambda: "2 worker processes for this server" in " ".join(availability(servers[0]).notes), 60,
                  "the share did not follow the cluster")
        finally:
            os.killpg(third.pid, signal.SIGTERM)
            third.wait(30)
    finally:
        recipe.send_signal(signal.SIGTERM)
        recipe.wait(120)
    described = json.loads((root / "processes.json").read_text())
    pids = [described["proxy"], *(s["pid"] for s in described["servers"]), described["scheduler"]["pid"],
            *described["workers"]]
    until(lambda: not any(alive(pid) for pid in pids), 30, "the recipe left processes behind")
