"""Staging-engine benchmarks on a real server (numbers, not pass/fail).

Run with ``make bench``. Every comparison is against a baseline in the same run:

* time to first result of a 10-field and a 10,000-field job (ratio);
* batch sizes: raw pool throughput with 1, 4 and 16 pairs per task;
* end-to-end products per second through the service, against the raw engine on the
  same kind of pool, the same pairs and the same number of workers;
* p50/p99 of ``GET /async/{job}`` from 100 pollers (each every 0.5 s, so 200 requests/s)
  while the workers keep both cores busy: on a small job, and on the bulk job itself;
* peak server RSS during the 10,000-field job, and the table GET time at its end.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._server import BenchServer  # noqa: E402
from cutout.index import ArchiveIndex  # noqa: E402
from cutout.sky import Field  # noqa: E402
from siasync.pool import LocalPool  # noqa: E402
from siasync.worker import BatchTask, PairTask  # noqa: E402
from storage.files import ResultFiles  # noqa: E402

SIZE = 0.01
BULK = {"COLLECTION": "DEMO-WIDE", "BAND": "r", "SIZE": str(SIZE)}


def positions(n: int, seed: int) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    return [(float(150.1 + rng.uniform(-0.5, 0.5)), float(2.2 + rng.uniform(-0.5, 0.5))) for _ in range(n)]


def post(server: BenchServer, fields: list[tuple[float, float]], **params: str) -> str:
    body = {"POS": "\n".join(f"{ra},{dec}" for ra, dec in fields), "PHASE": "RUN", **BULK, **params}
    response = httpx.post(server.url + "/async", data=body, follow_redirects=False, timeout=120)
    if response.status_code != 303:
        raise RuntimeError(response.text)
    return server.url + response.headers["location"]


def first_result_seconds(server: BenchServer, fields: list[tuple[float, float]]) -> tuple[float, str]:
    """Seconds from the POST to the first result event on the job's stream."""
    start = time.perf_counter()
    job = post(server, fields)
    with httpx.stream("GET", job + "/events", timeout=120) as stream:
        for line in stream.iter_lines():
            if line.startswith("event: result"):
                return time.perf_counter() - start, job
    raise RuntimeError("no result")


def info(job: str) -> dict:
    return httpx.get(job, headers={"Accept": "application/json"}, timeout=30).json()


def wait_done(job: str, server: BenchServer, rss: list[float]) -> float:
    while (body := info(job))["phase"] in ("QUEUED", "EXECUTING"):
        rss.append(server.rss_mb())
        time.sleep(0.5)
    assert body["phase"] == "COMPLETED", body["phase"]
    return time.perf_counter()


async def poll(url: str, clients: int, seconds: float, interval: float = 0.5) -> tuple[list[float], int]:
    """Latencies (ms) of GET url from ``clients`` pollers, each polling every ``interval`` seconds.

    Returns the latencies of the successful requests and the number of failed ones.
    """
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=clients)) as client:
        async def poller() -> None:
            await asyncio.sleep(interval * np.random.default_rng().uniform())  # pollers are not in step
            nonlocal failures
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                try:
                    (await client.get(url)).raise_for_status()
                    latencies.append((time.perf_counter() - start) * 1e3)
                except httpx.HTTPError:
                    failures += 1
                await asyncio.sleep(max(0.0, interval - (time.perf_counter() - start)))
        await asyncio.gather(*(poller() for _ in range(clients)))
    return latencies, failures


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
    args = parser.parse_args()
    index = ArchiveIndex.load(args.archive)
    state = args.scratch / "staging-state"
    shutil.rmtree(state, ignore_errors=True)

    sample = positions(1500, seed=1)
    batches = {b: asyncio.run(raw_throughput(index, sample, args.scratch, args.workers, b)) for b in (1, 4, 16)}

    server = BenchServer(args.archive, state, "--workers", str(args.workers))
    try:
        small_first, small_job = first_result_seconds(server, positions(10, seed=2))
        wait_done(small_job, server, [])
        small_products = info(small_job)["jobInfo"]["products"]
        bulk_fields = positions(args.bulk, seed=3)
        rss: list[float] = [server.rss_mb()]
        start = time.perf_counter()
        bulk_first, bulk_job = first_result_seconds(server, bulk_fields)
        start_ref = start
        polled: dict[str, list[float]] = {}

        def pollers() -> None:  # while the bulk job keeps both cores busy: a small job, then the bulk job itself
            polled["small"] = asyncio.run(poll(small_job, 100, 10.0))
            polled["bulk"] = asyncio.run(poll(bulk_job, 100, 10.0))
            polled["bulk_products"] = [info(bulk_job)["jobInfo"]["products"]]

        poller = threading.Thread(target=pollers)
        poller.start()
        end = wait_done(bulk_job, server, rss)
        poller.join()
        body = info(bulk_job)
        products = body["jobInfo"]["products"]
        e2e = products / (end - start_ref)
        table_times = []
        for _ in range(5):
            t0 = time.perf_counter()
            table = httpx.get(bulk_job + "/results/table", timeout=120)
            table_times.append(time.perf_counter() - t0)
        rows = table.text.count("<TR>")
    finally:
        server.stop()
    raw_rate, raw_made = asyncio.run(raw_throughput(index, bulk_fields, args.scratch, args.workers, 4))

    print(f"## Staging engine ({args.workers} workers; bulk job: {args.bulk} fields of DEMO-WIDE r, "
          f"SIZE {SIZE} deg, FITS)\n")
    print("| figure | value | baseline in the same run | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| time to first result, {args.bulk}-field job vs 10-field job | {bulk_first:.3f} s | "
          f"{small_first:.3f} s | {bulk_first / small_first:.2f} |")
    print(f"| end-to-end products/s vs raw pool on the same pairs | {e2e:.0f} ({products} products) | "
          f"{raw_rate:.0f} ({raw_made}) | {e2e / raw_rate:.0%} |")
    for name, label in (("small", f"the 10-field job ({small_products} results)"),
                        ("bulk", f"the bulk job itself (~{polled['bulk_products'][0]} results at the end)")):
        latencies, failures = polled[name]
        print(f"| GET /async/{{job}} p50 / p99, 100 pollers on {label}, during the bulk job | "
              f"{np.percentile(latencies, 50):.1f} / {np.percentile(latencies, 99):.1f} ms "
              f"({len(latencies)} requests, {failures} failed) | | |")
    print(f"| server RSS, peak during the bulk job | {max(rss):.0f} MB | {rss[0]:.0f} MB at start | "
          f"{max(rss) / rss[0]:.2f} |")
    print(f"| table GET at {rows} rows (median of 5) | {statistics.median(table_times) * 1e3:.0f} ms | | |")
    print("\nRaw pool throughput by pairs per task (same 1,500 random fields):\n")
    print("| pairs per task | products/s | vs 4 |")
    print("|---:|---:|---:|")
    for b, (rate, made) in batches.items():
        print(f"| {b} | {rate:.0f} ({made}) | {rate / batches[4][0]:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
