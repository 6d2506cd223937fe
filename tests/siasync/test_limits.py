"""Limits: each one, when exceeded, answers a clear 4xx naming the limit; at the limit, the request is served.

The request body size (form, multipart, a body without a length, multipart parts), the number of
POS values, the rows of an upload (CSV, VOTable, and with POS values), SIZE (jobs, /sia and
/sia/cutout), RUNID, and per owner the active jobs and the queued fields. The output pixels of a
cutout have no limit of their own: a cutout is clipped to its parent image, so the largest SIZE
gives at most the parent's pixels, which a test checks. (Mosaics, whose output is not bounded by a
parent, have an output-pixel limit of their own, tested with them.)
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

from tests.siasync.test_uploads import votable

FIELDS, SIZE_DEG, BODY, ACTIVE, QUEUED = 50, 1.0, 100_000, 2, 60
ALICE = {"Authorization": "Bearer tok-alice"}
BOB = {"Authorization": "Bearer tok-bob"}
LATER = {"START": "2999-01-01T00:00:00Z", "PHASE": "RUN"}  # queued, but never started


@pytest.fixture(scope="module")
def client(make_module_client) -> Iterator[Any]:
    with make_module_client(auth="token", workers=1, max_fields=FIELDS, max_size_deg=SIZE_DEG, max_body_bytes=BODY,
                            owner_active_jobs=ACTIVE, owner_queued_fields=QUEUED) as c:
        yield c


def positions(n: int, start: float = 150.0) -> list[str]:
    return [f"{start + i * 1e-4:.4f},2.2" for i in range(n)]


def csv_rows(n: int) -> bytes:
    return ("ra,dec\n" + "".join(f"{p}\n" for p in positions(n))).encode()


def vot_rows(n: int) -> bytes:
    return votable({"ra": ("double", "deg", [150.0 + i * 1e-4 for i in range(n)]), "dec": ("double", "deg", [2.2] * n)})


def chunks(n: int) -> Iterator[bytes]:
    """A body sent without Content-Length."""
    yield b"POS=150.1,2.2&SIZE=0.01&PADDING="  # an unknown parameter, ignored (DALI)
    for _ in range(n // 10_000):
        yield b"x" * 10_000


def multipart_parts(n: int) -> tuple[bytes, dict[str, str]]:
    body = "".join('--B\r\nContent-Disposition: form-data; name="COLLECTION"\r\n\r\nDEMO-WIDE\r\n' for _ in range(n))
    return (body + '--B\r\nContent-Disposition: form-data; name="POS"\r\n\r\n150.1,2.2\r\n--B\r\n'
            'Content-Disposition: form-data; name="SIZE"\r\n\r\n0.01\r\n--B--\r\n').encode(), {
        "Content-Type": "multipart/form-data; boundary=B"}


def job(**form: Any) -> dict[str, Any]:
    return {"data": {"SIZE": "0.01", **form}}


def upload(data: bytes, **form: Any) -> dict[str, Any]:
    return {"data": {"SIZE": "0.01", **form}, "files": {"UPLOAD": ("fields", data, "application/octet-stream")}}


def raw(body: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {"content": body, "headers": {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}}


# (limit, request at the limit, request over it (keyword arguments, or a function making them), the start of
# the answer over it)
LIMITS = [
    ("POS values in one value", job(POS=";".join(positions(FIELDS))), job(POS=";".join(positions(FIELDS + 1))),
     f"UsageError: POS: {FIELDS + 1} fields exceed the limit of {FIELDS}"),
    ("POS values repeated", job(POS=positions(FIELDS)), job(POS=positions(FIELDS + 1)),
     f"UsageError: POS: {FIELDS + 1} fields exceed the limit of {FIELDS}"),
    ("CSV upload rows", upload(csv_rows(FIELDS)), upload(csv_rows(FIELDS + 1)),
     f"UsageError: UPLOAD: upload: more than {FIELDS} rows, the limit of fields"),
    ("VOTable upload rows", upload(vot_rows(FIELDS)), upload(vot_rows(FIELDS + 1)),
     f"UsageError: UPLOAD: upload: {FIELDS + 1} rows exceed the limit of {FIELDS} fields"),
    ("POS values and upload rows", upload(csv_rows(FIELDS - 10), POS=positions(10)),
     upload(csv_rows(FIELDS - 10), POS=positions(11)), f"UsageError: UPLOAD: {FIELDS + 1} fields exceed the limit"),
    ("SIZE", job(POS="150.1,2.2", SIZE=str(SIZE_DEG)), job(POS="150.1,2.2", SIZE="1.0001"),
     f"UsageError: SIZE: must be positive and at most {SIZE_DEG:g} deg, got 1.0001"),
    ("SIZE height", job(POS="150.1,2.2", SIZE=f"0.1,{SIZE_DEG}"), job(POS="150.1,2.2", SIZE="0.1,1.5"),
     f"UsageError: SIZE: must be positive and at most {SIZE_DEG:g} deg, got 1.5"),
    ("RUNID length", job(POS="150.1,2.2", RUNID="r" * 255), job(POS="150.1,2.2", RUNID="r" * 256),
     "UsageError: RUNID: must be printable text of at most 255 characters"),
    ("body bytes, form", job(POS="150.1,2.2", COLLECTION=["DEMO-WIDE"] * 4500),
     job(POS="150.1,2.2", COLLECTION=["DEMO-WIDE"] * 5000),
     f"UsageError: request body: larger than the limit of {BODY} bytes"),
    ("body bytes, multipart upload", upload(csv_rows(FIELDS) + b"#" * (BODY - 2000)),
     upload(csv_rows(FIELDS) + b"#" * BODY), f"UsageError: request body: larger than the limit of {BODY} bytes"),
    ("body bytes, no Content-Length", lambda: raw(chunks(BODY - 10_000)), lambda: raw(chunks(BODY + 10_000)),
     f"UsageError: request body: larger than the limit of {BODY} bytes"),
    ("multipart parts", raw(*multipart_parts(997)), raw(*multipart_parts(1000)),
     "UsageError: request body: more than the limit of 1000 multipart parts"),
]


@pytest.mark.parametrize("limit,at,over,answer", LIMITS, ids=[c[0] for c in LIMITS])
def test_a_job_at_a_limit_is_made_and_one_over_it_is_refused_naming_the_limit(client, limit: str, at: Any,
                                                                               over: Any, answer: str) -> None:
    at, over = (dict(kwargs() if callable(kwargs) else kwargs) for kwargs in (at, over))
    made = client.post("/async", headers={**ALICE, **at.pop("headers", {})}, follow_redirects=False, **at)
    assert made.status_code == 303, made.text[:300]
    refused = client.post("/async", headers={**ALICE, **over.pop("headers", {})}, follow_redirects=False, **over)
    assert refused.status_code in (400, 413), refused.text[:300]
    assert refused.headers["content-type"].startswith("text/plain")
    assert refused.text.startswith(answer), refused.text[:300]
    assert len(refused.content) < 2000  # a clear message, not the request echoed back
    client.delete(made.headers["location"], headers=ALICE)


def test_sync_queries_and_cutouts_refuse_a_size_over_the_limit(client) -> None:
    query = client.get("/sia", params={"POS": "150.1,2.2", "SIZE": "1.5"}, headers=ALICE)
    assert query.status_code == 200 and 'value="ERROR"' in query.text
    assert f"SIZE: must be positive and at most {SIZE_DEG:g} deg" in query.text
    image = client.app.state.index.records[0]
    cutout = client.get("/sia/cutout", params={"ID": image.id, "POS": "150.1,2.2", "SIZE": "1.5"}, headers=ALICE)
    assert cutout.status_code == 400
    assert cutout.text.startswith(f"UsageError: SIZE: must be positive and at most {SIZE_DEG:g} deg")


def test_a_cutout_at_the_largest_size_has_at_most_its_parents_pixels(client) -> None:
    """The bound on a cutout's output pixels: SIZE is limited, and a cutout is clipped to its parent image."""
    index = client.app.state.index
    for image in index.records[:3]:
        ra, dec = (float(c) for c in np.asarray(image.footprint).mean(axis=0))
        response = client.get("/sia/cutout", params={"ID": image.id, "POS": f"{ra!r},{dec!r}",
                                                     "SIZE": str(SIZE_DEG)}, headers=ALICE)
        assert response.status_code == 200, response.text[:300]
        with fits.open(io.BytesIO(response.content)) as hdus:
            shape = next(h.data.shape for h in hdus if h.data is not None)
        assert shape[0] <= image.shape[0] and shape[1] <= image.shape[1], (shape, image.shape)


