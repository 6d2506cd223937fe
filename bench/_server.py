"""Start and stop a real `siasync serve` process for the benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


class BenchServer:
    """A server process on a free loopback port; stopped by its PID."""

    def __init__(self, archive: Path, state: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = self.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "siasync", "serve", "--port", str(self.port), "--archive", str(archive),
             "--state-dir", str(state), *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, **(env or {})})
        for _ in range(600):
            try:
                if httpx.get(self.url + "/async?LAST=1", timeout=2).status_code < 500:  # 401 in header auth mode
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    @staticmethod
    def free_port() -> int:
        """A free port on loopback."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_mb(self) -> float:
        """Resident memory of the server process itself (workers not included)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(30)
