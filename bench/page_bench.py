"""The job page's cost at any size, on a real server (numbers, not pass/fail).

Run with ``make bench``. Two jobs are written straight into a job store, as the scheduler
registers them: a 10-field job (the baseline) and a 10,000-field job, each field with 4
images as FITS and PNG (80,000 products and table rows). A real ``siasync serve`` process
then answers the browser's HTML page of each: the first page, the last page, the band
filter and the thumbnail grid. Medians of sequential requests from httpx, the size of the
HTML, and the ratio of each to the 10-field job's first page.
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
from cutout.index import ArchiveIndex  # noqa: E402
from siasync.uws.params import StagingRequest  # noqa: E402
from storage.jobs import Job, JobStore, Product, TableRow  # noqa: E402
from storage.table import render_row  # noqa: E402

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
IMAGES = 4


async def fill(state: Path, archive: Path, sizes: tuple[int, ...]) -> list[str]:
    """A job store with one COMPLETED FORMAT=ALL job of each size; their ids."""
    state.mkdir(parents=True, exist_ok=True)
    store = await JobStore.open(f"sqlite+aiosqlite:///{state / 'siasync.db'}")
    records = [r for r in ArchiveIndex.load(archive).records if r.collection == "DEMO-WIDE"]
    now = datetime.now(UTC)
    ids = []
    for n in sizes:
        job_id = f"bench{n:07d}"
        positions = tuple((149.65 + (i % 100) * 0.009, 1.75 + (i // 100) * 0.009) for i in range(n))
        spec = StagingRequest(positions=positions, size=(0.01, 0.01), format="ALL").to_spec()
        await store.create(Job(id=job_id, owner="anonymous", run_id=None, phase="COMPLETED", creation_time=now,
                               start_time=now, end_time=now, execution_duration=3600,
                               destruction=now + timedelta(days=7), quote=None, start_after=None, error_type=None,
                               error_message=None, parameters=[["POS", "%.4f,%.4f" % p] for p in positions],
                               spec=spec, info={"fields_total": n, "fields_done": n, "products": n * IMAGES * 2}))
        for start in range(0, n, 1000):
            products, rows = [], []
            for field in range(start, min(start + 1000, n)):
                for k in range(IMAGES):
                    record = records[(field + 7 * k) % len(records)]
                    for mime, ext in (("image/fits", "fits"), ("image/png", "png")):
                        name = f"{field:05d}.{record.id}.{ext}"
                        products.append(Product(name, 70_000, mime, {"field": field, "image": record.id}))
                        rows.append(TableRow(field, record.id, name, render_row(
                            {"title": name, "field": field, "format": mime, "bandpass_id": record.band},
                            f"/async/{job_id}/results/{name}")))
            await store.register(job_id, products, rows)
        ids.append(job_id)
    await store.close()
    return ids


def timed(client: httpx.Client, url: str, n: int) -> tuple[float, int]:
    """Median milliseconds of ``n`` requests, and the page's bytes."""
    size = len(client.get(url, headers=BROWSER).content)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        response = client.get(url, headers=BROWSER)
        times.append((time.perf_counter() - start) * 1e3)
        assert response.status_code == 200, response.text[:300]
    return statistics.median(times), size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=REPO / "data" / "demo")
    parser.add_argument("--scratch", type=Path, default=REPO / "bench" / ".scratch")
    parser.add_argument("-n", type=int, default=20, help="requests per figure")
    args = parser.parse_args()
    state = args.scratch / "pages"
    shutil.rmtree(state, ignore_errors=True)
    small, big = asyncio.run(fill(state, args.archive, (10, 10_000)))
    server = BenchServer(args.archive, state)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            rows = [(label, *timed(client, url, args.n)) for label, url in (
                ("10 fields, page 1", f"/async/{small}"),
                ("10,000 fields, page 1", f"/async/{big}"),
                ("10,000 fields, page 400 (the last)", f"/async/{big}?PAGE=400"),
                ("10,000 fields, BAND=g, page 20", f"/async/{big}?BAND=g&PAGE=20"),
                ("10,000 fields, thumbnail grid", f"/async/{big}?VIEW=grid"),
                ("10,000 fields, the table's page 200", f"/async/{big}/results/table?PAGE=200"),
                ("10,000 fields, sky picture (SVG)", f"/async/{big}/sky.svg"))]
    finally:
        server.stop()
    base = rows[0][1]
    print(f"## The job page on a real server (median of {args.n} sequential requests)\n")
    print("| page | ms | / 10-field page | bytes |")
    print("|---|---:|---:|---:|")
    for label, ms, size in rows:
        print(f"| {label} | {ms:.1f} | {ms / base:.1f} | {size} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
