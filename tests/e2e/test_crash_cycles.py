"""Crash cycles: a 500-field job through repeated SIGKILLs of the whole server, then checked file by file.

Each cycle lets the job register a random number of products (none, some times: the
kill then lands while the restarted server requeues the job and sends its first
batches), waits a random moment more, SIGKILLs the server's process group (server,
forkserver and workers) and restarts the server on the same state directory. One cycle
in five kills the restarting server instead, at a random moment of its start-up. At the
end the job must be COMPLETED with every (field, image) pair exactly once in the
results and in the table, and each file on disk a valid FITS image with the pixels of
its parent. The seed of each run is printed, so a failure can be replayed.
"""

from __future__ import annotations

import io
import os
import random
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from astropy.io.votable import parse_single_table
from lxml import etree

from cutout.index import ArchiveIndex
from cutout.sky import Field
from tests.e2e.conftest import Server, assert_each_pair_once, assert_files_are_the_products, submit, wait_final
from tests.e2e.test_staging import grid

SIZE = 0.005
#: one keep-alive client for the polling: a fresh httpx.get costs tens of ms of CPU (its SSL context)
HTTP = httpx.Client(timeout=60)


def registered(job: str) -> int:
    """Products listed by /results right now (exact: the list, not the cached job document)."""
    return len(etree.fromstring(HTTP.get(job + "/results").content)) - 1  # the table is listed too


def timed_start(server: Server) -> float:
    """Start the server; the seconds it took to serve."""
    start = time.monotonic()
    server.start()
    return time.monotonic() - start


def kill_while_starting(server: Server, delay: float) -> None:
    """Start the server and SIGKILL its process group ``delay`` seconds later, whether it serves by then or not:
    in the middle of its imports, of the requeueing of the job, or of its first batches."""
    old, failed = server.process, []

    def start() -> None:
        try:
            server.start()
        except RuntimeError as exc:  # killed before it served
            failed.append(exc)

    starting = threading.Thread(target=start)
    starting.start()
    while server.process is old:
        time.sleep(0.005)
    time.sleep(delay)
    server.stop(signal.SIGKILL)
    starting.join(90)


# small fields on every band's images: 1675 products, several seconds of work on one worker. Each cycle lets the
# job go on a moment past its share (the polling, the random wait, the kill), which on a fast machine is tens of
# products: on the r band alone (675) with two workers, a fast machine finished the job before the tenth kill
@pytest.mark.parametrize(("cycles", "bands", "workers"), [
    (10, ["g", "r", "i"], "1"), pytest.param(50, ["g", "r", "i"], "1", marks=pytest.mark.soak)])
def test_sigkill_cycles_lose_nothing_and_make_nothing_twice(tmp_path: Path, demo_archive: Path,
                                                            demo_index: ArchiveIndex, cycles: int,
                                                            bands: list[str], workers: str) -> None:
    seed = int(os.environ.get("SIASYNC_TEST_SEED", time.time_ns() % 2**32))
    print(f"seed {seed}")
    rng = random.Random(seed)
    positions = grid(500)
    pairs = {(i, r.id) for i, (ra, dec) in enumerate(positions)
             for r in demo_index.lookup(Field(ra, dec, SIZE, SIZE), bands=bands)}
    server = Server(demo_archive, tmp_path / "state", tmp_path / "server.log", "--workers", workers)
    started_in = timed_start(server)
    try:
        job = submit(server, POS=[f"{ra},{dec}" for ra, dec in positions], SIZE=str(SIZE), PHASE="RUN", BAND=bands)
        killed_at: list[tuple[int, str]] = []
        for cycle in range(cycles):
            if cycle % 5 == 2:  # a kill while the server starts over (as long as its last start took)
                delay = rng.uniform(0, started_in)
                server.stop(signal.SIGKILL)
                kill_while_starting(server, delay)
                killed_at.append((-1, f"starting +{delay:.1f} s"))
                started_in = timed_start(server)
                continue
            # at most 1/(3 cycles) of the job per cycle, so that every kill lands while the job runs
            target = registered(job) + rng.randint(0, len(pairs) // (3 * cycles))
            deadline = time.monotonic() + 60
            while (done := registered(job)) < target:
                assert HTTP.get(job + "/phase").text != "COMPLETED", f"done after {len(killed_at)} kills: too small"
                assert time.monotonic() < deadline, f"no progress after {len(killed_at)} kills"
                time.sleep(0.02)
            time.sleep(rng.uniform(0, 0.05))
            killed_at.append((done, HTTP.get(job + "/phase").text))
            server.stop(signal.SIGKILL)  # the whole process group, at once
            started_in = timed_start(server)
        print(f"killed at (products, phase): {killed_at}")
        # every kill hit the running job (or the server starting over with it)
        assert {phase for _, phase in killed_at if not phase.startswith("starting")} <= {"QUEUED", "EXECUTING"}
        final = wait_final(job, timeout=300)
        assert final.phase == "COMPLETED", final.errorsummary
        ids = assert_each_pair_once(final, demo_archive, positions, SIZE, bands=bands)
        table = parse_single_table(io.BytesIO(HTTP.get(job + "/results/table").content)).to_table()
        assert list(table["result_id"]) == ids  # a row per product, in registration order
        rows = [(int(f), str(p)) for f, p in zip(table["field"], table["parent_id"], strict=True)]
        assert len(rows) == len(set(rows)) and set(rows) == pairs
    finally:
        server.stop()
    assert_files_are_the_products(server.state_dir, job.rsplit("/", 1)[-1], ids, demo_archive, positions, SIZE)
