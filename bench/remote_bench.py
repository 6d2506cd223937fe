"""Remote collections: a 1,000-field job over the archive and a loopback remote, against the same job local-only.

Run with ``make bench`` (or alone: ``.venv/bin/python bench/remote_bench.py --archive data/demo``).

The remote is a second siasync serving the same demo archive, reached through the tests'
loopback proxy (`tests.e2e.loopback_remote`), declared as ``R-WIDE``: its DEMO-WIDE through
pyvo's SIA 2.0 client, each image behind a DataLink document. Each round runs, on one server
with 2 worker processes (and the remote's own lane of ``concurrency`` processes):

* **local**: ``COLLECTION=DEMO-WIDE``, BAND r, SIZE 0.01, 1,000 random fields;
* **mixed, cold**: ``COLLECTION=DEMO-WIDE,R-WIDE``, the download cache emptied first (the remote's
  query answers stay, as for a job resumed or repeated within a day);
* **mixed, warm**: the same job again, every image in the cache.

For each: seconds from the POST to the first result (the first ``result`` event of the job's
stream) and to COMPLETED, products, and the download cache's hit rate (``remote_cached`` over
``remote_fetched + remote_cached`` in jobInfo). Medians over the rounds; ratios against local.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._server import BenchServer  # noqa: E402
from cutout.index import ArchiveIndex  # noqa: E402
from tests.e2e.loopback_remote import Loopback  # noqa: E402

HTTP = httpx.Client(timeout=120)
SIZE = 0.01
KINDS = ("local", "mixed, cold", "mixed, warm")


def positions(n: int, seed: int) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    return [(float(150.1 + rng.uniform(-0.5, 0.5)), float(2.2 + rng.uniform(-0.5, 0.5))) for _ in range(n)]


def remotes_toml(loop: str) -> str:
    return f'[R-WIDE]\nprotocol = "sia2"\nurl = "{loop}/sia2"\ncollection = "DEMO-WIDE"\n'


def run_job(server: BenchServer, fields: list[tuple[float, float]], collections: list[str]) -> dict[str, float]:
    """One job from POST to COMPLETED: seconds to the first result and to the end, products, cache figures."""
    body = urlencode([("POS", "\n".join(f"{ra},{dec}" for ra, dec in fields)), ("SIZE", str(SIZE)), ("BAND", "r"),
                      ("PHASE", "RUN"), *[("COLLECTION", c) for c in collections]]).encode()
    start = time.perf_counter()
    response = HTTP.post(server.url + "/async", content=body, follow_redirects=False,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    if response.status_code != 303:
        raise RuntimeError(response.text)
    job = response.headers["location"]
    first = None
    with HTTP.stream("GET", job + "/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("event: result"):
                first = time.perf_counter() - start
                break
    while (phase := HTTP.get(job + "/phase").text) in ("QUEUED", "EXECUTING"):
        HTTP.get(job, params={"WAIT": "30"}, timeout=60)
    total = time.perf_counter() - start
    if phase != "COMPLETED":
        raise RuntimeError(f"{job}: {phase}")
    info = HTTP.get(job, headers={"Accept": "application/json"}).json()["jobInfo"]
    HTTP.delete(job)
    fetched, cached = info.get("remote_fetched", 0), info.get("remote_cached", 0)
    warnings = [k for k in info if k.startswith("warning")]
    if warnings:
        raise RuntimeError(f"{job}: {[info[k] for k in warnings]}")
    return {"first": first or total, "total": total, "products": info["products"], "fetched": fetched,
            "cached": cached}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--archive", type=Path, default=REPO / "data" / "demo")
    parser.add_argument("--fields", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    scratch = REPO / "bench" / ".scratch" / "remote"
    shutil.rmtree(scratch, ignore_errors=True)
    mixed = scratch / "archive"
    ArchiveIndex.load(args.archive).save(mixed / "siasync-index.sqlite")
    upstream = BenchServer(args.archive, scratch / "upstream", "--workers", "1")
    loop = server = None
    try:
        loop = Loopback(upstream.url, args.archive).start()
        (mixed / "siasync-remotes.toml").write_text(remotes_toml(loop.url))
        server = BenchServer(mixed, scratch / "state", "--workers", "2")
        cache = scratch / "state" / "remote-cache" / "images"
        fields = positions(args.fields, seed=19)
        run_job(server, positions(20, seed=1), ["DEMO-WIDE", "R-WIDE"])  # warm-up: workers, the remote's queries
        results: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
        for round_ in range(args.rounds):
            results["local"].append(run_job(server, fields, ["DEMO-WIDE"]))
            shutil.rmtree(cache, ignore_errors=True)
            results["mixed, cold"].append(run_job(server, fields, ["DEMO-WIDE", "R-WIDE"]))
            results["mixed, warm"].append(run_job(server, fields, ["DEMO-WIDE", "R-WIDE"]))
            print(f"round {round_ + 1}: " + "; ".join(f"{k} {v[-1]['first']:.2f}/{v[-1]['total']:.1f} s"
                                                      for k, v in results.items()), flush=True)
    finally:
        for process in (server, loop, upstream):
            if process is not None:
                process.stop()
    local_first = statistics.median(r["first"] for r in results["local"])
    local_total = statistics.median(r["total"] for r in results["local"])
    print(f"\n### {args.fields} fields, SIZE {SIZE}, BAND r (median of {args.rounds} rounds)\n")
    print("| job | products | first result (s) | ratio | total (s) | ratio | images fetched | cache hits | hit rate |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in KINDS:
        rows = results[kind]
        first = statistics.median(r["first"] for r in rows)
        total = statistics.median(r["total"] for r in rows)
        fetched = statistics.median(r["fetched"] for r in rows)
        cached = statistics.median(r["cached"] for r in rows)
        rate = f"{cached / (fetched + cached):.1%}" if fetched + cached else "—"
        print(f"| {kind} | {rows[0]['products']:.0f} | {first:.2f} | {first / local_first:.2f}× | {total:.1f} | "
              f"{total / local_total:.2f}× | {fetched:.0f} | {cached:.0f} | {rate} |")


if __name__ == "__main__":
    main()