def test_active_jobs_and_queued_fields_per_owner_are_refused_naming_the_limit(client) -> None:
    """Bob's QUEUED jobs (deferred, so they never start) count against his limits, not Alice's."""
    first = client.post("/async", data={"POS": positions(QUEUED - 10), "SIZE": "0.01", **LATER}, headers=BOB,
                        follow_redirects=False)
    assert first.status_code == 303, first.text
    fields = client.post("/async", data={"POS": positions(11), "SIZE": "0.01", **LATER}, headers=BOB,
                         follow_redirects=False)
    assert fields.status_code == 400, fields.text
    assert fields.text.startswith(f"UsageError: PHASE: bob has {QUEUED - 10} fields queued or executing; 11 more "
                                  f"would exceed the limit of {QUEUED}"), fields.text
    second = client.post("/async", data={"POS": positions(10), "SIZE": "0.01", **LATER}, headers=BOB,
                         follow_redirects=False)
    assert second.status_code == 303, second.text  # exactly at the field limit
    third = client.post("/async", data={"POS": "150.1,2.2", "SIZE": "0.01", **LATER}, headers=BOB,
                        follow_redirects=False)
    assert third.status_code == 400
    assert third.text.startswith(f"UsageError: PHASE: bob already has {ACTIVE} jobs queued or executing, the limit")
    pending = client.post("/async", data={"POS": "150.1,2.2", "SIZE": "0.01"}, headers=BOB, follow_redirects=False)
    assert pending.status_code == 303  # a PENDING job is not active: it may be made, not run
    run = client.post(pending.headers["location"] + "/phase", data={"PHASE": "RUN"}, headers=BOB,
                      follow_redirects=False)
    assert run.status_code == 400 and "the limit" in run.text
    alices = client.post("/async", data={"POS": "150.1,2.2", "SIZE": "0.01", **LATER}, headers=ALICE,
                         follow_redirects=False)
    assert alices.status_code == 303  # Alice has limits of her own
    for response in (first, second, pending, alices):
        client.delete(response.headers["location"], headers=ALICE if response is alices else BOB)
