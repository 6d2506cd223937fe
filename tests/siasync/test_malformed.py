"""Malformed requests: every one gets a 4xx naming what is wrong, none a 5xx, and no job is made."""

from __future__ import annotations

import pytest

from tests.siasync.helpers import create_job

OK = {"POS": "150.1,2.2", "SIZE": "0.01"}
MANY = ";".join(f"{150 + i * 1e-4:.4f},2.2" for i in range(51))

# (case, form data replacing OK's values, the parameter the message must name)
CREATE_CASES = [
    ("no POS", {"POS": None}, "POS"),
    ("empty POS", {"POS": ""}, "POS"),
    ("POS one number", {"POS": "150.1"}, "POS"),
    ("POS three numbers", {"POS": "150.1,2.2,3"}, "POS"),
    ("POS not numbers", {"POS": "abc,def"}, "POS"),
    ("POS NaN", {"POS": "nan,2.2"}, "POS"),
    ("POS infinity", {"POS": "150,inf"}, "POS"),
    ("POS RA 360", {"POS": "360,2.2"}, "POS"),
    ("POS RA negative", {"POS": "-0.1,2.2"}, "POS"),
    ("POS Dec over 90", {"POS": "150,90.5"}, "POS"),
    ("POS Dec under -90", {"POS": "150,-91"}, "POS"),
    ("POS hex", {"POS": "0x10,2"}, "POS"),
    ("POS underscores", {"POS": "1_50,2"}, "POS"),
    ("POS sexagesimal", {"POS": "10:00:00,+02:12:00"}, "POS"),
    ("POS one good one bad", {"POS": ["150.1,2.2", "150.1,95"]}, "POS"),
    ("too many POS", {"POS": MANY}, "POS"),
    ("no SIZE", {"SIZE": None}, "SIZE"),
    ("SIZE zero and not", {"SIZE": "0,0.1"}, "SIZE"),
    ("SIZE negative", {"SIZE": "-0.1"}, "SIZE"),
    ("SIZE NaN", {"SIZE": "NaN"}, "SIZE"),
    ("SIZE too large", {"SIZE": "5"}, "SIZE"),
    ("SIZE three values", {"SIZE": "0.1,0.1,0.1"}, "SIZE"),
    ("SIZE text", {"SIZE": "big"}, "SIZE"),
    ("SIZE twice", {"SIZE": ["0.1", "0.2"]}, "SIZE"),
    ("SIZE one bad of two", {"SIZE": "0.1,-1"}, "SIZE"),
    ("unknown FORMAT", {"FORMAT": "image/gif"}, "FORMAT"),
    ("empty FORMAT", {"FORMAT": ""}, "FORMAT"),
    ("unknown INTERSECT", {"INTERSECT": "TOUCHES"}, "INTERSECT"),
    ("unknown COLLECTION", {"COLLECTION": "DEMO-NOPE"}, "COLLECTION"),
    ("one unknown COLLECTION", {"COLLECTION": ["DEMO-WIDE", "HST"]}, "COLLECTION"),
    ("empty COLLECTION", {"COLLECTION": ""}, "COLLECTION"),
    ("unknown BAND", {"BAND": "z"}, "BAND"),
    ("bad DESTRUCTION", {"DESTRUCTION": "next week"}, "DESTRUCTION"),
    ("past DESTRUCTION", {"DESTRUCTION": "2001-01-01T00:00:00Z"}, "DESTRUCTION"),
    ("bad START", {"START": "2026-13-45T99:00:00"}, "START"),
    ("START number", {"START": "1700000000"}, "START"),
    ("EXECUTIONDURATION text", {"EXECUTIONDURATION": "1h"}, "EXECUTIONDURATION"),
    ("EXECUTIONDURATION float", {"EXECUTIONDURATION": "1.5"}, "EXECUTIONDURATION"),
    ("EXECUTIONDURATION negative", {"EXECUTIONDURATION": "-1"}, "EXECUTIONDURATION"),
    ("PHASE on create not RUN", {"PHASE": "ABORT"}, "PHASE"),
    ("RUNID control characters", {"RUNID": "bad\x07id"}, "RUNID"),
    ("RUNID too long", {"RUNID": "x" * 300}, "RUNID"),
    ("UPLOAD not yet supported", {"UPLOAD": "positions,param:table"}, "UPLOAD"),
]


