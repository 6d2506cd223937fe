"""Mosaic jobs on a real server: products appear per field and band as they are made, survive a SIGKILL
of the whole server, and a DELETE mid-job leaves nothing behind."""

from __future__ import annotations

import io
import signal
import time
from pathlib import Path

import httpx
import pytest
from astropy.io import fits

from cutout.index import ArchiveIndex
from cutout.sky import Field
from tests.e2e.conftest import EXECUTORS, Server, submit, wait_final

SIZE = 0.02
POSITIONS = [(150.02 + 0.008 * (i % 6), 2.12 + 0.008 * (i // 6)) for i in range(24)]
MOSAIC = {"POS": [f"{ra},{dec}" for ra, dec in POSITIONS], "SIZE": str(SIZE), "MODE": "mosaic",
          "COLLECTION": "DEMO-WIDE", "PHASE": "RUN"}


def expected_products(archive: Path) -> set[str]:
    index = ArchiveIndex.load(archive)
    return {f"{i:05d}.mosaic-{r.band}.fits" for i, (ra, dec) in enumerate(POSITIONS)
            for r in index.lookup(Field(ra, dec, SIZE, SIZE), collections=("DEMO-WIDE",))}


def products(job: str) -> list[dict]:
    document = httpx.get(job, headers={"Accept": "application/json"}, timeout=10).json()
    return [r for r in document["results"] if r["id"] != "table"]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_mosaics_arrive_progressively_and_survive_a_sigkill(tmp_path: Path, demo_archive: Path,
                                                            executor: str) -> None:
    server = Server(demo_archive, tmp_path / "state", tmp_path / "log", "--workers", "2",
                    "--executor", executor).start()
    try:
        job = submit(server, **MOSAIC)
        deadline = time.monotonic() + 60
        while not (listed := products(job)):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        early = httpx.get(listed[0]["href"], timeout=10)
        phase = httpx.get(job + "/phase", timeout=10).text
        assert phase == "EXECUTING"  # a first mosaic is listed and downloaded while the job runs
        with fits.open(io.BytesIO(early.content)) as hdul:
            assert hdul[0].header["NCOMBINE"] >= 1 and hdul["WEIGHT"].data.shape == hdul[0].data.shape
        while len(products(job)) < 6:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        server.stop(signal.SIGKILL)
        server.start()
        final = wait_final(job, timeout=180)
        assert final.phase == "COMPLETED"
        ids = [r.id_ for r in final.results if r.id_ != "table"]
        assert len(ids) == len(set(ids)) and set(ids) == expected_products(demo_archive)
        table = httpx.get(job + "/results/table", timeout=10).text
        assert table.count("<TR>") == len(ids)
        for result in final.results:
            if result.id_ != "table":
                with fits.open(io.BytesIO(httpx.get(result.href, timeout=10).content)) as hdul:
                    assert hdul[0].data.shape == (72, 72)
        job_dir = next((tmp_path / "state").rglob(job.rsplit("/", 1)[-1]))
        assert not list(job_dir.glob(".tmp-*"))

        # a DELETE mid-job: two seconds later, nothing of the job is left
        doomed = submit(server, **MOSAIC)
        deadline = time.monotonic() + 60
        while len(products(doomed)) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        doomed_id = doomed.rsplit("/", 1)[-1]
        assert httpx.delete(doomed, timeout=10).status_code == 303
        time.sleep(2)
        assert httpx.get(doomed, timeout=10).status_code == 404
        assert not any(doomed_id in str(p) for p in (tmp_path / "state").rglob("*"))
    finally:
        server.stop()
