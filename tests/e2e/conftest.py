"""A real siasync server: `siasync serve` under uvicorn in a subprocess on a free loopback port."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from pyvo.io.uws import parse_job


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One server process over a state directory; restartable on the same directory and port."""

    def __init__(self, archive: Path, state_dir: Path, log: Path, *args: str,
                 env: dict[str, str] | None = None) -> None:
        self.archive, self.state_dir, self.log_path, self.args, self.env = archive, state_dir, log, args, env or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> Server:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "siasync", "serve", "--port", str(self.port), "--archive", str(self.archive),
                 "--state-dir", str(self.state_dir), *self.args],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + 60
        with httpx.Client(timeout=2) as client:  # one client: each new one costs tens of ms of CPU (SSL context)
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
                try:
                    if client.get(self.url + "/async").status_code < 500:
                        return self
                except httpx.TransportError:
                    time.sleep(0.1)
        raise RuntimeError("server did not start")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server's process group (by the PID we started) and wait for it."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, sig)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def submit(server: Server, **data: object) -> str:
    """POST /async with these parameters; return the new job's URL."""
    response = httpx.post(server.url + "/async", data=data, follow_redirects=False, timeout=30)
    assert response.status_code == 303, response.text
    assert response.headers["location"].startswith(server.url + "/async/")  # an absolute URL
    return response.headers["location"]


def assert_each_pair_once(final, archive: Path, positions: list[tuple[float, float]], size: float,
                          **filters: list[str]) -> list[str]:
    """The job listed one FITS product per (field, image) pair of the archive lookup, none twice; its ids.

    ``filters`` are the job's ``collections`` and ``bands``, when it had some.
    """
    from cutout.index import ArchiveIndex
    from cutout.sky import Field

    index = ArchiveIndex.load(archive)
    expected = {f"{i:05d}.{record.id}.fits" for i, (ra, dec) in enumerate(positions)
                for record in index.lookup(Field(ra, dec, size, size), **filters)}
    ids = [r.id_ for r in final.results if r.id_ != "table"]
    assert len(ids) == len(set(ids)) and set(ids) == expected
    return ids


def assert_files_are_the_products(state_dir: Path, job_id: str, ids: list[str], archive: Path,
                                  positions: list[tuple[float, float]], size: float, pixels_every: int = 1) -> None:
    """On disk: exactly the job's listed FITS products, no temporary or orphan file anywhere under the
    results, and each file a valid FITS image with the pixels of its parent, cut again here with `cutout`
    (for every ``pixels_every``-th file: a cut costs as much here as in the worker)."""
    import numpy as np
    from astropy.io import fits

    from cutout.engine import ParentImage, cut
    from cutout.index import ArchiveIndex
    from cutout.sky import Field

    results = state_dir / "results"
    assert sorted(p.name for p in results.iterdir()) == [job_id]  # no other job's directory
    directory = results / job_id
    assert sorted(p.name for p in directory.iterdir()) == sorted(ids)  # no .tmp-* file, no unlisted product
    index = ArchiveIndex.load(archive)
    parents: dict[str, ParentImage] = {}
    try:
        for number, name in enumerate(ids):
            field, image_id, _ = name.split(".", 2)
            with fits.open(directory / name) as hdul:
                hdul.verify("exception")
                assert hdul[0].header["PARENTID"] == image_id
                if number % pixels_every:
                    continue
                record = index.by_id[image_id]
                if image_id not in parents:
                    parents[image_id] = ParentImage(index.path_of(record), record.hdu, record.id, record.path)
                ra, dec = positions[int(field)]
                expected = cut(parents[image_id], Field(ra, dec, size, size))
                np.testing.assert_array_equal(hdul[0].data, expected.data, err_msg=name)
    finally:
        for parent in parents.values():
            parent.close()


def wait_final(url: str, timeout: float = 60):
    """Block with UWS WAIT until the job is in a final phase; return the job as pyvo parses it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = parse_job(io.BytesIO(httpx.get(url, params={"WAIT": "30"}, timeout=40).content))
        if job.phase in ("COMPLETED", "ERROR", "ABORTED"):
            return job
    raise AssertionError(f"{url} did not finish")


#: the worker backends the end-to-end tests run on: the local process pool and a Dask LocalCluster
EXECUTORS = ["local", "dask-local:2"]
#: for the tests of what no worker backend changes (the store, the scheduler's logic, serving files, the clients):
#: they run on the local pool only. The engine's tests (progressive results, abort, destroy, recovery, worker
#: faults) run on both.
LOCAL_ONLY = pytest.mark.parametrize("executor", ["local"], scope="module")


#: the e2e core (progressive results, abort, destroy, restart, the destroy races) runs on both stores: on SQLite
#: with every executor, and on PostgreSQL with the local pool (the store does not depend on the executor)
BOTH_STORES = pytest.mark.parametrize(("executor", "database"), [
    ("local", "sqlite"), ("dask-local:2", "sqlite"), ("local", "postgresql")], scope="module")
#: the same, for tests of what no executor changes
LOCAL_BOTH_STORES = pytest.mark.parametrize(("executor", "database"), [("local", "sqlite"), ("local", "postgresql")],
                                            scope="module")


@pytest.fixture(scope="module", params=EXECUTORS)
def executor(request: pytest.FixtureRequest) -> str:
    """The ``--executor`` of the servers a test starts."""
    return request.param


@pytest.fixture(scope="module")
def database() -> str:
    """The store of the servers a test starts: ``sqlite`` (in the state directory) unless a test asks for
    ``postgresql`` too (`BOTH_STORES`)."""
    return "sqlite"


@pytest.fixture(scope="module")
def store_args(database: str, request: pytest.FixtureRequest) -> tuple[str, ...]:
    """The ``--database-url`` of a new PostgreSQL database for a server, or nothing for SQLite."""
    if database == "sqlite":
        return ()
    return ("--database-url", request.getfixturevalue("new_database")())


@pytest.fixture
def server(tmp_path: Path, demo_archive: Path, executor: str, database: str,
           request: pytest.FixtureRequest) -> Iterator[Server]:
    args = () if database == "sqlite" else ("--database-url", request.getfixturevalue("new_database")())
    srv = Server(demo_archive, tmp_path / "state", tmp_path / "server.log", "--executor", executor, *args).start()
    try:
        yield srv
    finally:
        srv.stop()


@contextmanager
def serving(root: Path, archive: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Server]:
    """A server over a state directory under ``root``, stopped at the end; ``env``: more environment variables."""
    srv = Server(archive, root / "state", root / "server.log", *args, env=env).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def staging(tmp_path_factory: pytest.TempPathFactory, demo_archive: Path, executor: str,
            store_args: tuple[str, ...]) -> Iterator[Server]:
    """One server with two workers, shared by a module's tests."""
    with serving(tmp_path_factory.mktemp("staging"), demo_archive, "--workers", "2", "--executor", executor,
                 *store_args) as srv:
        yield srv
