"""``siasync fetch``, ``siasync jobs`` and the Python client against a real server with the real process pool."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from astropy.io import fits
from astropy.io.votable import parse_single_table

from siasync.client import AsyncClient, Client, Product
from tests.e2e.conftest import Server, serving, submit, wait_final

SIZE = 0.01


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, demo_archive: Path) -> Iterator[Server]:
    """One server on the local pool with two workers: the client is the same on every backend."""
    with serving(tmp_path_factory.mktemp("fetch"), demo_archive, "--workers", "2") as srv:
        yield srv


def positions(n: int, seed: int) -> list[tuple[float, float]]:
    """n fields inside DEMO-WIDE."""
    rng = np.random.default_rng(seed)
    return [(150.1 + rng.uniform(-0.5, 0.5), 2.2 + rng.uniform(-0.5, 0.5)) for _ in range(n)]


def pos_args(fields: list[tuple[float, float]]) -> list[str]:
    return [arg for ra, dec in fields for arg in ("--pos", f"{ra:.6f},{dec:.6f}")]


def start_fetch(*args: str) -> subprocess.Popen:
    """``siasync fetch`` in its own process group (so the test can kill exactly it)."""
    return subprocess.Popen([sys.executable, "-m", "siasync", "fetch", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def finish(process: subprocess.Popen, timeout: float = 180) -> tuple[str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        raise AssertionError(f"siasync fetch did not finish:\n{err[-3000:]}") from None
    assert process.returncode == 0, err[-3000:]
    return out, err


def fetch_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "siasync", *args], capture_output=True, text=True, timeout=180)


def files_in(out: Path) -> set[str]:
    """The final-named files (hidden names are the client's bookkeeping and temporary files)."""
    return {p.name for p in out.iterdir() if not p.name.startswith(".")} if out.is_dir() else set()


def wait_for(predicate, process: subprocess.Popen, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)
    return found


def listed_sizes(job_url: str, names: set[str], timeout: float = 30.0) -> dict[str, int]:
    """The listed size of each product, once the job document lists ``names`` (it may lag up to 0.5 s)."""
    deadline = time.monotonic() + timeout
    while True:
        doc = httpx.get(job_url, headers={"Accept": "application/json"}, timeout=30).json()
        sizes = {r["id"]: r["size"] for r in doc["results"]}
        if names <= sizes.keys() or time.monotonic() > deadline:
            return sizes
        time.sleep(0.1)


def assert_valid(out: Path, listed: dict[str, int]) -> None:
    """Exactly one complete file per listed product (and the table); every FITS opens."""
    assert files_in(out) == {*listed, "table.xml"}
    assert not [p.name for p in out.iterdir() if p.name.endswith(".part")]
    for name, size in listed.items():
        assert (out / name).stat().st_size == size, name
        if name.endswith(".fits"):
            with fits.open(out / name) as hdul:
                hdul.verify("exception")
                assert hdul[0].data.ndim == 2


def test_fetch_downloads_each_result_while_the_job_runs(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "out"
    process = start_fetch(server.url, *pos_args(positions(200, seed=1)), "--size", str(SIZE), "--out", str(out),
                          "--delete")
    job_url = wait_for(lambda: (out / ".siasync-job").is_file() and (out / ".siasync-job").read_text().strip(),
                       process)
    first = wait_for(lambda: files_in(out), process)
    assert httpx.get(job_url + "/phase", timeout=30).text == "EXECUTING"  # a file complete on disk, mid-job
    stdout, stderr = finish(process)
    table = parse_single_table(out / "table.xml").to_table()
    listed = dict(zip(table["result_id"], map(int, table["filesize"]), strict=True))
    assert len(listed) == len(table) > 200 and first <= set(listed)
    assert_valid(out, listed)
    assert stdout.startswith(f"fetched {len(listed)} files ({len(listed)} downloaded), ")
    assert f"job {job_url.rsplit('/', 1)[-1]} COMPLETED; table in {out / 'table.xml'}" in stdout
    lines = stderr.splitlines()  # not a terminal: a log line every 2 s and at each phase change
    assert any(line.endswith("| EXECUTING") for line in lines) and lines[-2].endswith("| COMPLETED")
    assert lines[-1] == f"deleted job {job_url}"
    assert httpx.get(job_url, timeout=30).status_code == 404  # --delete destroyed it


def test_a_killed_fetch_resumes_with_exactly_one_file_per_result(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "out"
    process = start_fetch(server.url, *pos_args(positions(200, seed=2)), "--size", str(SIZE), "--format", "ALL",
                          "--band", "r", "--out", str(out))
    wait_for(lambda: len(files_in(out)) >= 40, process)
    os.killpg(process.pid, signal.SIGKILL)  # the client's own process group, by the PID we started
    process.wait(30)
    job_url = (out / ".siasync-job").read_text().strip()
    killed = files_in(out) - {"table.xml"}
    assert httpx.get(job_url + "/phase").text == "EXECUTING"  # the client died mid-job
    sizes = listed_sizes(job_url, killed)
    assert all((out / name).stat().st_size == sizes[name] for name in killed)  # nothing partial under a final name

    result = fetch_cli("fetch", "--job", job_url, "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    final = wait_final(job_url)
    assert final.phase == "COMPLETED"
    listed = {r.id_: int(r.size) for r in final.results if r.id_ != "table"}
    assert_valid(out, listed)
    found = len(killed)
    assert f"({len(listed) - found} downloaded, {found} already complete)" in result.stdout
    rows = parse_single_table(out / "table.xml").to_table()
    assert sorted(rows["result_id"]) == sorted(listed)


def test_fetch_errors_are_one_line_and_jobs_lists_each_job(server: Server, tmp_path: Path) -> None:
    missing = fetch_cli("fetch", "--job", f"{server.url}/async/nosuchjob", "--out", str(tmp_path / "a"))
    assert missing.returncode == 1
    assert missing.stderr.splitlines()[-1].startswith("siasync: error: NotFound: ")
    bad = fetch_cli("fetch", server.url, "--pos", "150.1,2.2", "--size=-1", "--out", str(tmp_path / "b"))
    assert bad.returncode == 2 and "argument --size: the size must be positive, got '-1'" in bad.stderr

    job = submit(server, POS=["150.1,2.2", "150.2,2.3"], SIZE="0.01", PHASE="RUN")
    wait_final(job)
    listing = fetch_cli("jobs", server.url, "--phase", "completed")
    assert listing.returncode == 0, listing.stderr
    line = next(line for line in listing.stdout.splitlines() if line.startswith(job.rsplit("/", 1)[-1] + " "))
    assert " COMPLETED " in line and " fields 2/2 " in line and " products " in line and " created 20" in line


def test_the_python_client_streams_products_as_they_are_made(server: Server, tmp_path: Path) -> None:
    with Client(server.url) as client:
        job = client.submit(pos=positions(30, seed=3), size=SIZE, band=["r"])
        products = list(job.stream())
        status = job.info()
        assert status.phase == "COMPLETED"
        assert [p.id for p in products] == [p.id for p in status.results]
        assert all(isinstance(p, Product) and p.field is not None and p.size for p in products)
        path = job.download(products[0], tmp_path)
        assert path.stat().st_size == products[0].size

    async def again() -> list[str]:
        async with AsyncClient(server.url) as aclient:
            return [p.id async for p in aclient.job(job.url).stream()]

    assert asyncio.run(again()) == [p.id for p in products]  # a finished job: its products, then the end


def test_fetch_uploads_a_positions_file(server: Server, tmp_path: Path) -> None:
    fields = tmp_path / "fields.csv"
    fields.write_text("ra,dec\n150.1,2.2\n150.3,2.4\n150.05,2.15\n")
    out = tmp_path / "out"
    result = fetch_cli("fetch", server.url, "--positions", str(fields), "--size", str(SIZE), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    final = wait_final((out / ".siasync-job").read_text().strip())
    listed = {r.id_: int(r.size) for r in final.results if r.id_ != "table"}
    assert {int(name.split(".")[0]) for name in listed} == {0, 1, 2}  # one field per row
    assert_valid(out, listed)

    fields.write_text("name\nm31\n")
    bad = fetch_cli("fetch", server.url, "--positions", str(fields), "--size", str(SIZE), "--out", str(tmp_path / "b"))
    assert bad.returncode == 1 and bad.stderr.startswith("siasync: error: UsageError: UPLOAD: ")


def test_each_result_is_served_with_its_sha256_and_a_changed_file_is_never_saved(server: Server,
                                                                                 tmp_path: Path) -> None:
    """The SHA-256 recorded at registration is the file's (hashlib over the file on disk), served as ETag, Digest and
    Repr-Digest on whole and partial answers; a bit flipped on disk afterwards keeps that checksum, so ``siasync
    fetch`` sees the bytes differ, retries, and never saves them under the final name."""
    job_url = submit(server, POS=["150.1,2.2", "150.3,2.4"], SIZE=str(SIZE), PHASE="RUN")
    final = wait_final(job_url)
    names = sorted(r.id_ for r in final.results if r.id_ != "table")
    files = server.state_dir / "results" / job_url.rsplit("/", 1)[-1]
    for name in names:
        digest = hashlib.sha256((files / name).read_bytes()).digest()
        whole = httpx.get(f"{job_url}/results/{name}", timeout=30)
        part = httpx.get(f"{job_url}/results/{name}", headers={"Range": "bytes=0-99"}, timeout=30)
        assert hashlib.sha256(whole.content).digest() == digest
        assert whole.headers["etag"] == part.headers["etag"] == f'"sha256-{digest.hex()}"'
        assert whole.headers["digest"] == part.headers["digest"] == f"sha-256={base64.b64encode(digest).decode()}"
        assert whole.headers["repr-digest"] == f"sha-256=:{base64.b64encode(digest).decode()}:"
        assert part.status_code == 206 and len(part.content) == 100
    flipped = files / names[0]
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x01
    flipped.write_bytes(bytes(data))

    out = tmp_path / "out"
    result = fetch_cli("fetch", "--job", job_url, "--out", str(out))
    assert result.returncode == 1, result.stdout + result.stderr[-3000:]
    assert f"{names[0]}: the SHA-256 of the {len(data)} bytes received is {hashlib.sha256(data).hexdigest()}" \
           in result.stderr, result.stderr[-3000:]
    assert files_in(out) == {*names[1:], "table.xml"}  # every other file, and never the changed one
    assert not any(names[0] in p.name for p in out.iterdir())  # not even a part
