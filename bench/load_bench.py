"""Sustained load on a real server over loopback (numbers, not pass/fail).

Run with ``make bench`` (or alone, ``--duration`` for a short run). For ``--duration``
seconds (60 by default), on one server with the local process pool:

* ``--submitters`` clients (50), each its own owner (``--auth header``), create a job of
  3 to 12 fields (FITS, or FITS and PNG), follow it with ``WAIT`` long-polls until it
  ends, then read its table and download up to three of its results, and start over;
* ``--pollers`` clients (200) each pick a job made so far and send, every 0.2 to 0.8 s,
  one of: the job document, a ``WAIT=5`` long-poll, the table, or a result download.

Every client is an ``httpx.AsyncClient`` with keep-alive, all in this one process (its
CPU time is reported: on a small machine it shares the cores with the server). Reports
the requests served, the errors (the target is zero: any transport error, or a status
other than the one the request must answer), p50/p99 latency per endpoint, and the
server process's RSS sampled from /proc every second.

``--replicas 1,2,4`` runs the same load against 1, then 2, then 4 API processes sharing
one PostgreSQL (started here, `deploy.postgres`), one state directory and one Dask
cluster of ``--workers`` single-threaded workers (the same compute for every count). The
clients are spread over the servers in turn, so that most reads land on a server other
than the one that made the job. It reports each run, then the ratios to 1 process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._server import BenchServer  # noqa: E402
from deploy.postgres import Postgres  # noqa: E402

FINAL = ("COMPLETED", "ERROR", "ABORTED")
SIZE = 0.005
JSON = {"Accept": "application/json"}
#: one TLS context for every client (unused on plain HTTP, but each client would build its own: ~40 ms of CPU)
TLS = httpx.create_ssl_context()


class Stats:
    """Latencies (ms) and errors per endpoint."""

    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.examples: list[str] = []

    async def request(self, client: httpx.AsyncClient, name: str, method: str, url: str, expected: int = 200,
                      **kwargs: object) -> httpx.Response | None:
        """Send one request (the body read whole) and count it; None when it failed."""
        start = time.perf_counter()
        try:
            response = await client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            return self._error(name, f"{name}: {exc!r}")
        if response.status_code != expected:
            return self._error(name, f"{name}: {response.status_code} {response.text[:200]!r}")
        self.latencies[name].append((time.perf_counter() - start) * 1e3)
        return response

    def _error(self, name: str, example: str) -> None:
        self.errors[name] += 1
        if len(self.examples) < 10:
            self.examples.append(example)
        return None


def fields(rng: random.Random) -> str:
    """3 to 12 random positions over the demo survey's central square degree."""
    return "\n".join(f"{150.1 + rng.uniform(-0.45, 0.45)},{2.2 + rng.uniform(-0.45, 0.45)}"
                     for _ in range(rng.randint(3, 12)))


async def submitter(number: int, url: str, until: float, stats: Stats, jobs: list[tuple[str, str]]) -> None:
    """Create a job, follow it to its end, read its table and some results; again, until the time is up."""
    rng, owner = random.Random(number), f"user{number:02d}"
    async with httpx.AsyncClient(base_url=url, headers={"X-Remote-User": owner}, timeout=120, verify=TLS) as client:
        while time.monotonic() < until:
            form = {"POS": fields(rng), "SIZE": str(SIZE), "BAND": "r", "PHASE": "RUN",
                    "FORMAT": rng.choice(["image/fits", "image/fits", "image/fits", "ALL"])}
            created = await stats.request(client, "POST /async", "POST", "/async", 303, data=form)
            if created is None:
                await asyncio.sleep(1.0)
                continue
            job, phase = created.headers["location"], "QUEUED"
            while phase not in FINAL and time.monotonic() < until:
                followed = await stats.request(client, "GET job?WAIT=30", "GET", job, params={"WAIT": "30"},
                                               headers=JSON)
                if followed is None:
                    break
                if phase == "QUEUED":  # started: its table exists, the pollers may read it
                    jobs.append((owner, job))
                phase, results = followed.json()["phase"], followed.json()["results"]
            if phase not in FINAL:
                break
            await stats.request(client, "GET table", "GET", job + "/results/table")
            for result in [r for r in results if r["id"] != "table"][:3]:
                await stats.request(client, "GET result", "GET", result["href"])


