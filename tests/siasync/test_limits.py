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

from cutout.sky import Field
from siasync.uws.table_shape import MAX_DEPTH, MAX_METADATA
from tests.siasync.helpers import wait_for
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
     f"UsageError: UPLOAD: upload: more than {FIELDS} rows, the limit of fields"),
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
    """Bob's unfinished jobs, PENDING ones included, count against his limits, not Alice's."""
    first = client.post("/async", data={"POS": positions(QUEUED - 10), "SIZE": "0.01", **LATER}, headers=BOB,
                        follow_redirects=False)
    assert first.status_code == 303, first.text
    fields = client.post("/async", data={"POS": positions(11), "SIZE": "0.01"}, headers=BOB, follow_redirects=False)
    assert fields.status_code == 400, fields.text
    assert fields.text.startswith(f"UsageError: OWNER_QUEUED_FIELDS: bob has {QUEUED - 10} fields in unfinished "
                                  f"jobs; 11 more would exceed the limit of {QUEUED}"), fields.text
    pending = client.post("/async", data={"POS": positions(10), "SIZE": "0.01"}, headers=BOB, follow_redirects=False)
    assert pending.status_code == 303, pending.text  # exactly at the field limit, and at the job limit
    third = client.post("/async", data={"POS": "150.1,2.2", "SIZE": "0.01"}, headers=BOB, follow_redirects=False)
    assert third.status_code == 400
    assert third.text.startswith(f"UsageError: OWNER_ACTIVE_JOBS: bob already has {ACTIVE} unfinished jobs "
                                 f"(pending, queued or executing), the limit of {ACTIVE}"), third.text
    run = client.post(pending.headers["location"] + "/phase", data={"PHASE": "RUN"}, headers=BOB,
                      follow_redirects=False)
    assert run.status_code == 303, run.text  # its slot was taken when it was made
    alices = client.post("/async", data={"POS": "150.1,2.2", "SIZE": "0.01", **LATER}, headers=ALICE,
                         follow_redirects=False)
    assert alices.status_code == 303  # Alice has limits of her own
    for response in (first, pending, alices):
        client.delete(response.headers["location"], headers=ALICE if response is alices else BOB)


# -- the parameters and an upload's shape, before they are parsed ----------------------------------------------

PARAMS, PARAM_BYTES, COLUMNS, TABLE_BYTES = 300, 50_000, 20, 100_000
PREFIX = "POS=150.1,2.2&SIZE=0.01"


@pytest.fixture(scope="module")
def shaped(make_module_client) -> Iterator[Any]:
    with make_module_client(workers=1, max_fields=FIELDS, max_params=PARAMS, max_param_bytes=PARAM_BYTES,
                            max_upload_columns=COLUMNS, max_upload_table_bytes=TABLE_BYTES) as c:
        yield c


def form_of(pairs: int, padding: int = 0) -> dict[str, Any]:
    """A form body of ``pairs`` name=value pairs (POS, SIZE and unknown ones), ``padding`` bytes longer."""
    return raw(PREFIX + "&X=1" * (pairs - 2) + "&X=" + "a" * padding if padding else PREFIX + "&X=1" * (pairs - 2))


def form_bytes(size: int) -> dict[str, Any]:
    """A form body of exactly ``size`` bytes."""
    return raw(PREFIX + "&X=" + "a" * (size - len(PREFIX) - 3))


def query_and_form(in_query: int, in_body: int) -> dict[str, Any]:
    return {**raw(PREFIX + "&X=1" * (in_body - 2)), "params": [("Y", "1")] * in_query}


def multipart_texts(n: int) -> dict[str, Any]:
    return {"data": {"POS": "150.1,2.2", "SIZE": "0.01", "X": ["1"] * (n - 2)},
            "files": {"unused": ("u.txt", b"", "text/plain")}}


def csv_columns(n: int) -> bytes:
    return ("ra,dec," + ",".join(f"c{i}" for i in range(n - 2)) + "\n150.1,2.2" + ",1" * (n - 2) + "\n").encode()


def vot(fields: str, rows: int = 1, cells: str = "<TD>150.1</TD><TD>2.2</TD>", table: str = "",
        inner: str = "") -> bytes:
    return (f'<?xml version="1.0"?>\n<VOTABLE version="1.3" xmlns="http://www.ivoa.net/xml/VOTable/v1.3"><RESOURCE>'
            f'<TABLE{table}>{inner}<FIELD name="ra" datatype="double"/><FIELD name="dec" datatype="double"/>{fields}'
            f'<DATA><TABLEDATA>{f"<TR>{cells}</TR>" * rows}</TABLEDATA></DATA></TABLE></RESOURCE></VOTABLE>').encode()


