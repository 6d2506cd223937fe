"""Several servers on one machine: two replicas, a proxy, a Dask scheduler and two workers, on loopback.

``make replicas`` runs this: the deployment the README describes, in miniature. It starts

* a PostgreSQL server (`deploy.postgres`), unless ``--database-url`` names one;
* a Dask scheduler and ``--dask-workers`` workers (one single-threaded process each);
* ``--replicas`` siasync servers on that database, that cluster and one state directory;
* the round-robin proxy (`deploy.proxy`) in front of them on ``--port``,

writes what it started to ``ROOT/processes.json`` (URLs, ports, PIDs), and watches: a
Dask scheduler or worker that exits is started again ``--restart-after`` seconds later,
as a service manager would (Dask workers exit when their scheduler is lost). Ctrl-C or
SIGTERM stops everything, in the reverse order.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from deploy.postgres import Postgres

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A command we run, restartable, in a process group of its own, logging to a file."""

    def __init__(self, name: str, command: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.command, self.log, self.env = name, command, log, env or {}
        self.popen: subprocess.Popen | None = None
        self.exited_at: float | None = None

    def start(self) -> Process:
        with open(self.log, "ab") as log:
            self.popen = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                          env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env}, cwd=REPO)
        self.exited_at = None
        return self

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)


def wait_http(url: str, timeout: float = 120) -> None:
    """Until ``url`` answers (any status below 500)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO / "var-replicas", help="state, logs and the database")
    parser.add_argument("--archive", type=Path, default=REPO / "data" / "demo")
    parser.add_argument("--port", type=int, default=8000, help="the proxy's port, the service's address")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--dask-workers", type=int, default=2)
    parser.add_argument("--database-url", help="a PostgreSQL database to use instead of starting a server")
    parser.add_argument("--restart-after", type=float, default=2.0,
                        help="seconds before a Dask scheduler or worker that exited is started again")
    args = parser.parse_args(argv)
    if args.database_url is None:  # a new database each time: so is the state that goes with it
        shutil.rmtree(args.root / "state", ignore_errors=True)
    args.root.mkdir(parents=True, exist_ok=True)
    logs = args.root / "logs"
    logs.mkdir(exist_ok=True)
    started: list[Process] = []
    database = None

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        if args.database_url is None:
            database = Postgres(fast=False).start()
        url = args.database_url or database.url()
        scheduler_port = free_port()
        scheduler_address = f"tcp://127.0.0.1:{scheduler_port}"
        dask = [Process("dask-scheduler", [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1",
                                           "--port", str(scheduler_port), "--no-dashboard"], logs / "scheduler.log")]
        dask += [Process(f"dask-worker-{i}", [sys.executable, "-m", "dask", "worker", scheduler_address, "--nthreads",
                                              "1", "--nworkers", "1", "--no-dashboard", "--name", f"worker-{i}"],
                         logs / f"worker-{i}.log") for i in range(args.dask_workers)]
        for process in dask:
            started.append(process.start())
        ports = [free_port() for _ in range(args.replicas)]
        servers = [Process(f"siasync-{i}", [sys.executable, "-m", "siasync", "serve", "--port", str(port),
                                            "--archive", str(args.archive), "--state-dir", str(args.root / "state"),
                                            "--database-url", url, "--executor", f"dask://127.0.0.1:{scheduler_port}"],
                           logs / f"siasync-{i}.log") for i, port in enumerate(ports)]
        for server in servers:
            started.append(server.start())
        for port in ports:
            wait_http(f"http://127.0.0.1:{port}/availability")
        proxy = Process("proxy", [sys.executable, "-m", "deploy.proxy", str(args.port),
                                  *(f"http://127.0.0.1:{p}" for p in ports)], logs / "proxy.log")
        started.append(proxy.start())
        wait_http(f"http://127.0.0.1:{args.port}/availability")
        described = {"url": f"http://127.0.0.1:{args.port}", "database": url, "proxy": proxy.pid,
                     "servers": [{"url": f"http://127.0.0.1:{p}", "pid": s.pid} for p, s in zip(ports, servers,
                                                                                               strict=True)],
                     "scheduler": {"address": scheduler_address}, "postgres": database and database.process.pid}

        def write() -> None:
            described["scheduler"]["pid"] = dask[0].pid
            described["workers"] = [w.pid for w in dask[1:]]
            (args.root / "processes.json").write_text(json.dumps(described, indent=1))

        write()
        print(f"siasync at http://127.0.0.1:{args.port}/ ({args.replicas} replicas, Dask at {scheduler_address}, "
              f"{args.dask_workers} workers); logs in {os.path.relpath(logs)}; Ctrl-C stops everything", flush=True)
        while True:  # a service manager's job: start again what exited
            time.sleep(0.2)
            for process in dask:
                if process.popen.poll() is None:
                    continue
                if process.exited_at is None:
                    process.exited_at = time.monotonic()
                    print(f"{process.name} exited ({process.popen.returncode}); starting it again in "
                          f"{args.restart_after} s", flush=True)
                elif time.monotonic() - process.exited_at >= args.restart_after:
                    process.start()
                    write()
    except KeyboardInterrupt:
        pass
    finally:
        for process in reversed(started):
            process.stop()
        if database is not None:
            database.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
