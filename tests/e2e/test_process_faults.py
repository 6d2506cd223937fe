"""Faults around the server: a full results disk, and a server killed under its workers."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Server, assert_each_pair_once, assert_files_are_the_products, submit, wait_final


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


def test_workers_exit_when_the_server_is_killed(tmp_path: Path, demo_archive: Path, executor: str) -> None:
    server = Server(demo_archive, tmp_path / "state", tmp_path / "log", "--executor", executor).start()
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
                                                                   small_disk: Path, executor: str) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}"  # the store stays on a roomy disk
    server = Server(demo_archive, small_disk, tmp_path / "log", "--database-url", database,
                    "--executor", executor).start()
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


def cpu_seconds(pid: int) -> float:
    fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_worker_killed_mid_job_loses_nothing_and_makes_nothing_twice(server: Server, demo_archive: Path) -> None:
    positions = [(150.1 + 0.004 * (i % 25), 2.2 + 0.004 * (i // 25)) for i in range(100)]
    job = submit(server, POS=[f"{ra},{dec}" for ra, dec in positions], SIZE="0.03", PHASE="RUN")
    deadline = time.monotonic() + 60
    while httpx.get(job, headers={"Accept": "application/json"}).json()["jobInfo"].get("products", 0) < 10:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # the workers: the server's processes but for multiprocessing's helpers, the resource tracker
    # and the forkserver (a child of the server; local workers are its children, while Dask's
    # nannies run inside the server and spawn their workers directly)
    def helper(pid: int) -> bool:
        command = (Path("/proc") / str(pid) / "cmdline").read_text()
        parent = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        return "resource_tracker" in command or ("forkserver" in command and parent == server.process.pid)

    workers = [pid for pid in session_members(server.process.pid) if pid != server.process.pid and not helper(pid)]
    busiest = max(workers, key=cpu_seconds)
    os.kill(busiest, signal.SIGKILL)
    # what a worker killed between writing and renaming leaves (too brief a moment to hit by chance)
    (server.state_dir / "results" / job.rsplit("/", 1)[-1] / ".tmp-killed-mid-write").write_bytes(b"SIMPLE  =")
    final = wait_final(job, timeout=180)
    assert final.phase == "COMPLETED"
    ids = assert_each_pair_once(final, demo_archive, positions, 0.03)
    assert httpx.get(job + "/results/table").text.count("<TR>") == len(ids)
    assert_files_are_the_products(server.state_dir, job.rsplit("/", 1)[-1], ids, demo_archive, positions, 0.03)