def vot_fields(n: int) -> bytes:
    return vot("".join(f'<FIELD name="c{i}" datatype="int"/>' for i in range(n - 2)),
               cells="<TD>150.1</TD><TD>2.2</TD>" + "<TD>1</TD>" * (n - 2))


def vot_row_bytes(size: int) -> bytes:
    """One row of ``size`` bytes: ra and dec (16), and a fixed array of doubles (8 each) and chars (1 each)."""
    doubles, chars = divmod(size - 16, 8)
    return vot(f'<FIELD name="x" datatype="double" arraysize="{doubles}"/>'
               + (f'<FIELD name="s" datatype="char" arraysize="{chars}"/>' if chars else ""),
               cells="<TD>150.1</TD><TD>2.2</TD><TD></TD>" + ("<TD></TD>" if chars else ""))


def vot_table_bytes(rows: int, row_bytes: int) -> bytes:
    return vot(f'<FIELD name="s" datatype="char" arraysize="{row_bytes - 16}"/>', rows=rows,
               cells="<TD>150.1</TD><TD>2.2</TD><TD>x</TD>")


def vot_depth(depth: int) -> bytes:
    """Elements nested ``depth`` deep: VOTABLE, RESOURCE, TABLE, then GROUPs (rows are at depth 7)."""
    groups = depth - 3
    return vot("", inner="<GROUP>" * groups + "</GROUP>" * groups)


def vot_metadata(n: int) -> bytes:
    """``n`` elements besides FIELDs, rows and cells: VOTABLE, RESOURCE, TABLE, DATA, TABLEDATA and PARAMs."""
    return vot("", inner='<PARAM name="p" datatype="int" value="1"/>' * (n - 5))


