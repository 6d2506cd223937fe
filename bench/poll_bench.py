"""Polling a busy bulk job's own document: plain against deflated, in the same run (numbers, not pass/fail).

Run with ``make bench`` (or alone: ``python bench/poll_bench.py --archive data/demo``). One
job of 40,000 fields runs on a real server with two workers, so its document grows by
thousands of results while it is polled. 100 pollers (`bench/_poller.py`, their own
process, each GET every 0.5 s) poll it in short rounds that alternate between clients
accepting only ``identity`` and clients accepting ``gzip, deflate`` (as httpx, requests
and browsers do), so both see the same sizes of document; a last kind of round also sends
``If-None-Match``. For each round: p50 and p99 latency, the results the job had at its
end, and the body size of one answer.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._server import BenchServer  # noqa: E402
from bench.staging_bench import destroy, info, poll, positions, post  # noqa: E402

ROUNDS = (("identity", False, False), ("deflate", True, False)) * 3 + (("deflate + If-None-Match", True, True),)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=REPO / "data" / "demo")
    parser.add_argument("--scratch", type=Path, default=REPO / "bench" / ".scratch")
    parser.add_argument("--fields", type=int, default=40_000)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each round")
    args = parser.parse_args()
    state = args.scratch / "poll-state"
    shutil.rmtree(state, ignore_errors=True)
    server = BenchServer(args.archive, state, "--workers", "2")
    rows = []
    try:
        job = post(server, positions(args.fields, seed=4))
        for label, deflate, conditional in ROUNDS:
            polled = poll(server, job, seconds=args.seconds, conditional=conditional, deflate=deflate)
            with httpx.stream("GET", job, headers={"Accept-Encoding": "deflate" if deflate else "identity"}) as one:
                size = sum(len(chunk) for chunk in one.iter_raw())
            latencies = polled["latencies_ms"]
            rows.append((label, info(job)["jobInfo"].get("products", 0), size, np.percentile(latencies, 50),
                         np.percentile(latencies, 99), len(latencies), polled["not_modified"], polled["failures"]))
        destroy(job)
    finally:
        server.stop()
    print(f"## Polling the busy bulk job's document ({args.fields} fields, 100 pollers at 2 Hz, "
          f"rounds of {args.seconds:.0f} s)\n")
    print("| round | results at its end | body sent | p50 | p99 | requests (304, failed) |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, products, size, p50, p99, n, not_modified, failures in rows:
        print(f"| {label} | {products} | {size / 1e3:.0f} kB | {p50:.1f} ms | {p99:.1f} ms | "
              f"{n} ({not_modified}, {failures}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
