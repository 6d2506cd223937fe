"""The client against a fake service (httpx.MockTransport): SSE, polling, resume, atomic files, errors, uploads."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from collections.abc import AsyncIterator, Callable
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from siasync.cli import build_parser, main
from siasync.client import (
    AsyncClient,
    Client,
    ClientError,
    FetchProgress,
    Product,
    Progress,
    ProgressPrinter,
    ServiceError,
    TransferError,
    _async,
    _follow,
)
from siasync.client._files import ETAG_FILE, STATE_FILE, Output, safe_name
from siasync.client._sse import SSEDecoder
from siasync.client.commands import fetch_command, job_line, jobs_command

BASE = "http://svc.test"
JOB = f"{BASE}/async/j1"
TABLE = b'<?xml version="1.0"?><VOTABLE version="1.4"><RESOURCE type="results"/></VOTABLE>'


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries, reconnections and polls go on at once."""
    monkeypatch.setattr(_async, "BACKOFF", 0.0)
    for name in ("RECONNECT", "POLL_MIN", "POLL_MAX"):
        monkeypatch.setattr(_follow, name, 0.0)


def sse(event: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def body(i: int) -> bytes:
    return bytes([i]) * (100 + i)


class Fake:
    """A siasync job ``j1`` with products ``0000i.img.fits``; records every request."""

    def __init__(self, n: int = 4, sized: bool = True) -> None:
        self.files = {f"{i:05d}.img.fits": body(i) for i in range(n)}
        self.sized = sized
        self.phase = "EXECUTING"
        self.requests: list[httpx.Request] = []
        #: the chunks each successive events connection sends (an exception breaks the stream there)
        self.streams: list[list[bytes | Exception]] = []
        #: the statuses of the next events connections (then 200)
        self.events_statuses: list[int] = []
        self.events_missing = False  # the service has no events endpoint
        #: how many products successive job documents list (the last repeats); they are final at the end
        self.listed: list[int] = [n]
        self.broken: dict[str, list[bytes | Exception]] = {}  # result id -> chunks of its next download
        self.create_error: httpx.Response | None = None
        self.sizes: dict[str, int] = {}  # listed sizes that differ from the files served

    def item(self, result_id: str) -> dict[str, Any]:
        size = self.sizes.get(result_id, len(self.files[result_id])) if self.sized else None
        return {"id": result_id, "href": f"{JOB}/results/{result_id}", "mime-type": "image/fits", "size": size}

    def result_event(self, i: int) -> bytes:
        result_id = list(self.files)[i]
        return sse("result", {**self.item(result_id), "field": i}, i + 1)

    def full_stream(self, start: int = 0) -> list[bytes | Exception]:
        return [sse("phase", {"phase": "EXECUTING"}), *(self.result_event(i) for i in range(start, len(self.files))),
                sse("progress", {"fields_done": len(self.files), "fields_total": len(self.files)}),
                sse("phase", {"phase": "COMPLETED"})]

    def doc(self) -> dict[str, Any]:
        count = self.listed.pop(0) if len(self.listed) > 1 else self.listed[0]
        phase = "COMPLETED" if not self.listed[1:] and count == len(self.files) else "EXECUTING"
        results = [{"id": "table", "href": f"{JOB}/results/table", "size": None, "mime-type": "text/xml"}]
        results += [self.item(r) for r in list(self.files)[:count]]
        return {"jobId": "j1", "phase": phase, "ownerId": "anonymous", "creationTime": "2026-01-01T00:00:00.000Z",
                "results": results, "errorSummary": None, "parameters": [{"id": "pos", "value": "1,2"}],
                "jobInfo": {"fields_total": len(self.files), "fields_done": count, "products": count}}

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path, method = request.url.path, request.method
        if method == "POST" and path == "/async":
            return self.create_error or httpx.Response(303, headers={"Location": "/async/j1"})
        if method == "GET" and path == "/async":
            return httpx.Response(200, json=[{"jobId": "j1", "href": JOB, "phase": "COMPLETED", "runId": None,
                                              "ownerId": "anonymous", "creationTime": "2026-01-01T00:00:00.000Z"}])
        if path == "/async/j1" and method == "DELETE":
            return httpx.Response(303, headers={"Location": "/async"})
        if path == "/async/j1":
            return httpx.Response(200, json=self.doc())
        if path == "/async/j1/phase":
            return httpx.Response(200 if method == "GET" else 303, text=self.phase,
                                  headers={"Location": "/async/j1"})
        if path == "/async/j1/events":
            status = 404 if self.events_missing else self.events_statuses.pop(0) if self.events_statuses else 200
            if status != 200:
                return httpx.Response(status, text=f"Error: HTTP {status}", headers={"Content-Type": "text/plain"})
            chunks = self.streams.pop(0) if self.streams else self.full_stream()
            return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, content=_stream(chunks))
        if path == "/async/j1/results/table":
            return httpx.Response(200, content=TABLE)
        result_id = path.rsplit("/", 1)[-1]
        if result_id not in self.files:
            return httpx.Response(404, text=f"NotFound: no result {result_id!r}",
                                  headers={"Content-Type": "text/plain"})
        etag = f'"{result_id}-v1"'
        if request.headers.get("if-none-match") == etag:
            return httpx.Response(304, headers={"ETag": etag})
        if result_id in self.broken:
            return httpx.Response(200, headers={"ETag": etag}, content=_stream(self.broken.pop(result_id)))
        return httpx.Response(200, headers={"ETag": etag}, content=self.files[result_id])

    def gets(self, suffix: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "GET" and r.url.path.endswith(suffix)]

    def client(self, token: str | None = None) -> AsyncClient:
        return AsyncClient(BASE, token, transport=httpx.MockTransport(self.handler))


