"""Faults around the server: a full disk, and a server killed under its workers, or a worker alone."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import time
import warnings
from pathlib import Path

import httpx
from pyvo.io.uws import parse_job

from tests.e2e.conftest import Server, assert_each_pair_once, assert_files_are_the_products, submit, wait_final
from tests.e2e.test_staging import grid


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


class SmallDisk:
    """A state directory on a 16 MB tmpfs, filled and freed with a filler file.

    Where no tmpfs can be mounted (not root), ``injected``: the state directory is an
    ordinary one, and the server loads tests/e2e/full_disk/sitecustomize.py, which makes
    result and job store writes fail as on a full disk while a flag file exists.
    """

    SIZE = "16m"

    def __init__(self, root: Path, injected: bool = False) -> None:
        self.mount, self.filler, self.env, self.mounted = root / "small", root / "small" / "filler", {}, False
        self.mount.mkdir()
        if not injected:
            try:
                done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.SIZE}", "tmpfs", str(self.mount)],
                                      capture_output=True, text=True)
                self.mounted, why = done.returncode == 0, done.stderr.strip()
            except OSError as exc:  # no mount command at all
                why = str(exc)
            if not self.mounted:
                warnings.warn(f"no tmpfs here ({why}): a full disk is injected at the storage layer")
        if not self.mounted:
            shim = str(Path(__file__).parent / "full_disk")
            self.env = {"SIASYNC_TEST_FULL_DISK": str(self.filler),
                        "PYTHONPATH": os.pathsep.join(filter(None, [shim, os.environ.get("PYTHONPATH")]))}
        self.state_dir = self.mount / "state"

    def fill(self) -> None:
        """Take every free byte (or raise the flag)."""
        with open(self.filler, "wb", buffering=0) as filler:
            if self.mounted:
                with contextlib.suppress(OSError):  # ENOSPC: full
                    while True:
                        filler.write(bytes(1 << 16))

    def free(self) -> None:
        """Space returns."""
        self.filler.unlink()

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.mount)], capture_output=True)


def registered(job: str) -> list:
    return [r for r in parse_job(io.BytesIO(httpx.get(job, timeout=30).content)).results if r.id_ != "table"]


def a_full_disk_moves_the_job_to_error_and_the_server_goes_on(disk: SmallDisk, demo_archive: Path, log: Path,
                                                              executor: str) -> None:
    # one job runner: a runner lost to a failed write would stop every later job
    server = Server(demo_archive, disk.state_dir, log, "--workers", "2", "--executor", executor,
                    env={"SIASYNC_RUNNING_JOBS": "1", **disk.env})
    server.start()
    try:
        job = submit(server, POS=[f"{ra},{dec}" for ra, dec in grid(40)], SIZE="0.1", PHASE="RUN")  # 0.5 MB each
        deadline = time.monotonic() + 60
        while len(registered(job)) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        disk.fill()
        kept = {r.id_: httpx.get(r.href).content for r in registered(job)}
        assert httpx.get(server.url + "/async").status_code == 200  # still serving, the job included
        assert httpx.get(job, headers={"Accept": "application/json"}).status_code == 200
        refused = httpx.post(server.url + "/async", data={"POS": "150.1,2.2", "SIZE": "0.01", "PHASE": "RUN"})
        if refused.status_code != 303:  # the store could not take the job: a clear 503, not a 500
            assert refused.status_code == 503 and "disk is full" in refused.text, refused.text
        time.sleep(1.0)  # the job meets the full disk
        disk.free()
        final = wait_final(job, timeout=60)  # an error the full store could not record is recorded now
        assert final.phase == "ERROR"
        assert "disk is full" in final.errorsummary.message.content
        listed = {r.id_: r for r in final.results if r.id_ != "table"}
        assert set(kept) <= set(listed)
        for result in listed.values():  # registered before the disk filled: intact, and listed with their files
            assert httpx.get(result.href).status_code == 200
        assert all(httpx.get(listed[name].href).content == data for name, data in kept.items())
        assert httpx.get(job + "/results/table").text.count("<TR>") == len(listed)
        directory = disk.state_dir / "results" / job.rsplit("/", 1)[-1]
        assert {p.name for p in directory.iterdir()} == set(listed)  # no temporary, no unregistered file
        if refused.status_code == 303:
            assert wait_final(refused.headers["location"]).phase in ("ERROR", "COMPLETED")
        again = wait_final(submit(server, POS="150.1,2.2", SIZE="0.01", PHASE="RUN"))  # space returned
        assert again.phase == "COMPLETED" and len(again.results) > 1
    finally:
        server.stop()


def test_a_full_disk_moves_the_job_to_error_and_the_server_goes_on(tmp_path: Path, demo_archive: Path,
                                                                   executor: str) -> None:
    """On a small tmpfs for the local pool. With Dask, and wherever no tmpfs can be mounted (with a warning
    saying so), the full disk is injected at the storage layer: the fallback is exercised here too."""
    disk = SmallDisk(tmp_path, injected=executor != "local")
    try:
        a_full_disk_moves_the_job_to_error_and_the_server_goes_on(disk, demo_archive, tmp_path / "log", executor)
    finally:
        disk.unmount()


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
    assert_files_are_the_products(server.state_dir, job.rsplit("/", 1)[-1], ids, demo_archive, positions, 0.03,
                                  pixels_every=10)
