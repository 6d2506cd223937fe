"""Faults around the server: a full results disk, and a server killed under its workers."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Server, submit, wait_final


def session_members(sid: int) -> list[int]:
    """PIDs of live processes in a session (read from /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def test_workers_exit_when_the_server_is_killed(tmp_path: Path, demo_archive: Path) -> None:
    server = Server(demo_archive, tmp_path / "state", tmp_path / "log").start()
    sid = server.process.pid  # the server leads its own session
    try:
        positions = [f"{150.1 + 0.004 * (i % 25)},{2.2 + 0.004 * (i // 25)}" for i in range(150)]
        submit(server, POS=positions, SIZE="0.03", PHASE="RUN")
        time.sleep(1.0)
        assert len(session_members(sid)) >= 3  # the server, the forkserver and workers
        os.kill(server.process.pid, signal.SIGKILL)  # the server alone, not its group
        server.process.wait(10)
        deadline = time.monotonic() + 10
        while session_members(sid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert session_members(sid) == []
    finally:
        for pid in session_members(sid):  # never leave workers behind, whatever happened
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def small_disk(tmp_path: Path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_moves_the_job_to_error_and_the_server_goes_on(tmp_path: Path, demo_archive: Path,
                                                                   small_disk: Path) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}"  # the store stays on a roomy disk
    server = Server(demo_archive, small_disk, tmp_path / "log", "--database-url", database).start()
    try:
        job = submit(server, POS=["150.1,2.2", "150.3,2.4"], SIZE="0.25", PHASE="RUN")
        final = wait_final(job)
        assert final.phase == "ERROR"
        assert "disk is full" in final.errorsummary.message.content
        kept = [r for r in final.results if r.id_ != "table"]
        for result in kept:  # what was registered before the disk filled is intact
            assert httpx.get(result.href).status_code == 200
        assert httpx.get(server.url + "/async").status_code == 200  # still serving
        httpx.delete(job)  # space returns
        assert wait_final(submit(server, POS="150.1,2.2", SIZE="0.01", PHASE="RUN")).phase == "COMPLETED"
    finally:
        server.stop()