async def _stream(chunks: list[bytes | Exception]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        if isinstance(chunk, Exception):
            raise chunk
        yield chunk


def run(coro_fn: Callable[[AsyncClient], Any], fake: Fake) -> Any:
    async def go() -> Any:
        async with fake.client() as client:
            return await coro_fn(client)
    return asyncio.run(go())


async def collect(client: AsyncClient, updates: bool = False) -> list[Any]:
    job = client.job(JOB)
    return [u async for u in (job.updates() if updates else job.stream())]


# --- the SSE decoder -----------------------------------------------------------------------------------------------

def test_sse_decoder_follows_the_event_stream_rules() -> None:
    decoder = SSEDecoder()
    lines = [": keep-alive", "retry: 1500", "id: 7", "event: result", "data: {\"a\":", "data:1}", "",
             "data: plain", "", "id: 8", "event: phase", "",  # no data: nothing is dispatched, the id is kept
             "id: bad\0id", "data:x", ""]
    events = [e for e in map(decoder.decode, lines) if e is not None]
    assert [(e.event, e.data, e.id) for e in events] == [
        ("result", '{"a":\n1}', "7"), ("message", "plain", "7"), ("message", "x", "8")]
    assert decoder.last_event_id == "8" and decoder.retry == 1500


# --- following a job: SSE, reconnection, polling -----------------------------------------------------------------

def test_stream_yields_each_product_with_its_field_and_ends_when_the_job_is_final() -> None:
    fake = Fake(3)
    stream = fake.full_stream()
    stream.insert(2, b": keep-alive\r\ndata: \r\n\r\n")  # Litestar's keep-alive is also an empty message
    fake.streams = [stream]
    products = run(collect, fake)
    assert [(p.id, p.field, p.size, p.mime_type) for p in products] == [
        (f"{i:05d}.img.fits", i, 100 + i, "image/fits") for i in range(3)]
    assert len(fake.gets("/events")) == 1


def test_a_broken_stream_is_resumed_with_last_event_id_and_nothing_is_yielded_twice() -> None:
    fake = Fake(4)
    head = fake.full_stream()[:3]  # phase, results 1 and 2
    fake.streams = [[*head, httpx.ReadError("connection reset")],
                    [head[0], fake.result_event(1), b"event: result\ndata: {\"id\": \"00002.img"],  # cut mid-event
                    fake.full_stream(start=1)]  # this server re-sends result 2: it must not be yielded twice
    updates = run(lambda c: collect(c, updates=True), fake)
    products = [u for u in updates if isinstance(u, Product)]
    assert [p.id for p in products] == list(fake.files)
    assert [r.headers.get("last-event-id") for r in fake.gets("/events")] == [None, "2", "2"]
    assert updates[-1] == Progress("COMPLETED", {"fields_done": 4, "fields_total": 4})


def test_without_an_events_endpoint_the_job_is_polled() -> None:
    fake = Fake(5)
    fake.events_missing = True
    fake.listed = [0, 2, 2, 5]
    updates = run(lambda c: collect(c, updates=True), fake)
    assert [u.id for u in updates if isinstance(u, Product)] == list(fake.files)
    progress = [u for u in updates if isinstance(u, Progress)]
    assert [p.fields_done for p in progress] == [0, 2, 5] and progress[-1].phase == "COMPLETED"
    assert all(r.headers["accept"] == "application/json" for r in fake.gets("/async/j1"))


def test_a_stream_that_keeps_failing_falls_back_to_polling() -> None:
    fake = Fake(3)
    fake.streams = [[sse("phase", {"phase": "EXECUTING"}), fake.result_event(0), httpx.ReadError("reset")],
                    *([httpx.RemoteProtocolError("peer closed")] for _ in range(_follow.SSE_RETRIES))]
    fake.listed = [1, 3]
    products = run(collect, fake)
    assert [p.id for p in products] == list(fake.files)  # the first came by SSE, the others by polling
    assert len(fake.gets("/events")) == 1 + _follow.SSE_RETRIES  # the first connection, then the retries


def test_a_stream_refused_with_503_is_retried_and_malformed_events_are_errors() -> None:
    fake = Fake(2)
    fake.events_statuses = [503, 502]
    assert [p.id for p in run(collect, fake)] == list(fake.files)
    assert len(fake.gets("/events")) == 3

    fake = Fake(2)
    fake.streams = [[b"event: result\ndata: not json\n\n"]]
    with pytest.raises(ClientError, match="^the event stream sent malformed data: 'not json'$"):
        run(collect, fake)


def test_following_a_job_that_is_gone_raises_its_not_found() -> None:
    fake = Fake(1)
    fake.events_missing = True

    def gone(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/async/j1":
            return httpx.Response(404, text="NotFound: no job 'j1'\n", headers={"Content-Type": "text/plain"})
        return fake.handler(request)

    async def go() -> None:
        async with AsyncClient(BASE, transport=httpx.MockTransport(gone)) as client:
            await collect(client)

    with pytest.raises(ServiceError) as caught:
        asyncio.run(go())
    assert caught.value.status == 404 and str(caught.value) == "NotFound: no job 'j1' (GET http://svc.test/async/j1)"


# --- fetching: resume, atomic files --------------------------------------------------------------------------------

def fetch_into(fake: Fake, out: Path, **kwargs: Any) -> FetchProgress:
    return run(lambda c: c.job(JOB).fetch(out, **kwargs), fake)


def listing(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir())


def test_fetch_downloads_every_product_and_the_table(tmp_path: Path) -> None:
    fake = Fake(4)
    seen: list[int] = []
    state = fetch_into(fake, tmp_path / "out", progress=lambda p: seen.append(p.files))
    out = tmp_path / "out"
    assert listing(out) == sorted([*fake.files, "table.xml", STATE_FILE])
    assert all((out / name).read_bytes() == data for name, data in fake.files.items())
    assert (out / "table.xml").read_bytes() == TABLE and (out / STATE_FILE).read_text() == JOB + "\n"
    assert (state.files, state.downloaded, state.skipped, state.phase) == (4, 4, 0, "COMPLETED")
    assert state.bytes == sum(map(len, fake.files.values())) and seen[-1] == 4
    assert (state.fields_done, state.fields_total, state.failures) == (4, 4, [])


def test_a_resumed_fetch_skips_complete_files_and_replaces_partial_ones(tmp_path: Path) -> None:
    fake = Fake(4)
    out = tmp_path / "out"
    out.mkdir()
    (out / STATE_FILE).write_text(JOB + "\n")
    names = list(fake.files)
    (out / names[0]).write_bytes(fake.files[names[0]])  # complete
    (out / names[1]).write_bytes(b"short")  # wrong size: fetched again
    (out / f".{names[2]}.part").write_bytes(b"left by a killed fetch")
    state = fetch_into(fake, out)
    assert [r.url.path.rsplit("/", 1)[-1] for r in fake.gets(".fits")] == names[1:]
    assert (state.files, state.skipped, state.downloaded) == (4, 1, 3)
    assert listing(out) == sorted([*names, "table.xml", STATE_FILE])  # no .part left
    assert all((out / name).read_bytes() == data for name, data in fake.files.items())


def test_without_sizes_a_resume_skips_files_by_etag(tmp_path: Path) -> None:
    fake = Fake(2, sized=False)
    out = tmp_path / "out"
    fetch_into(fake, out)
    assert len(fake.gets(".fits")) == 2 and (out / ETAG_FILE).is_file()
    fake.requests.clear()
    state = fetch_into(fake, out)
    assert [r.headers["if-none-match"] for r in fake.gets(".fits")] == ['"00000.img.fits-v1"', '"00001.img.fits-v1"']
    assert (state.files, state.skipped) == (2, 2)


def test_a_broken_download_is_retried_and_a_short_one_never_gets_its_final_name(tmp_path: Path) -> None:
    fake = Fake(2)
    names = list(fake.files)
    fake.broken[names[0]] = [fake.files[names[0]][:10], httpx.ReadError("reset")]  # then served whole
    out = tmp_path / "out"
    fetch_into(fake, out)
    assert (out / names[0]).read_bytes() == fake.files[names[0]] and len(fake.gets(names[0])) == 2

    truncated = Fake(1)  # the service keeps sending fewer bytes than the listed size
    truncated.sizes = {name: len(data) for name, data in truncated.files.items()}
    truncated.files = {name: data[:-1] for name, data in truncated.files.items()}
    state = fetch_into(truncated, tmp_path / "short")
    assert state.failures == [f"00000.img.fits: got 99 of 100 bytes (after {_async.RETRIES + 1} attempts)"]
    assert listing(tmp_path / "short") == sorted(["table.xml", STATE_FILE])


def test_a_cancelled_download_leaves_no_file(tmp_path: Path) -> None:
    started = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"x" * 10
        started.set()
        await asyncio.sleep(60)
        yield b"never"

    product = Product("00000.img.fits", f"{JOB}/results/00000.img.fits", 100, "image/fits", 0)

    async def go() -> None:
        transport = httpx.MockTransport(lambda r: httpx.Response(200, content=slow()))
        async with AsyncClient(BASE, transport=transport) as client:
            task = asyncio.create_task(client.job(JOB).download(product, tmp_path))
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(go())
    assert listing(tmp_path) == []


def test_a_directory_holds_one_job(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text(f"{BASE}/async/other\n")
    with pytest.raises(ClientError, match="holds the results of http://svc.test/async/other"):
        fetch_into(Fake(1), tmp_path)
    with Output(tmp_path / "b", JOB), pytest.raises(ClientError, match="another siasync fetch"), \
            Output(tmp_path / "b", JOB):
        pass


def test_a_result_id_that_is_no_safe_file_name_is_a_failure_not_a_file(tmp_path: Path) -> None:
    fake = Fake(1)
    fake.files["../evil"] = b"outside"
    state = fetch_into(fake, tmp_path / "out")
    assert state.failures == ["refusing to write result '../evil': not a safe file name"]
    assert state.files == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("result_id", ["../x", "a/b", ".hidden", "table.xml", "", "a b"])
def test_unsafe_result_ids_are_refused(result_id: str) -> None:
    with pytest.raises(ClientError, match="not a safe file name"):
        safe_name(result_id)


# --- requests: creation, uploads, auth, errors ---------------------------------------------------------------------

def form_of(request: httpx.Request) -> list[tuple[str, str | None, str | None, bytes]]:
    """(name, file name, content type, content) of each part of a multipart request."""
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode() + request.read())
    return [(part.get_param("name", header="content-disposition"), part.get_filename(),
             part.get("content-type"), part.get_payload(decode=True)) for part in message.iter_parts()]


@pytest.mark.parametrize(("suffix", "content_type"), [(".csv", "text/csv"), (".xml", "application/x-votable+xml"),
                                                      (".vot", "application/x-votable+xml")])
def test_a_positions_file_is_uploaded_as_a_dali_param_upload(tmp_path: Path, suffix: str, content_type: str) -> None:
    fake = Fake(1)
    positions = tmp_path / f"fields{suffix}"
    positions.write_bytes(b"ra,dec\n150.1,2.2\n150.2,2.3\n")
    job = run(lambda c: c.submit(size=0.01, format="ALL", band=["r", "g"], positions_file=positions), fake)
    assert job.url == JOB
    request = fake.requests[0]
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    parts = form_of(request)
    fields = [(name, value.decode()) for name, filename, _, value in parts if filename is None]
    assert fields == [("SIZE", "0.01"), ("FORMAT", "ALL"), ("BAND", "r"), ("BAND", "g"),
                      ("UPLOAD", "fields,param:fields"), ("PHASE", "RUN")]
    assert [(n, f, t, v) for n, f, t, v in parts if f is not None] == [
        ("fields", positions.name, content_type, positions.read_bytes())]


def test_positions_are_posted_as_a_form_with_the_bearer_token() -> None:
    fake = Fake(1)

    async def go() -> None:
        async with fake.client(token="tok-alice") as client:
            await client.submit([(150.1, 2.2), (150.25, -2.5)], (0.01, 0.02), collection=["DEMO-WIDE"], run=False)

    asyncio.run(go())
    request = fake.requests[0]
    assert request.headers["authorization"] == "Bearer tok-alice"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.read() == b"POS=150.1%2C2.2&POS=150.25%2C-2.5&SIZE=0.01%2C0.02&COLLECTION=DEMO-WIDE"


def test_an_unknown_positions_format_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    fake = Fake(1)
    (tmp_path / "fields.txt").write_text("150,2\n")
    with pytest.raises(ClientError, match=r"must be a CSV \(.csv\) or VOTable"):
        run(lambda c: c.submit(size=0.1, positions_file=tmp_path / "fields.txt"), fake)
    assert fake.requests == []


def test_service_errors_carry_the_service_message_and_network_errors_are_retried() -> None:
    fake = Fake(1)
    fake.create_error = httpx.Response(400, text="UsageError: UPLOAD: position uploads are not supported yet\n",
                                       headers={"Content-Type": "text/plain; charset=utf-8"})
    with pytest.raises(ServiceError, match=r"^UsageError: UPLOAD: position uploads are not supported yet \(POST"):
        run(lambda c: c.submit([(1, 2)], 0.1), fake)

    failures = iter([httpx.ConnectError("refused"), httpx.ReadTimeout(""), None])

    def flaky(request: httpx.Request) -> httpx.Response:
        if (failure := next(failures)) is not None:
            raise failure
        return httpx.Response(200, text="EXECUTING")

    async def go(handler: Callable[[httpx.Request], httpx.Response]) -> str:
        async with AsyncClient(BASE, transport=httpx.MockTransport(handler)) as client:
            return await client.job("j1").phase()

    assert asyncio.run(go(flaky)) == "EXECUTING"
    with pytest.raises(TransferError, match=r"^cannot reach http://svc.test/async/j1/phase: ConnectError: down$"):
        asyncio.run(go(lambda r: (_ for _ in ()).throw(httpx.ConnectError("down"))))
    with pytest.raises(ServiceError, match=r"^HTTP 500 Internal Server Error \(GET"):
        asyncio.run(go(lambda r: httpx.Response(500, content=b"<html>oops</html>")))


# --- the synchronous client ----------------------------------------------------------------------------------------

def test_the_synchronous_client_streams_fetches_and_manages_jobs(tmp_path: Path) -> None:
    fake = Fake(3)
    with Client(BASE, transport=httpx.MockTransport(fake.handler)) as client:
        job = client.submit([(150.1, 2.2)], 0.01)
        assert job.url == JOB and job.id == "j1" and job.phase == "EXECUTING"
        first = next(iter(job.stream()))  # leaving a stream early closes it
        assert first.id == "00000.img.fits"
        assert [p.id for p in job.stream()] == list(fake.files)
        assert job.download(first, tmp_path / "one") == tmp_path / "one" / first.id
        state = job.fetch(tmp_path / "all")
        assert state.files == 3 and listing(tmp_path / "all") == sorted([*fake.files, "table.xml", STATE_FILE])
        status = job.info()
        assert status.phase == "COMPLETED" and status.fields_total == 3 and status.parameters == (("pos", "1,2"),)
        assert [p.id for p in job.results()] == list(fake.files) and job.table() == TABLE
        assert job.wait().phase == "COMPLETED"
        assert [j.id for j in client.jobs(phase=["COMPLETED"], last=5)] == ["j1"]
        job.abort()
        job.delete()
    assert fake.gets("/async")[0].url.params.multi_items() == [("PHASE", "COMPLETED"), ("LAST", "5")]
    assert [(r.method, r.url.path) for r in fake.requests[-2:]] == [("POST", "/async/j1/phase"),
                                                                     ("DELETE", "/async/j1")]


# --- the command line ----------------------------------------------------------------------------------------------

def fetch_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["fetch", *argv])


@pytest.mark.parametrize(("argv", "message"), [
    (["--pos", "150", "--size", "0.1"], "expected RA,DEC in degrees, got '150'"),
    (["--pos", "400,2", "--size", "0.1"], "expected RA in [0, 360) and Dec in [-90, 90], got '400,2'"),
    (["--pos", "1,2", "--size", "0"], "the size must be positive, got '0'"),
    (["--pos", "1,2", "--size", "nan"], "expected a size in degrees: S or W,H, got 'nan'"),
    (["--pos", "1,2", "--size", "1", "--format", "tiff"], "expected one of image/fits"),
    (["--pos", "1,2", "--size", "1", "--param", "NAXIS"], "expected NAME=VALUE, got 'NAXIS'"),
    (["--pos", "1,2", "--size", "1", "--mode", "blend"], "invalid choice: 'blend'"),
])
def test_bad_fetch_arguments_exit_2(argv: list[str], message: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["fetch", BASE, *argv, "--out", str(tmp_path)])
    assert caught.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    ([BASE, "--size", "0.1"], "give the fields to stage with --pos RA,DEC"),
    ([BASE, "--pos", "1,2"], "--size DEG is required with --pos"),
    ([BASE, "--positions", "missing.csv"], "--positions missing.csv: no such file"),
    (["--job", JOB, "--pos", "1,2"], "--job resumes an existing job; leave out --pos"),
    (["--job", "j1"], "--job j1 is not a URL"),
    ([BASE, "--job", JOB], "give --job as a URL, or BASE_URL with --job JOB_ID, not both"),
    (["--pos", "1,2", "--size", "1"], "--pos, --size need BASE_URL"),
    ([], "give BASE_URL with --pos or --positions to create a job, or --job JOB_URL to resume one"),
])
def test_inconsistent_fetch_arguments_exit_2(argv: list[str], message: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert fetch_command(fetch_args(*argv, "--out", str(tmp_path / "out"))) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"siasync: error: {message}") and err.count("\n") == 1


