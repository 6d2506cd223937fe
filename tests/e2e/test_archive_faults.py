"""A damaged archive file is skipped with a warning; the job goes on and completes."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import httpx
from pyvo.io.uws import parse_job

from cutout.index import ArchiveIndex
from tests.e2e.conftest import LOCAL_ONLY, Server, submit, wait_final


@LOCAL_ONLY
def test_a_corrupt_parent_is_skipped_with_a_warning(tmp_path: Path, demo_archive: Path, executor: str) -> None:
    archive = tmp_path / "archive"
    shutil.copytree(demo_archive / "DEMO-WIDE" / "r", archive / "DEMO-WIDE" / "r")
    index, _ = ArchiveIndex.build(archive)
    index.save()
    victim = next(r for r in index.records if r.path.endswith("t11.fits"))
    path = archive / victim.path
    path.write_bytes(path.read_bytes()[:5760])  # the header survives, the pixels are gone
    server = Server(archive, tmp_path / "state", tmp_path / "log", "--executor", executor).start()
    try:
        job = submit(server, POS=["150.1,2.2", "150.0,2.1"], SIZE="0.1", PHASE="RUN")
        final = wait_final(job)
        assert final.phase == "COMPLETED"
        ids = [r.id_ for r in final.results if r.id_ != "table"]
        assert ids and not any(victim.id in i for i in ids)
        info = httpx.get(job, headers={"Accept": "application/json"}).json()["jobInfo"]
        assert any(victim.path in value for key, value in info.items() if key.startswith("warning"))
        for result in parse_job(io.BytesIO(httpx.get(job).content)).results[1:]:
            assert httpx.get(result.href).status_code == 200
    finally:
        server.stop()
