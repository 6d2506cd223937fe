"""Path safety: hostile job ids, result ids and names never reach a file outside the job's directory.

Two finished jobs, A and B, each with its results on disk and A with an uploaded table; a sentinel
file beside the state directory. Every route that takes an id is asked, for job A, with ids made of
``..``, encoded slashes and dots, absolute paths, NUL bytes, backslashes, double encodings and very
long names, both through the test client (which, like browsers, removes literal ``..`` segments) and
as raw ASGI requests with the path exactly as a client such as ``curl --path-as-is`` sends it (the
server decodes it as uvicorn does). Each answer must be 404 (or 405 where the route has no such
method), never the sentinel's bytes nor another job's file, and an audit hook proves that no file
under the test's directory was opened, listed, moved or removed while the requests ran.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest

from tests.siasync.helpers import in_app, wait_for

SENTINEL = b"SENTINEL: this file is outside the state directory and must never be served\n"
#: audit events of file access, each with the path as its first argument
_FILE_EVENTS = {"open", "os.listdir", "os.scandir", "os.remove", "os.rename", "os.rmdir", "os.mkdir", "shutil.rmtree",
                "os.truncate", "os.chmod", "os.utime", "os.symlink", "os.link"}
_touched: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _touched is not None and event in _FILE_EVENTS and args and isinstance(args[0], (str, bytes, Path)):
        _touched.append(str(args[0] if not isinstance(args[0], bytes) else args[0].decode("utf-8", "replace")))


sys.addaudithook(_audit)  # audit hooks cannot be removed; this one records only while `_touched` is a list


@contextmanager
def audited() -> Iterator[list[str]]:
    """The paths of files accessed in this process (worker threads included) within the block."""
    global _touched
    _touched = []
    try:
        yield _touched
    finally:
        _touched = None


@pytest.fixture(scope="module")
def world(make_module_client, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The app with two finished jobs, A (with an uploaded table) and B, and a sentinel outside its state."""
    with make_module_client(workers=1) as client:
        state: Path = client.app.state.service.files.root.parent
        sentinel = state.parent / "secret.txt"
        sentinel.write_bytes(SENTINEL)
        a = client.post("/async", data={"SIZE": "0.01", "PHASE": "RUN"},
                        files={"UPLOAD": ("fields.csv", b"ra,dec\n150.1,2.2\n", "text/csv")}, follow_redirects=False)
        b = client.post("/async", data={"POS": "150.1,2.2", "SIZE": "0.02", "FORMAT": "image/png", "PHASE": "RUN"},
                        follow_redirects=False)
        assert a.status_code == b.status_code == 303, (a.text, b.text)
        job_a, job_b = (r.headers["location"].rsplit("/", 1)[-1] for r in (a, b))
        for job_id in (job_a, job_b):
            wait_for(client, job_id, ("COMPLETED",))
        results = {j: client.get(f"/async/{j}", headers={"Accept": "application/json"}).json()["results"]
                   for j in (job_a, job_b)}
        ids_a = {r["id"] for r in results[job_a]}
        # a result of B's that A does not have (ids are made from the field index, image id and format)
        result_b = next(r["id"] for r in results[job_b] if r["id"] not in ids_a)
        result_a = next(r["id"] for r in results[job_a] if r["id"] != "table")
        assert (state / "results" / job_b / result_b).is_file()
        yield {"client": client, "state": state, "sentinel": sentinel, "a": job_a, "b": job_b, "result_a": result_a,
               "result_b": result_b, "b_bytes": (state / "results" / job_b / result_b).read_bytes()}


def hostile(w: dict[str, Any]) -> list[str]:
    """Ids as they appear in a URL path (already percent-encoded where they are)."""
    secret = str(w["sentinel"])
    other = f"{w['b']}/{w['result_b']}"
    return [
        "..", ".", "%2e%2e", "%2E%2e", ".%2e", "%2e.", "...", "..%2f..%2fsecret.txt", "..%2F..%2F..%2Fsecret.txt",
        "%2e%2e%2f%2e%2e%2f%2e%2e%2fsecret.txt", "%2e%2e%2f%2e%2e%2fsiasync.db", "..%2fsiasync.db",
        f"..%2f{quote(other, safe='')}", f"..%2f..%2fresults%2f{quote(other, safe='')}", quote(secret, safe=""),
        quote(secret, safe="/"), "%2fetc%2fpasswd", "%00", "a%00b", f"{w['result_a']}%00", "%00..%2fsecret.txt",
        "..%5c..%5csecret.txt", "..\\..\\secret.txt".replace("\\", "%5c"), "%252e%252e%252fsecret.txt",
        "%252e%252e", "..%c0%afsecret.txt", "%c0%ae%c0%ae", "~", "%7e%2f", "*", "..;", "%20..", "x" * 10_000,
        "%2e" * 3000, "..%2f" * 2000 + "secret.txt", "con", "nul", "results", "table%2f..%2f..%2fsecret.txt",
    ]


#: (method, path under /async/{job}) of every route of a job that takes a second id, and ones that take only the job
ROUTES = [("GET", "/results/{id}"), ("GET", "/parameters/{id}"), ("GET", ""), ("POST", ""), ("DELETE", ""),
          ("GET", "/phase"), ("POST", "/phase"), ("GET", "/results"), ("GET", "/results/table"), ("GET", "/events"),
          ("GET", "/parameters"), ("POST", "/parameters"), ("GET", "/destruction"), ("POST", "/destruction"),
          ("GET", "/termination"), ("GET", "/executionduration"), ("POST", "/executionduration"), ("GET", "/error"),
          ("GET", "/quote"), ("POST", "/quote"), ("GET", "/owner")]