SHAPES = [
    ("parameters, form", form_of(PARAMS), form_of(PARAMS + 1),
     f"UsageError: request: {PARAMS + 1} parameters (name=value pairs), more than the limit of {PARAMS}"),
    ("parameters, query string and form", query_and_form(150, 150), query_and_form(151, 150),
     f"UsageError: request: {PARAMS + 1} parameters (name=value pairs), more than the limit of {PARAMS}"),
    ("parameters, multipart", multipart_texts(PARAMS), multipart_texts(PARAMS + 1),
     f"UsageError: request: {PARAMS + 1} parameters (name=value pairs), more than the limit of {PARAMS}"),
    ("parameter bytes, form", form_bytes(PARAM_BYTES), form_bytes(PARAM_BYTES + 1),
     f"UsageError: request: the parameters take {PARAM_BYTES + 1} bytes, more than the limit of {PARAM_BYTES}"),
    ("parameter bytes, query string", {**raw(PREFIX), "params": {"X": "a" * (PARAM_BYTES - len(PREFIX) - 2)}},
     {**raw(PREFIX), "params": {"X": "a" * (PARAM_BYTES - len(PREFIX) - 1)}},
     f"UsageError: request: the parameters take {PARAM_BYTES + 1} bytes, more than the limit of {PARAM_BYTES}"),
    ("parameter bytes, multipart", {"data": {"POS": "150.1,2.2", "SIZE": "0.01", "X": "a" * (PARAM_BYTES - 13)},
                                    "files": {"u": ("u", b"", "text/plain")}},
     {"data": {"POS": "150.1,2.2", "SIZE": "0.01", "X": "a" * (PARAM_BYTES - 12)},
      "files": {"u": ("u", b"", "text/plain")}},
     f"UsageError: request: the parameters take {PARAM_BYTES + 1} bytes, more than the limit of {PARAM_BYTES}"),
    ("CSV columns", upload(csv_columns(COLUMNS)), upload(csv_columns(COLUMNS + 1)),
     f"UsageError: UPLOAD: upload: {COLUMNS + 1} columns, more than the limit of {COLUMNS}"),
    ("VOTable FIELDs", upload(vot_fields(COLUMNS)), upload(vot_fields(COLUMNS + 1)),
     f"UsageError: UPLOAD: upload: more than {COLUMNS} FIELDs, the limit of columns"),
    ("VOTable nrows declared", upload(vot("", rows=FIELDS, table=f' nrows="{FIELDS}"')),
     upload(vot("", rows=FIELDS, table=f' nrows="{FIELDS + 1}"')),
     f"UsageError: UPLOAD: upload: the TABLE declares nrows={FIELDS + 1}, more than the limit of {FIELDS} rows"),
    ("VOTable bytes of a row", upload(vot_row_bytes(TABLE_BYTES)), upload(vot_row_bytes(TABLE_BYTES + 1)),
     f"UsageError: UPLOAD: upload: one row of the FIELDs declared takes {TABLE_BYTES + 1} bytes, more than the "
     f"limit of {TABLE_BYTES} bytes"),
    ("VOTable bytes of the rows", upload(vot_table_bytes(FIELDS, TABLE_BYTES // FIELDS)),
     upload(vot_table_bytes(FIELDS, TABLE_BYTES // FIELDS + 1)),
     f"UsageError: UPLOAD: upload: {FIELDS} rows of {TABLE_BYTES // FIELDS + 1} bytes would take more than the "
     f"limit of {TABLE_BYTES} bytes in memory"),
    ("VOTable nesting", upload(vot_depth(MAX_DEPTH)), upload(vot_depth(MAX_DEPTH + 1)),
     f"UsageError: UPLOAD: upload: elements nested more than {MAX_DEPTH} deep, the limit"),
    ("VOTable other elements", upload(vot_metadata(MAX_METADATA)), upload(vot_metadata(MAX_METADATA + 1)),
     f"UsageError: UPLOAD: upload: more than {MAX_METADATA} elements besides FIELDs, rows and cells, the limit"),
]


@pytest.mark.parametrize("limit,at,over,answer", SHAPES, ids=[c[0] for c in SHAPES])
def test_the_parameters_and_an_uploads_shape_are_bounded_before_they_are_parsed(shaped, limit: str, at: Any,
                                                                                over: Any, answer: str) -> None:
    test_a_job_at_a_limit_is_made_and_one_over_it_is_refused_naming_the_limit(shaped, limit, at, over, answer)


def test_unknown_parameters_are_neither_stored_nor_shown(shaped) -> None:
    made = shaped.post("/async", data={"POS": "150.1,2.2", "SIZE": "0.01", "X\x01": "\x01", "FOO": "bar"},
                       params={"ZAP": "1"}, follow_redirects=False)
    assert made.status_code == 303
    for path in ("", "/parameters"):
        document = shaped.get(made.headers["location"] + path).text
        assert "FOO" not in document.upper() and "bar" not in document and "zap" not in document.lower()
    json = shaped.get(made.headers["location"], headers={"Accept": "application/json"}).json()
    assert [p["id"] for p in json["parameters"]] == ["pos", "size"]
    shaped.delete(made.headers["location"])


MOSAIC = {"POS": "150.1,2.2", "SIZE": "0.02", "MODE": "mosaic", "COLLECTION": "DEMO-DEEP", "BAND": "r",
          "COMBINE": "median", "FORMAT": "image/fits"}


def test_a_mosaic_at_its_input_limit_is_made_and_one_more_input_is_refused(make_client, demo_index) -> None:
    """MAX_COADD_INPUTS bounds the images held to make one product: synchronous mosaics and new jobs are served at
    it and refused one past it naming it; a job's field past it that creation's sample did not see is left out with
    a warning naming it."""
    inputs = len([r for r in demo_index.lookup(Field(150.1, 2.2, 0.02, 0.02))
                  if r.collection == "DEMO-DEEP" and r.band == "r"])
    assert inputs >= 2
    with make_client(workers=1, max_coadd_inputs=inputs) as client:
        made = client.get("/sia/cutout", params=MOSAIC)
        assert made.status_code == 200, made.text
        with fits.open(io.BytesIO(made.content)) as hdul:
            assert hdul[0].header["NCOMBINE"] == inputs
        assert client.post("/async", data=MOSAIC, follow_redirects=False).status_code == 303
    message = (f"would co-add {inputs} images, more than the limit of {inputs - 1}; narrow it with BAND, COLLECTION "
               "or ID, or a smaller SIZE")
    with make_client(workers=1, max_coadd_inputs=inputs - 1) as client:
        refused = client.get("/sia/cutout", params=MOSAIC)
        assert refused.status_code == 400
        assert refused.text.startswith(f"UsageError: MAX_COADD_INPUTS: mosaic-r of field 0 {message}"), refused.text
        created = client.post("/async", data=MOSAIC, follow_redirects=False)
        assert created.status_code == 400
        assert created.text.startswith(f"UsageError: MAX_COADD_INPUTS: a product of field 0 {message}"), created.text
        # 17 fields: the estimate looks at 16 of them, not at field 8, the only one with images
        away = ["10.0,-60.0"] * 17
        away[8] = MOSAIC["POS"]
        job = client.post("/async", data={**MOSAIC, "POS": away, "PHASE": "RUN"}, follow_redirects=False)
        assert job.status_code == 303, job.text
        job_id = job.headers["location"].rsplit("/", 1)[-1]
        wait_for(client, job_id, ("COMPLETED",), timeout=60)
        document = client.get(f"/async/{job_id}", headers={"Accept": "application/json"}).json()
        assert [r["id"] for r in document["results"]] == ["table"]
        assert [v for k, v in document["jobInfo"].items() if k.startswith("warning")] == [
            f"MAX_COADD_INPUTS: mosaic-r of field 8 {message}"]