def test_fetch_command_sends_the_mode_and_other_parameters(tmp_path: Path) -> None:
    fake = Fake(1)
    argv = (BASE, "--pos", "150.1,2.2", "--size", "0.1", "--mode", "stack", "--param", "naxis=512",
            "--param", "COMBINE=median", "--out", str(tmp_path / "out"))
    assert fetch_command(fetch_args(*argv), httpx.MockTransport(fake.handler)) == 0
    post = next(r for r in fake.requests if r.method == "POST" and r.url.path == "/async")
    form = parse_qs(post.content.decode())
    assert form["MODE"] == ["stack"] and form["NAXIS"] == ["512"] and form["COMBINE"] == ["median"]
    assert form["POS"] == ["150.1,2.2"] and form["PHASE"] == ["RUN"]


def test_fetch_command_creates_resumes_and_deletes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = Fake(3)
    out = tmp_path / "out"
    transport = httpx.MockTransport(fake.handler)
    assert fetch_command(fetch_args(BASE, "--pos", "150.1,2.2", "--size", "0.01", "--out", str(out)), transport) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("fetched 3 files (3 downloaded), 0.0 MB in ")
    assert f"resume with: siasync fetch --job {JOB} --out {out}" in captured.err
    assert "[" in captured.err and "| COMPLETED" in captured.err  # plain log lines: stderr is no terminal here
    # the same command again: the directory already holds that job
    assert fetch_command(fetch_args(BASE, "--pos", "150.1,2.2", "--size", "0.01", "--out", str(out)), transport) == 2
    assert f"{out} holds the results of {JOB}; resume it with" in capsys.readouterr().err
    # resuming from the directory alone; everything is there
    assert fetch_command(fetch_args("--out", str(out), "--delete"), transport) == 0
    captured = capsys.readouterr()
    assert "(0 downloaded, 3 already complete)" in captured.out and f"deleted job {JOB}" in captured.err
    assert fake.requests[-1].method == "DELETE"


