"""Job-service benchmarks on a real server (numbers, not pass/fail).

Run with ``make bench``. The job list with ``LAST=100`` is timed on a store holding
10,000 jobs and, as the baseline in the same run, on a store holding 100 jobs; the
ratio shows whether the list scales with the store. The job document and an atomic
child (``/phase``) are timed on the large store too.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._server import BenchServer  # noqa: E402
from storage.jobs import Job, JobStore  # noqa: E402


async def fill(state: Path, n: int) -> str:
    """A job store with ``n`` COMPLETED jobs of one owner; return the newest id."""
    state.mkdir(parents=True, exist_ok=True)
    store = await JobStore.open(f"sqlite+aiosqlite:///{state / 'siasync.db'}")
    start = datetime.now(UTC) - timedelta(days=1)
    for i in range(n):
        created = start + timedelta(seconds=i)
        await store.create(Job(id=f"job{i:06d}", owner="anonymous", run_id=f"bench-{i}", phase="COMPLETED",
                               creation_time=created, start_time=created, end_time=created, execution_duration=3600,
                               destruction=created + timedelta(days=7), quote=None, start_after=None, error_type=None,
                               error_message=None, parameters=[["POS", "150.1,2.2"], ["SIZE", "0.01"]],
                               spec={}, info={"fields_total": 1}))
    await store.close()
    return f"job{n - 1:06d}"


def median_ms(client: httpx.Client, url: str, n: int) -> float:
    client.get(url)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        assert client.get(url).status_code == 200
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=REPO / "data" / "demo")
    parser.add_argument("--scratch", type=Path, default=REPO / "bench" / ".scratch")
    parser.add_argument("-n", type=int, default=100, help="requests per figure")
    args = parser.parse_args()
    rows = {}
    for jobs in (100, 10_000):
        state = args.scratch / f"state-{jobs}"
        shutil.rmtree(state, ignore_errors=True)
        newest = asyncio.run(fill(state, jobs))
        server = BenchServer(args.archive, state)
        try:
            with httpx.Client(base_url=server.url) as client:
                rows[jobs] = (median_ms(client, "/async?LAST=100", args.n),
                              median_ms(client, f"/async/{newest}", args.n),
                              median_ms(client, f"/async/{newest}/phase", args.n))
        finally:
            server.stop()
    print(f"## Job service on a real server (median of {args.n} sequential requests)\n")
    print("| jobs in store | GET /async?LAST=100 ms | GET /async/{job} ms | GET /async/{job}/phase ms |")
    print("|---:|---:|---:|---:|")
    for jobs, (listing, job, phase) in rows.items():
        print(f"| {jobs} | {listing:.2f} | {job:.2f} | {phase:.2f} |")
    print(f"\nLAST=100 at 10,000 jobs / at 100 jobs: **{rows[10_000][0] / rows[100][0]:.2f}**")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