async def poller(number: int, url: str, until: float, stats: Stats, jobs: list[tuple[str, str]]) -> None:
    """Every 0.2 to 0.8 s, one request about a random job: document, WAIT long-poll, table or a result."""
    rng = random.Random(1000 + number)
    async with httpx.AsyncClient(base_url=url, timeout=120, verify=TLS) as client:
        await asyncio.sleep(rng.uniform(0, 1))
        hrefs: dict[str, list[str]] = {}
        while time.monotonic() < until:
            if not jobs:
                await asyncio.sleep(0.2)
                continue
            owner, job = rng.choice(jobs)
            headers = {"X-Remote-User": owner}
            kind = rng.choices(["document", "wait", "table", "result"], weights=[35, 20, 25, 20])[0]
            if kind == "result" and hrefs.get(job):
                await stats.request(client, "GET result", "GET", rng.choice(hrefs[job]), headers=headers)
            elif kind == "table":
                await stats.request(client, "GET table", "GET", job + "/results/table", headers=headers)
            else:
                wait = {"WAIT": "5"} if kind == "wait" else {}
                name = "GET job?WAIT=5" if wait else "GET job"
                document = await stats.request(client, name, "GET", job, params=wait, headers={**headers, **JSON})
                if document is not None:
                    hrefs[job] = [r["href"] for r in document.json()["results"] if r["id"] != "table"][:20]
            await asyncio.sleep(rng.uniform(0.2, 0.8))


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def sample_rss(server: BenchServer, until: float, samples: list[tuple[float, float]]) -> None:
    start = time.monotonic()
    while time.monotonic() < until:
        samples.append((time.monotonic() - start, server.rss_mb()))
        await asyncio.sleep(1.0)


async def load(servers: list[BenchServer], args: argparse.Namespace) -> tuple[Stats, list[tuple[float, float]], float]:
    """The load, the clients spread over the servers in turn; the RSS sampled is the first server's."""
    stats, jobs, rss = Stats(), [], []
    start = time.monotonic()
    until = start + args.duration
    await asyncio.gather(sample_rss(servers[0], until, rss),
                         *(submitter(i, servers[i % len(servers)].url, until, stats, jobs)
                           for i in range(args.submitters)),
                         *(poller(i, servers[i % len(servers)].url, until, stats, jobs) for i in range(args.pollers)))
    return stats, rss, time.monotonic() - start


def report(stats: Stats) -> dict[str, tuple[int, float, float]]:
    """Print the table of one run; (requests, p50, p99) by endpoint."""
    print("| endpoint | requests | errors | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|")
    found = {}
    for name in sorted(set(stats.latencies) | set(stats.errors)):
        values = stats.latencies.get(name) or [float("nan")]
        found[name] = (len(stats.latencies.get(name, [])), np.percentile(values, 50), np.percentile(values, 99))
        print(f"| {name} | {found[name][0]} | {stats.errors.get(name, 0)} | {found[name][1]:.1f} | "
              f"{found[name][2]:.1f} |")
    return found


