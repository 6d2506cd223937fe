"""The guarded single node: a second server on a state directory already served (SQLite) refuses to start,
names the holder, and changes nothing; the guard goes with the process that held it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.e2e.conftest import Server, assert_each_pair_once, free_port, submit, wait_final
from tests.e2e.test_staging import grid


def serve(state_dir: Path, archive: Path) -> subprocess.CompletedProcess:
    """`siasync serve` run to its end (a refusal), with its output."""
    return subprocess.run([sys.executable, "-m", "siasync", "serve", "--port", str(free_port()), "--archive",
                           str(archive), "--state-dir", str(state_dir), "--workers", "1"],
                          capture_output=True, text=True, timeout=120)


def test_a_second_server_on_a_served_state_directory_refuses_and_changes_nothing(tmp_path: Path,
                                                                                 demo_archive: Path) -> None:
    server = Server(demo_archive, tmp_path / "state", tmp_path / "server.log", "--workers", "1").start()
    try:
        positions = grid(300)
        job = submit(server, POS=[f"{ra},{dec}" for ra, dec in positions], SIZE="0.01", BAND="r", PHASE="RUN")
        deadline = time.monotonic() + 60
        while httpx.get(job, headers={"Accept": "application/json"}).json()["jobInfo"].get("products", 0) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        refused = serve(tmp_path / "state", demo_archive)
        assert refused.returncode == 2, refused.stderr
        assert f"PID {server.process.pid} on host {socket.gethostname()}" in refused.stderr
        assert "already served" in refused.stderr and "Traceback" not in refused.stderr
        assert httpx.get(job + "/phase").text == "EXECUTING"  # not requeued, not touched
        final = wait_final(job, timeout=180)
        assert final.phase == "COMPLETED"
        assert_each_pair_once(final, demo_archive, positions, 0.01, bands=["r"])
        os.kill(server.process.pid, signal.SIGKILL)  # the server alone: no clean release of anything
        server.process.wait(10)
        server.start()  # the lock went with the process: no stale file keeps the directory
        assert httpx.get(job + "/phase").text == "COMPLETED"
    finally:
        server.stop()