@pytest.fixture
def small_client(make_client):
    with make_client(max_fields=50, max_size_deg=1.0, max_body_bytes=200_000) as c:
        yield c


@pytest.mark.parametrize("case,changes,param", CREATE_CASES, ids=[c[0] for c in CREATE_CASES])
def test_malformed_job_creation(small_client, case: str, changes: dict, param: str) -> None:
    data = {**OK, **changes}
    data = {k: v for k, v in data.items() if v is not None}
    response = small_client.post("/async", data=data, follow_redirects=False)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.startswith(f"UsageError: {param}: "), response.text
    assert "Traceback" not in response.text
    assert small_client.get("/async", headers={"Accept": "application/json"}).json() == []


def test_oversized_body_is_refused(small_client) -> None:
    response = small_client.post("/async", data={"POS": "150.1,2.2", "SIZE": "0.01", "RUNID": "x" * 300_000})
    assert response.status_code == 413
    assert response.text.startswith("UsageError: request body:")
    assert small_client.get("/async", headers={"Accept": "application/json"}).json() == []


# requests on an existing job: (case, method, path under the job, data, status, text the answer starts with)
JOB_CASES = [
    ("PHASE empty", "post", "/phase", {"PHASE": ""}, 400, "UsageError: PHASE:"),
    ("PHASE unknown", "post", "/phase", {"PHASE": "PAUSE"}, 400, "UsageError: PHASE:"),
    ("PHASE missing", "post", "/phase", {}, 400, "UsageError: PHASE:"),
    ("DESTRUCTION missing", "post", "/destruction", {}, 400, "UsageError: DESTRUCTION:"),
    ("DESTRUCTION garbage", "post", "/destruction", {"DESTRUCTION": "tomorrow"}, 400, "UsageError: DESTRUCTION:"),
    ("TIME garbage", "post", "/termination", {"TIME": "soon"}, 400, "UsageError: TIME:"),
    ("EXECUTIONDURATION missing", "post", "/executionduration", {}, 400, "UsageError: EXECUTIONDURATION:"),
    ("EXECUTIONDURATION text", "post", "/executionduration", {"EXECUTIONDURATION": "ten"}, 400,
     "UsageError: EXECUTIONDURATION:"),
    ("ACTION missing", "post", "", {}, 400, "UsageError: ACTION:"),
    ("parameters bad POS", "post", "/parameters", {"POS": "1,2,3"}, 400, "UsageError: POS:"),
    ("unknown result", "get", "/results/nope.fits", None, 404, "NotFound:"),
    ("result path traversal", "get", "/results/..%2F..%2Fsiasync.db", None, 404, "NotFound:"),
    ("unknown child", "get", "/nope", None, 404, "NotFound:"),
    ("PUT on a job", "put", "", None, 405, "MethodNotAllowed:"),
    ("wrong phase RUN twice", "post", "/phase", {"PHASE": "RUN"}, 403, "PermissionDenied:"),
]


@pytest.mark.parametrize("case,method,path,data,status,start", JOB_CASES, ids=[c[0] for c in JOB_CASES])
def test_malformed_job_requests(small_client, case: str, method: str, path: str, data: dict | None,
                                status: int, start: str) -> None:
    job_id = create_job(small_client)
    if case == "wrong phase RUN twice":
        small_client.post(f"/async/{job_id}/phase", data={"PHASE": "RUN"})
    before = small_client.get(f"/async/{job_id}").content
    kwargs = {"data": data} if data is not None else {}
    response = getattr(small_client, method)(f"/async/{job_id}{path}", follow_redirects=False, **kwargs)
    assert response.status_code == status, response.text
    assert response.text.startswith(start), response.text
    if case != "wrong phase RUN twice":
        assert small_client.get(f"/async/{job_id}").content == before  # nothing changed


@pytest.mark.parametrize("path", ["/async/nope", "/async/nope/phase", "/async/../etc/passwd", "/async/%2e%2e",
                                  "/async/" + "x" * 5000, "/async/nope/results/x"])
def test_unknown_jobs_are_404_never_5xx(small_client, path: str) -> None:
    response = small_client.get(path)
    assert response.status_code == 404, response.text
    assert small_client.post(path, data={"PHASE": "RUN"}).status_code in (404, 405)