def replicas(args: argparse.Namespace) -> int:
    """The same load against 1, 2, 4... API processes on one PostgreSQL and one Dask cluster."""
    counts = [int(n) for n in args.replicas.split(",")]
    database = Postgres(fast=False).start()
    dask_port = BenchServer.free_port()
    cluster = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port",
                                 str(dask_port), "--no-dashboard"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)]
    cluster += [subprocess.Popen([sys.executable, "-m", "dask", "worker", f"tcp://127.0.0.1:{dask_port}",
                                  "--nthreads", "1", "--no-dashboard"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True) for _ in range(args.workers)]
    runs: dict[int, tuple[float, dict]] = {}
    try:
        for count in counts:
            state = args.scratch / f"replicas-{count}"
            shutil.rmtree(state, ignore_errors=True)
            url = database.create_database(f"load{count}")
            servers = []
            try:
                for _ in range(count):  # one after another: the first migrates the database
                    servers.append(BenchServer(args.archive, state, "--auth", "header", "--database-url", url,
                                               "--executor", f"dask://127.0.0.1:{dask_port}"))
                stats, _, elapsed = asyncio.run(load(servers, args))
            finally:
                for server in servers:
                    server.stop()
                shutil.rmtree(state, ignore_errors=True)
            served = sum(len(v) for v in stats.latencies.values())
            print(f"\n### {count} API process{'es' * (count > 1)}\n\n{served} requests ({served / elapsed:.0f}/s), "
                  f"{sum(stats.errors.values())} errors\n")
            runs[count] = (served / elapsed, report(stats))
            for example in stats.examples:
                print(f"error: {example}")
    finally:
        for process in reversed(cluster):
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(30)
        database.stop()
    base_rate, base = runs[counts[0]]
    print(f"\n### Ratios to {counts[0]} process{'es' * (counts[0] > 1)} (requests/s; p50 and p99 per endpoint)\n")
    print("| processes | requests/s | " + " | ".join(f"{name} p50 / p99" for name in base) + " |")
    print("|---:|---:|" + "---:|" * len(base))
    for count, (rate, found) in runs.items():
        cells = [f"{found[n][1] / base[n][1]:.2f} / {found[n][2] / base[n][2]:.2f}" if n in found else "-"
                 for n in base]
        print(f"| {count} | {rate / base_rate:.2f} | " + " | ".join(cells) + " |")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=REPO / "data" / "demo")
    parser.add_argument("--scratch", type=Path, default=REPO / "bench" / ".scratch")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    parser.add_argument("--submitters", type=int, default=50)
    parser.add_argument("--pollers", type=int, default=200)
    parser.add_argument("--replicas", help="API process counts to compare on PostgreSQL, e.g. 1,2,4")
    args = parser.parse_args()
    if args.replicas:
        return replicas(args)
    state = args.scratch / "load-state"
    shutil.rmtree(state, ignore_errors=True)
    server = BenchServer(args.archive, state, "--workers", str(args.workers), "--auth", "header")
    cpu, server_cpu = resource.getrusage(resource.RUSAGE_SELF), cpu_seconds(server.pid)
    try:
        stats, rss, elapsed = asyncio.run(load([server], args))
        server_cpu = cpu_seconds(server.pid) - server_cpu
    finally:
        server.stop()
        shutil.rmtree(state, ignore_errors=True)
    used = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu = used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime

    served = sum(len(v) for v in stats.latencies.values())
    errors = sum(stats.errors.values())
    print(f"## Sustained load ({args.submitters} submitters, {args.pollers} pollers, {elapsed:.0f} s on loopback, "
          f"{args.workers} workers)\n")
    print(f"{served} requests served ({served / elapsed:.0f}/s), {errors} errors. CPU: the server process used "
          f"{server_cpu / elapsed:.0%} of a core, the clients (one process) {client_cpu / elapsed:.0%}.\n")
    report(stats)
    print("\nServer RSS (the server process; workers not included):\n")
    print("| t (s) | RSS (MB) |")
    print("|---:|---:|")
    step = max(1, len(rss) // 12)
    for t, mb in rss[::step] + ([rss[-1]] if (len(rss) - 1) % step else []):
        print(f"| {t:.0f} | {mb:.0f} |")
    print(f"\npeak {max(mb for _, mb in rss):.0f} MB, start {rss[0][1]:.0f} MB, end {rss[-1][1]:.0f} MB")
    for example in stats.examples:
        print(f"error: {example}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