BODY = {"": b"ACTION=DELETE", "/phase": b"PHASE=ABORT", "/parameters": b"SIZE=0.02", "/destruction":
        b"DESTRUCTION=2999-01-01T00:00:00Z", "/executionduration": b"EXECUTIONDURATION=5"}


def raw_request(client: Any, method: str, raw_path: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send one request to the app as an ASGI server does: the path percent-decoded once, nothing normalised."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": unquote(raw_path), "raw_path": raw_path.encode("ascii"), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver.local"), (b"content-type", b"application/x-www-form-urlencoded"),
                         (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 50000), "server": ("testserver.local", 80), "state": {}}
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    in_app(client, client.app, scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def check(w: dict[str, Any], status: int, body: bytes, where: str, allowed: tuple[int, ...]) -> list[str]:
    problems = []
    if status not in allowed:
        problems.append(f"{where}: {status} {body[:120]!r}")
    if SENTINEL[:20] in body or (w["b_bytes"][:2880] in body) or b"SQLite format" in body:
        problems.append(f"{where}: served a file outside the job's directory")
    return problems


@pytest.mark.parametrize("method,child", ROUTES, ids=[f"{m} {c or '/'}" for m, c in ROUTES])
def test_hostile_ids_answer_404_and_touch_no_file(world, method: str, child: str) -> None:
    w, client = world, world["client"]
    before = sorted(p for p in w["state"].parent.rglob("*") if "siasync.db" not in p.name)
    problems: list[str] = []
    with audited() as touched:
        problems += _ask(w, client, method, child)
    assert not problems, "\n".join(problems)
    assert not [p for p in touched if p.startswith(str(w["state"].parent))], touched
    assert sorted(p for p in w["state"].parent.rglob("*") if "siasync.db" not in p.name) == before
    assert w["sentinel"].read_bytes() == SENTINEL


def _ask(w: dict[str, Any], client: Any, method: str, child: str) -> list[str]:
    problems = []
    for bad in hostile(w):
        # the hostile value as the second id (for the job's own children: as the job id)
        path = f"/async/{w['a']}{child.replace('{id}', bad)}" if "{id}" in child else f"/async/{bad}{child}"
        status, body = raw_request(client, method, path, BODY.get(child, b""))
        problems += check(w, status, body, f"raw {method} {path[:80]}", (404, 405))
        if httpx.URL("http://testserver.local" + path).raw_path != path.encode():
            continue  # the client resolves literal dot segments itself; the raw request above sent them
        response = client.request(method, path, content=BODY.get(child, b""), follow_redirects=False,
                                  headers={"content-type": "application/x-www-form-urlencoded"})
        problems += check(w, response.status_code, response.content, f"client {method} {path[:80]}", (404, 405))
    return problems


def test_literal_dot_segments_do_not_climb_out_of_a_job(world) -> None:
    """Dot segments left as they are (``curl --path-as-is``): routed as they stand, never resolved."""
    w, client = world, world["client"]
    other = f"{w['b']}/{w['result_b']}"
    paths = [f"/async/{w['a']}/results/../../{other}", f"/async/{w['a']}/results/../{w['b']}/results/{w['result_b']}",
             f"/async/{w['a']}/results/../../../secret.txt", f"/async/{w['a']}/results/./../../../../secret.txt",
             f"/async/{w['a']}/parameters/../../../secret.txt", "/async/../../secret.txt",
             f"/async/{w['a']}/results/{w['result_a']}/../../../secret.txt",
             f"/async/{w['a']}/results//{w['sentinel']}", f"/async/{w['a']}/results/{w['sentinel']}",
             "/sia/cutout/../../secret.txt"]
    problems = []
    with audited() as touched:
        for path in paths:
            for method in ("GET", "DELETE"):
                problems += check(w, *raw_request(client, method, path), f"raw {method} {path}", (404, 405))
    assert not problems, "\n".join(problems)
    assert not [p for p in touched if p.startswith(str(w["state"].parent))], touched
    assert (w["state"] / "results" / w["b"] / w["result_b"]).read_bytes() == w["b_bytes"]


def test_a_job_serves_its_own_result_and_table_by_the_same_routes(world) -> None:
    """The control: the routes above do serve files, when the ids are the job's own."""
    w, client = world, world["client"]
    with audited() as touched:
        own = client.get(f"/async/{w['a']}/results/{w['result_a']}")
    assert own.status_code == 200 and own.content[:6] == b"SIMPLE"  # A makes FITS, B PNG
    assert str(w["state"] / "results" / w["a"] / w["result_a"]) in touched  # the audit hook sees what is read
    assert client.get(f"/async/{w['a']}/parameters/upload").content == b"ra,dec\n150.1,2.2\n"
    assert client.get(f"/async/{w['a']}/results/table").status_code == 200
    assert client.get(f"/async/{w['a']}/results/{w['result_b']}").status_code == 404  # B's result is not A's


@pytest.mark.parametrize("image_id", ["../../secret.txt", "..%2f..%2fsecret.txt", "/etc/passwd", "{sentinel}",
                                      "\x00", "a\x00b", "x" * 10_000, "..", ".", "siasync-index.sqlite",
                                      "%2e%2e%2fsiasync-index.sqlite", "C:\\Windows\\win.ini"])
def test_cutout_image_ids_are_archive_ids_never_paths(world, image_id: str) -> None:
    w, client = world, world["client"]
    image_id = image_id.replace("{sentinel}", str(w["sentinel"]))
    with audited() as touched:
        response = client.get("/sia/cutout", params={"ID": image_id, "POS": "150.1,2.2", "SIZE": "0.01"})
    assert response.status_code == 404 and response.text.startswith("NotFound: ID: "), response.text[:200]
    assert SENTINEL[:20] not in response.content
    assert not [p for p in touched if p.startswith(str(w["state"].parent))], touched
