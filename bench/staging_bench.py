"""Staging-engine benchmarks on a real server (numbers, not pass/fail).

Run with ``make bench``. Every comparison is against a baseline in the same run:

* time to first result of a 10-field and a 10,000-field job (medians of 7, ratio);
* reading a 100,000-row position upload (CSV and VOTable), and a POST creating a job from it;
* batch sizes: raw pool throughput with 1, 4, 8 and 16 pairs per task;
* end-to-end products per second through the service for the 10,000-field job, against
  the raw engine on the same kind of pool, the same pairs and the same number of workers;
* peak server RSS during that job, and the table GET time at its end;
* p50/p99 of ``GET /async/{job}`` from 100 pollers (each every 0.5 s, so 200 requests/s)
  while a second bulk job keeps both cores busy: on a small job, and on the bulk job itself.
  The pollers run in their own process (`bench/_poller.py`), on bare asyncio streams;
* the time from POST to COMPLETED of 10-field jobs behind a running bulk job, with the fair
  dispatcher and with ``SIASYNC_SCHEDULING=fifo`` (batches in arrival order);
* products per second of the same job on a Dask LocalCluster and on the local pool.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import numpy as np
from astropy.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._server import BenchServer  # noqa: E402
from cutout.index import ArchiveIndex  # noqa: E402
from cutout.sky import Field  # noqa: E402
from siasync.staging.pool import LocalPool  # noqa: E402
from siasync.staging.scheduler import BATCH_PAIRS  # noqa: E402
from siasync.staging.worker import BatchTask, PairTask  # noqa: E402
from siasync.uws.uploads import CSV, VOTABLE, Upload, read_fields  # noqa: E402
from storage.files import ResultFiles  # noqa: E402

#: one keep-alive client, as a real client would use: a fresh ``httpx.post`` builds an SSL
#: context each time (tens of ms), which would be measured as if it were the service's
HTTP = httpx.Client(timeout=120)

SIZE = 0.01
#: time-to-first trials per job size, interleaved; the machine is shared, so the median of several
TRIALS = 7
BULK = {"COLLECTION": "DEMO-WIDE", "BAND": "r", "SIZE": str(SIZE)}


def positions(n: int, seed: int) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    return [(float(150.1 + rng.uniform(-0.5, 0.5)), float(2.2 + rng.uniform(-0.5, 0.5))) for _ in range(n)]


def form(fields: list[tuple[float, float]]) -> bytes:
    """The encoded body that creates and runs a job on these fields (made before any clock starts)."""
    return urlencode({"POS": "\n".join(f"{ra},{dec}" for ra, dec in fields), "PHASE": "RUN", **BULK}).encode()


def post(server: BenchServer, fields: list[tuple[float, float]] | bytes) -> str:
    body = fields if isinstance(fields, bytes) else form(fields)
    response = HTTP.post(server.url + "/async", content=body, follow_redirects=False,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    if response.status_code != 303:
        raise RuntimeError(response.text)
    return response.headers["location"]


def first_result_seconds(server: BenchServer, fields: list[tuple[float, float]]) -> tuple[float, str]:
    """Seconds from sending the POST to the first result event on the job's stream."""
    body = form(fields)
    start = time.perf_counter()
    job = post(server, body)
    with HTTP.stream("GET", job + "/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("event: result"):
                return time.perf_counter() - start, job
    raise RuntimeError("no result")


def upload_seconds(server: BenchServer, rows: int) -> dict[str, float]:
    """Seconds to read a ``rows``-row table of positions (CSV and VOTable) and to create a job from one."""
    rng = np.random.default_rng(9)
    table = Table({"ra": rng.uniform(0, 360, rows), "dec": rng.uniform(-90, 90, rows)})
    votable, csv = io.BytesIO(), io.StringIO()
    table.write(votable, format="votable")
    table.write(csv, format="ascii.csv")
    seconds = {}
    for kind, mime, data in (("csv", CSV, csv.getvalue().encode()), ("votable", VOTABLE, votable.getvalue())):
        start = time.perf_counter()
        assert len(read_fields(Upload("t", mime, data), 1.0, rows).positions) == rows
        seconds[kind] = time.perf_counter() - start
    start = time.perf_counter()
    response = HTTP.post(server.url + "/async", data={"UPLOAD": "t,param:t", "SIZE": str(SIZE)},
                         files={"t": ("t.csv", csv.getvalue().encode(), "text/csv")})
    seconds["post"] = time.perf_counter() - start
    assert response.status_code == 303, response.text
    destroy(response.headers["location"])
    return seconds


def destroy(job: str) -> None:
    if HTTP.delete(job, timeout=30).status_code != 303:
        raise RuntimeError(f"DELETE {job} failed")


def small_latencies(server: BenchServer, bulk_job: str, trials: int = 3) -> list[float]:
    """Seconds from POST to COMPLETED of 10-field jobs, one after another, behind ``bulk_job``."""
    while info(bulk_job)["jobInfo"].get("products", 0) < 50:
        time.sleep(0.1)
    seconds = []
    for trial in range(trials):
        start = time.perf_counter()
        job = post(server, positions(10, seed=100 + trial))
        while HTTP.get(job + "/phase", timeout=30).text in ("QUEUED", "EXECUTING"):
            HTTP.get(job, params={"WAIT": "30"}, timeout=60)  # returns at the next phase change
        seconds.append(time.perf_counter() - start)
        assert info(bulk_job)["phase"] == "EXECUTING", "the bulk job ended first: make it bigger"
    return seconds


def job_rate(server: BenchServer, fields: list[tuple[float, float]]) -> float:
    """Products per second of one job from its POST to its completion."""
    start = time.perf_counter()
    job = post(server, fields)
    end = wait_done(job, server, [])
    return info(job)["jobInfo"]["products"] / (end - start)


def info(job: str) -> dict:
    return HTTP.get(job, headers={"Accept": "application/json"}, timeout=30).json()


def wait_done(job: str, server: BenchServer, rss: list[float]) -> float:
    while (body := info(job))["phase"] in ("QUEUED", "EXECUTING"):
        rss.append(server.rss_mb())
        time.sleep(0.5)
    assert body["phase"] == "COMPLETED", body["phase"]
    return time.perf_counter()


def poll(server: BenchServer, job: str, clients: int = 100, seconds: float = 10.0,
         conditional: bool = False, deflate: bool = False) -> dict:
    """GET job from ``clients`` pollers in their own process: latencies (ms), failures and 304 answers;
    ``conditional``: each poller sends the ETag of its last full answer in If-None-Match; ``deflate``: each
    accepts ``gzip, deflate`` as HTTP libraries do (otherwise only ``identity``)."""
    out = subprocess.run([sys.executable, str(REPO / "bench" / "_poller.py"), "127.0.0.1", str(server.port),
                          job.removeprefix(server.url), str(clients), str(seconds),
                          *(["--conditional"] if conditional else []), *(["--deflate"] if deflate else [])],
                         capture_output=True, text=True, check=True, timeout=seconds + 120)
    return json.loads(out.stdout)


async def raw_throughput(index: ArchiveIndex, fields: list[tuple[float, float]], scratch: Path,
                         workers: int, batch: int) -> tuple[float, int]:
    """Products per second of the bare worker pool on the same pairs (no server, no store)."""
    files = ResultFiles(scratch / f"raw-{batch}")
    files.create("raw")
    pairs = [PairTask(i, Field(ra, dec, SIZE, SIZE), r, str(index.path_of(r)), ("image/fits",))
             for i, (ra, dec) in enumerate(fields)
             for r in index.lookup(Field(ra, dec, SIZE, SIZE), collections=["DEMO-WIDE"], bands=["r"])]
    tasks = [BatchTask("raw", str(files.root), "/raw/", tuple(pairs[k:k + batch])) for k in range(0, len(pairs), batch)]
    pool = LocalPool(workers)
    await pool.start()
    start = time.perf_counter()
    outcomes = await asyncio.gather(*(pool.submit(t) for t in tasks))
    elapsed = time.perf_counter() - start
    await pool.close()
    made = sum(len(o.products) for batch_outcomes in outcomes for o in batch_outcomes)
    shutil.rmtree(files.root)
    return made / elapsed, made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=REPO / "data" / "demo")
    parser.add_argument("--scratch", type=Path, default=REPO / "bench" / ".scratch")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--bulk", type=int, default=10_000, help="fields of the bulk job")
    parser.add_argument("--compare", type=int, default=3000, help="fields of the job run on both backends")
    args = parser.parse_args()
    index = ArchiveIndex.load(args.archive)
    state = args.scratch / "staging-state"
    shutil.rmtree(state, ignore_errors=True)

    sample = positions(1500, seed=1)
    batches = {b: asyncio.run(raw_throughput(index, sample, args.scratch, args.workers, b)) for b in (1, 4, 8, 16)}

    server = BenchServer(args.archive, state, "--workers", str(args.workers))
    try:
        _, small_job = first_result_seconds(server, positions(10, seed=2))  # warms the workers' caches
        wait_done(small_job, server, [])
        small_products = info(small_job)["jobInfo"]["products"]
        firsts: dict[int, list[float]] = {10: [], args.bulk: []}
        for trial in range(TRIALS):
            for n in firsts:
                seconds, job = first_result_seconds(server, positions(n, seed=10 + trial))
                firsts[n].append(seconds)
                destroy(job)
                time.sleep(1.0)  # the destroyed job's last batches drain: each job starts on an idle pool
        small_first, bulk_first = (statistics.median(firsts[n]) for n in firsts)
        uploads = upload_seconds(server, 100_000)

        bulk_fields = positions(args.bulk, seed=3)
        rss: list[float] = [server.rss_mb()]
        start = time.perf_counter()
        bulk_job = post(server, bulk_fields)
        end = wait_done(bulk_job, server, rss)
        products = info(bulk_job)["jobInfo"]["products"]
        e2e = products / (end - start)
        table_times = []
        for _ in range(5):
            t0 = time.perf_counter()
            table = HTTP.get(bulk_job + "/results/table")
            table_times.append(time.perf_counter() - t0)
        rows = table.text.count("<TR>")

        busy_job = post(server, positions(args.bulk, seed=4))  # keeps both cores busy while polled
        polled = {"small": poll(server, small_job), "bulk": poll(server, busy_job),
                  "bulk-deflate": poll(server, busy_job, deflate=True),
                  "bulk-conditional": poll(server, busy_job, conditional=True, deflate=True)}
        busy_products = info(busy_job)["jobInfo"]["products"]
        behind = {"fair": small_latencies(server, busy_job)}
        destroy(busy_job)
        compare_fields = positions(args.compare, seed=5)
        rates = {"local": job_rate(server, compare_fields)}
    finally:
        server.stop()
    for name, extra, env in (("fifo", (), {"SIASYNC_SCHEDULING": "fifo"}),
                             ("dask", ("--executor", f"dask-local:{args.workers}"), {})):
        shutil.rmtree(state, ignore_errors=True)
        other = BenchServer(args.archive, state, "--workers", str(args.workers), *extra, env=env)
        try:
            wait_done(post(other, positions(10, seed=2)), other, [])  # warm-up
            if name == "fifo":
                busy_job = post(other, positions(args.bulk, seed=4))
                behind["fifo"] = small_latencies(other, busy_job)
                destroy(busy_job)
            else:
                rates["dask"] = job_rate(other, compare_fields)
        finally:
            other.stop()
    raw_rate, raw_made = asyncio.run(raw_throughput(index, bulk_fields, args.scratch, args.workers, BATCH_PAIRS))

    print(f"## Staging engine ({args.workers} workers; bulk job: {args.bulk} fields of DEMO-WIDE r, "
          f"SIZE {SIZE} deg, FITS)\n")
    print("| figure | value | baseline in the same run | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| time to first result (median of {TRIALS}), {args.bulk}-field job vs 10-field job | {bulk_first:.3f} s | "
          f"{small_first:.3f} s | {bulk_first / small_first:.2f} |")
    print(f"| 100,000-row upload: read as CSV / as VOTable / POST creating the job | {uploads['csv']:.2f} / "
          f"{uploads['votable']:.2f} / {uploads['post']:.2f} s | | |")
    print(f"| end-to-end products/s vs raw pool on the same pairs | {e2e:.0f} ({products} products) | "
          f"{raw_rate:.0f} ({raw_made}) | {e2e / raw_rate:.0%} |")
    for name, label in (("small", f"the 10-field job ({small_products} results)"),
                        ("bulk", f"the busy bulk job itself (~{busy_products} results at the end)"),
                        ("bulk-deflate", "the busy bulk job itself, accepting deflate"),
                        ("bulk-conditional", "the busy bulk job itself, accepting deflate and sending If-None-Match")):
        latencies = polled[name]["latencies_ms"]
        print(f"| GET /async/{{job}} p50 / p99, 100 pollers on {label}, during a bulk job | "
              f"{np.percentile(latencies, 50):.1f} / {np.percentile(latencies, 99):.1f} ms "
              f"({len(latencies)} requests, {polled[name]['not_modified']} answered 304, "
              f"{polled[name]['failures']} failed) | | |")
    print(f"| server RSS, peak during the bulk job | {max(rss):.0f} MB | {rss[0]:.0f} MB at start | "
          f"{max(rss) / rss[0]:.2f} |")
    print(f"| table GET at {rows} rows (median of 5) | {statistics.median(table_times) * 1e3:.0f} ms | | |")
    fair, fifo = statistics.median(behind["fair"]), statistics.median(behind["fifo"])
    print(f"| 10-field job, POST to COMPLETED behind a running {args.bulk}-field job (median of 3): fair "
          f"dispatcher vs FIFO | {fair:.2f} s | {fifo:.2f} s | {fifo / fair:.1f}x faster |")
    print(f"| products/s of a {args.compare}-field job: Dask LocalCluster ({args.workers} workers) vs local pool | "
          f"{rates['dask']:.0f} | {rates['local']:.0f} | {rates['dask'] / rates['local']:.0%} |")
    print("\nRaw pool throughput by pairs per task (same 1,500 random fields):\n")
    print(f"| pairs per task | products/s | vs {BATCH_PAIRS} (the service's choice) |")
    print("|---:|---:|---:|")
    for b, (rate, made) in batches.items():
        print(f"| {b} | {rate:.0f} ({made}) | {rate / batches[BATCH_PAIRS][0]:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