def test_fetch_command_reports_service_errors_and_unfinished_jobs(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    fake = Fake(1)
    fake.create_error = httpx.Response(400, text="UsageError: UPLOAD: position uploads are not supported yet\n",
                                       headers={"Content-Type": "text/plain"})
    positions = tmp_path / "fields.csv"
    positions.write_text("ra,dec\n150.1,2.2\n")
    args = fetch_args(BASE, "--positions", str(positions), "--out", str(tmp_path / "a"))
    assert fetch_command(args, httpx.MockTransport(fake.handler)) == 1
    assert capsys.readouterr().err == ("siasync: error: UsageError: UPLOAD: position uploads are not supported yet "
                                       "(POST http://svc.test/async)\n")

    aborted = Fake(1)
    aborted.streams = [[sse("phase", {"phase": "ABORTED"})]]
    args = fetch_args("--job", JOB, "--out", str(tmp_path / "b"))
    assert fetch_command(args, httpx.MockTransport(aborted.handler)) == 1
    assert capsys.readouterr().err.endswith(f"siasync: error: job {JOB} ended ABORTED\n")


def test_fetch_command_refuses_a_job_that_will_not_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = Fake(1)
    fake.phase = "PENDING"
    out = tmp_path / "out"
    assert fetch_command(fetch_args(BASE, "--job", "j1", "--out", str(out)), httpx.MockTransport(fake.handler)) == 1
    assert capsys.readouterr().err == (f"siasync: error: job {JOB} is PENDING; start it first "
                                       f"(POST PHASE=RUN to {JOB}/phase)\n")
    assert not out.exists()


def test_jobs_command_prints_one_line_per_job(capsys: pytest.CaptureFixture[str]) -> None:
    fake = Fake(3)
    args = build_parser().parse_args(["jobs", BASE, "--phase", "completed", "--last", "3"])
    assert jobs_command(args, httpx.MockTransport(fake.handler)) == 0
    assert capsys.readouterr().out == "j1  COMPLETED  fields 3/3  products 3  created 2026-01-01T00:00:00.000Z\n"
    assert fake.gets("/async")[0].url.params.multi_items() == [("PHASE", "COMPLETED"), ("LAST", "3")]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["jobs", BASE, "--last", "0"])


# --- progress ------------------------------------------------------------------------------------------------------

def test_progress_is_one_redrawn_line_on_a_terminal_and_log_lines_otherwise(tmp_path: Path) -> None:
    state = FetchProgress(JOB, tmp_path, phase="EXECUTING", fields_done=120, fields_total=200)
    for _ in range(240):
        state.add(13_000, skipped=False)
    tty, log = io.StringIO(), io.StringIO()
    on_tty, plain = ProgressPrinter(tty, tty=True), ProgressPrinter(log, tty=False)
    for printer in (on_tty, plain):
        printer(state)
        printer(state)  # too soon: not drawn again
    state.phase = "COMPLETED"
    for printer in (on_tty, plain):
        printer(state)  # a phase change is always shown
        printer.close(state)
    frames = tty.getvalue().split("\r")[1:]
    assert frames[0].startswith("fields 120/200 | files 240 | 3.1 MB | ") and " files/s | EXECUTING\x1b[K" in frames[0]
    assert len(frames) == 3 and frames[-1].endswith("| COMPLETED\x1b[K\n")
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("[") and lines[1].endswith("| COMPLETED")


def test_job_lines_show_unknown_progress_as_a_dash() -> None:
    from siasync.client import JobRef, JobStatus

    line = job_line(JobRef("j2", f"{BASE}/async/j2", "PENDING", run_id="night1"), JobStatus("PENDING"))
    assert line == "j2  PENDING    fields -/-  products -  created -  run night1"
