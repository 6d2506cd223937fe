"""UPLOAD: position tables in CSV or VOTable, inline, in the param: form or from an allowed URL."""

from __future__ import annotations

import http.server
import io
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import numpy as np
import pytest
from astropy.io.votable.tree import Field as VOField
from astropy.io.votable.tree import Resource, TableElement, VOTableFile

from siasync.errors import UsageError
from siasync.uws import uploads
from siasync.uws.uploads import CSV, VOTABLE, Upload, read_fields
from tests.siasync.helpers import assert_valid, uws_schema

UPLOAD_FORM = {"UPLOAD": "fields,param:fields", "SIZE": "0.01"}


def votable(columns: dict[str, tuple[str, str | None, list]], ucds: dict[str, str] | None = None) -> bytes:
    """A one-table VOTable: name -> (datatype, unit, values)."""
    vot = VOTableFile()
    resource = Resource()
    vot.resources.append(resource)
    table = TableElement(vot)
    resource.tables.append(table)
    table.fields.extend(VOField(vot, name=name, datatype=datatype, unit=unit, ucd=(ucds or {}).get(name),
                                arraysize="*" if datatype == "char" else None)
                        for name, (datatype, unit, _) in columns.items())
    rows = len(next(iter(columns.values()))[2])
    table.create_arrays(rows)
    for name, (_, _, values) in columns.items():
        table.array[name] = values
    out = io.BytesIO()
    vot.to_xml(out)
    return out.getvalue()


def post_upload(client, data: bytes, content_type: str = "text/csv", **form: str):
    return client.post("/async", data={**UPLOAD_FORM, **form}, files={"fields": ("fields.csv", data, content_type)})


# -- reading tables -------------------------------------------------------------------------


def test_a_csv_table_gives_positions_and_optional_sizes() -> None:
    data = b"# my fields\nid,RA,Dec,size\na,150.1,2.2,0.02\nb,150.2,2.3,\n"
    fields = read_fields(Upload("t", CSV, data), max_size_deg=2.0, max_rows=10)
    assert fields.positions == [(150.1, 2.2), (150.2, 2.3)]
    assert fields.sizes == [0.02, None]


def test_a_votable_is_read_by_ucd_with_units_converted_to_degrees() -> None:
    data = votable({"alpha": ("double", "rad", [np.radians(150.1)]), "delta": ("double", "deg", [2.2]),
                    "size": ("double", "arcmin", [1.2])},
                   ucds={"alpha": "pos.eq.ra;meta.main", "delta": "pos.eq.dec;meta.main"})
    fields = read_fields(Upload("t", VOTABLE, data), max_size_deg=2.0, max_rows=10)
    assert fields.positions[0] == pytest.approx((150.1, 2.2))
    assert fields.sizes[0] == pytest.approx(0.02)


def test_100000_rows_are_read() -> None:
    rng = np.random.default_rng(5)
    ra, dec = rng.uniform(0, 360, 100_000), rng.uniform(-90, 90, 100_000)
    data = ("ra,dec\n" + "".join(f"{r!r},{d!r}\n" for r, d in zip(ra.tolist(), dec.tolist(), strict=True))).encode()
    fields = read_fields(Upload("t", CSV, data), max_size_deg=2.0, max_rows=100_000)
    assert fields.positions == list(zip(ra.tolist(), dec.tolist(), strict=True))


#: (what is wrong, table bytes, words the message must hold: the table, row and column at fault)
MALFORMED = [
    ("empty file", b"", ["fields", "empty"]),
    ("only blanks", b"  \n\n", ["fields", "empty"]),
    ("only comments", b"# nothing\n", ["fields", "empty"]),
    ("header without rows", b"ra,dec\n", ["fields", "no rows"]),
    ("no ra column", b"x,dec\n1,2\n", ["fields", "no column 'ra'", "x, dec"]),
    ("no dec column", b"ra,y\n1,2\n", ["fields", "no column 'dec'"]),
    ("two ra columns", b"ra,RA,dec\n1,1,2\n", ["fields", "could be 'ra'"]),
    ("non-numeric ra", b"ra,dec\n1,2\nabc,3\n", ["row 2", "column ra", "not a number", "'abc'"]),
    ("non-numeric dec", b"ra,dec\n1,2x\n", ["row 1", "column dec", "not a number"]),
    ("empty dec", b"ra,dec\n1,2\n3,\n", ["row 2", "column dec", "empty"]),
    ("ra of 360", b"ra,dec\n360,2\n", ["row 1", "column ra", "out of range", "[0, 360)"]),
    ("negative ra", b"ra,dec\n10,0\n-1,2\n", ["row 2", "column ra", "out of range"]),
    ("dec beyond the pole", b"ra,dec\n1,90.5\n", ["row 1", "column dec", "out of range", "[-90, 90]"]),
    ("nan", b"ra,dec\nnan,2\n", ["row 1", "column ra", "not a finite number"]),
    ("infinity", b"ra,dec\n1,-inf\n", ["row 1", "column dec", "not a finite number"]),
    ("underscores", b"ra,dec\n1_0,2\n", ["row 1", "column ra", "not a number"]),
    ("zero size", b"ra,dec,size\n1,2,0\n", ["row 1", "column size", "out of range"]),
    ("size too big", b"ra,dec,size\n1,2,0.1\n1,2,3\n", ["row 2", "column size", "out of range", "(0, 2]"]),
    ("ragged row", b"ra,dec\n1,2\n1,2,3\n", ["row 2", "3 values", "2 columns"]),
    ("binary", b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", ["fields", "not a CSV or VOTable"]),
    ("NUL bytes", b"ra,dec\n1\x00,2\n", ["fields", "NUL"]),
    ("broken VOTable", b"<?xml version='1.0'?><VOTABLE><RESOURCE><TABLE>", ["fields", "not a valid VOTable"]),
    ("VOTable without dec", votable({"ra": ("double", "deg", [1.0])}), ["fields", "no column 'dec'", "pos.eq.dec"]),
    ("VOTable ra in metres", votable({"ra": ("double", "m", [1.0]), "dec": ("double", "deg", [2.0])}),
     ["fields", "column ra", "not an angle"]),
    ("VOTable char ra", votable({"ra": ("char", None, ["x1"]), "dec": ("double", "deg", [2.0])}),
     ["row 1", "column ra", "not a number"]),
    ("too many rows", b"ra,dec\n" + b"1,2\n" * 11, ["fields", "limit", "10"]),
]


@pytest.mark.parametrize(("data", "words"), [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED])
def test_a_malformed_upload_is_refused_naming_row_and_column(make_client, data: bytes, words: list[str]) -> None:
    with make_client(max_fields=10) as client:
        response = post_upload(client, data)
        assert response.status_code == 400, response.text
        assert response.text.startswith("UsageError: UPLOAD: fields: ")
        for word in words:
            assert word in response.text, response.text
        assert client.get("/async", headers={"Accept": "application/json"}).json() == []  # nothing stored


def test_upload_references_are_checked(client) -> None:
    missing = client.post("/async", data={"UPLOAD": "fields,param:other", "SIZE": "0.01"},
                          files={"fields": ("f.csv", b"ra,dec\n1,2\n", "text/csv")})
    assert missing.status_code == 400 and "no multipart file part named 'other'" in missing.text
    for bad, words in (("fields", "expected name,URI"), ("../x,param:fields", "must start with a letter"),
                       ("fields,ftp://example.org/x", "unsupported URI"),
                       ("fields,https://example.org/x.csv", "does not fetch")):
        response = client.post("/async", data={"UPLOAD": bad, "SIZE": "0.01"},
                               files={"fields": ("f.csv", b"ra,dec\n1,2\n", "text/csv")})
        assert response.status_code == 400 and response.text.startswith("UsageError: UPLOAD: "), response.text
        assert words in response.text


# -- jobs from uploads ------------------------------------------------------------------------


def test_an_uploaded_table_makes_the_fields_after_the_pos_values(client) -> None:
    table = b"ra,dec,size\n150.1,2.2,0.02\n150.2,2.3,\n"
    response = client.post("/async", data={**UPLOAD_FORM, "POS": "150.0,2.0"},
                           files={"fields": ("f.csv", table, "text/csv")}, follow_redirects=False)
    assert response.status_code == 303, response.text
    job_url = response.headers["location"]
    doc = client.get(job_url, headers={"Accept": "application/json"}).json()
    assert doc["jobInfo"]["fields_total"] == 3
    upload = [p for p in doc["parameters"] if p["id"] == "upload"]
    assert upload == [{"id": "upload", "value": f"{job_url}/parameters/fields",
                       "byReference": True}]
    # the parameters list is valid UWS and shows the table by reference; it reads back as sent
    root = assert_valid(uws_schema(), client.get(job_url + "/parameters").content)
    by_reference = [p for p in root if p.get("id") == "upload"]
    assert len(by_reference) == 1 and by_reference[0].get("byReference") == "true"
    back = client.get(by_reference[0].text.removeprefix("http://testserver.local"))
    assert back.status_code == 200 and back.content == table and back.headers["content-type"].startswith("text/csv")
    assert client.get(job_url + "/parameters/nothing").status_code == 404


def test_an_inline_upload_and_per_row_sizes_without_size(client) -> None:
    response = client.post("/async", files={"UPLOAD": ("f.csv", b"ra,dec,size\n150.1,2.2,0.02\n", "text/csv")},
                           follow_redirects=False)
    assert response.status_code == 303, response.text
    job = client.get(response.headers["location"], headers={"Accept": "application/json"}).json()
    assert job["jobInfo"]["fields_total"] == 1
    no_size = client.post("/async", files={"UPLOAD": ("f.csv", b"ra,dec,size\n150.1,2.2,\n", "text/csv")})
    assert no_size.status_code == 400 and "UsageError: SIZE: required" in no_size.text


def test_changing_parameters_keeps_or_replaces_the_tables(client) -> None:
    created = client.post("/async", data=UPLOAD_FORM, files={"fields": ("f.csv", b"ra,dec\n150.1,2.2\n", "text/csv")},
                          follow_redirects=False)
    job_url = created.headers["location"]
    assert client.post(job_url + "/parameters", data={"SIZE": "0.02"}).status_code == 200  # after the 303
    job = client.get(job_url, headers={"Accept": "application/json"}).json()
    assert job["jobInfo"]["fields_total"] == 1 and {"id": "size", "value": "0.02"} in job["parameters"]
    replaced = client.post(job_url + "/parameters", data={"UPLOAD": "more,param:more"},
                           files={"more": ("m.csv", b"ra,dec\n150.1,2.2\n150.2,2.2\n", "text/csv")})
    assert replaced.status_code == 200, replaced.text
    job = client.get(job_url, headers={"Accept": "application/json"}).json()
    assert job["jobInfo"]["fields_total"] == 2
    assert client.get(job_url + "/parameters/fields").status_code == 404
    assert client.get(job_url + "/parameters/more").content == b"ra,dec\n150.1,2.2\n150.2,2.2\n"


#: the paths the table server was asked for, and the bytes its slow table sent
FETCHED: list[str] = []
SLOW_SENT: list[int] = []


@pytest.fixture
def table_server() -> Iterator[str]:
    """A loopback HTTP server with one CSV table at /lists/fields.csv (and at any path ending so), a redirect out of
    /lists/, and a table sent a byte at a time."""
    FETCHED.clear()
    SLOW_SENT.clear()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            FETCHED.append(self.path)
            if self.path == "/lists/slow.csv":  # a byte every 0.2 s: each read is quick, the whole is not
                self.send_response(200)
                self.send_header("Content-Length", "200")
                self.end_headers()
                for _ in range(200):
                    self.wfile.write(b"#")
                    self.wfile.flush()
                    SLOW_SENT.append(1)
                    time.sleep(0.2)
                return
            if self.path == "/lists/moved.csv":  # a redirect out of the allowed prefix
                self.send_response(302)
                self.send_header("Location", "/private/fields.csv")
                self.end_headers()
                return
            body = b"ra,dec\n150.1,2.2\n" if self.path.endswith("/fields.csv") else b""
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/csv")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_url_upload_is_fetched_only_from_an_allowed_prefix(make_client, table_server: str) -> None:
    with make_client(upload_urls=(table_server + "/lists/",)) as client:
        allowed = client.post("/async", data={"UPLOAD": f"fields,{table_server}/lists/fields.csv", "SIZE": "0.01"},
                              follow_redirects=False)
        assert allowed.status_code == 303, allowed.text
        assert client.get(allowed.headers["location"] + "/parameters/fields").content == b"ra,dec\n150.1,2.2\n"
        elsewhere = client.post("/async", data={"UPLOAD": f"fields,{table_server}/private/fields.csv",
                                                "SIZE": "0.01"})
        assert elsewhere.status_code == 400 and "does not fetch" in elsewhere.text
        missing = client.post("/async", data={"UPLOAD": f"fields,{table_server}/lists/none.csv", "SIZE": "0.01"})
        assert missing.status_code == 400 and "cannot fetch" in missing.text
        moved = client.post("/async", data={"UPLOAD": f"fields,{table_server}/lists/moved.csv", "SIZE": "0.01"})
        assert moved.status_code == 400 and "redirects to" in moved.text and "does not fetch" in moved.text


@pytest.mark.parametrize("path", ["/lists/../private/fields.csv", "/lists/%2e%2e/private/fields.csv",
                                  "/lists/..%2fprivate/fields.csv", "/lists/%2E%2E%2Fprivate/fields.csv",
                                  "/lists/./../private/fields.csv", "/lists/%252e%252e/private/fields.csv",
                                  "/lists\\..\\private/fields.csv", "/lists%2f..%2fprivate/fields.csv"])
def test_a_url_is_compared_with_the_prefixes_once_normalised(make_client, table_server: str, path: str) -> None:
    """Dot segments, percent-encoded or not, never leave the allowed prefix; nothing is fetched."""
    with make_client(upload_urls=(table_server + "/lists/",)) as client:
        refused = client.post("/async", data={"UPLOAD": f"fields,{table_server}{path}", "SIZE": "0.01"})
        assert refused.status_code == 400
        assert refused.text.startswith(f"UsageError: UPLOAD: fields: this service does not fetch {table_server}{path}")
    assert FETCHED == []


def test_a_url_within_the_prefix_is_fetched_as_normalised(make_client, table_server: str) -> None:
    with make_client(upload_urls=(table_server + "/lists/",)) as client:
        for path in ("/lists/./fields.csv", "/lists/x/../fields.csv", "/lists/%66ields.csv"):
            made = client.post("/async", data={"UPLOAD": f"fields,{table_server}{path}", "SIZE": "0.01"},
                               follow_redirects=False)
            assert made.status_code == 303, made.text
    assert FETCHED == ["/lists/fields.csv"] * 3


def test_a_fetch_has_one_deadline_however_its_bytes_trickle(make_client, table_server: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Each read gets a byte well within any per-read timeout; the fetch as a whole is refused at its deadline."""
    monkeypatch.setattr(uploads, "FETCH_DEADLINE_S", 1.0)
    with make_client(upload_urls=(table_server + "/lists/",)) as client:
        refused = client.post("/async", data={"UPLOAD": f"fields,{table_server}/lists/slow.csv", "SIZE": "0.01"})
    assert refused.status_code == 400
    assert refused.text.startswith(f"UsageError: UPLOAD: fields: fetching {table_server}/lists/slow.csv took longer "
                                   "than the limit of 1 s"), refused.text
    assert 0 < len(SLOW_SENT) < 200  # refused while the table was still coming


def test_usage_errors_of_read_fields_name_the_parameter() -> None:
    with pytest.raises(UsageError) as caught:
        read_fields(Upload("t", CSV, b"ra,dec\n1,x\n"), max_size_deg=1.0, max_rows=5)
    assert caught.value.param == "UPLOAD"


def test_the_html_form_posts_an_upload_and_ignores_an_empty_file_input(client) -> None:
    page = client.get("/", headers={"Accept": "text/html"}).text
    assert 'enctype="multipart/form-data"' in page and 'name="UPLOAD"' in page
    with_file = client.post("/async", data={"POS": "", "SIZE": "0.01"},
                            files={"UPLOAD": ("mine.csv", b"ra,dec\n150.1,2.2\n", "text/csv")}, follow_redirects=False)
    assert with_file.status_code == 303, with_file.text
    job_page = client.get(with_file.headers["location"], headers={"Accept": "text/html"}).text
    assert f'href="{urlsplit(with_file.headers["location"]).path}/parameters/upload"' in job_page
    without = client.post("/async", data={"POS": "150.1,2.2", "SIZE": "0.01"},
                          files={"UPLOAD": ("", b"", "application/octet-stream")}, follow_redirects=False)
    assert without.status_code == 303, without.text
    as_chromium_sends_it = (b'--B\r\nContent-Disposition: form-data; name="POS"\r\n\r\n150.1,2.2\r\n'
                            b'--B\r\nContent-Disposition: form-data; name="SIZE"\r\n\r\n0.01\r\n'
                            b'--B\r\nContent-Disposition: form-data; name="UPLOAD"; filename=""\r\n'
                            b'Content-Type: application/octet-stream\r\n\r\n\r\n--B--\r\n')
    empty = client.post("/async", content=as_chromium_sends_it, follow_redirects=False,
                        headers={"Content-Type": "multipart/form-data; boundary=B"})
    assert empty.status_code == 303, empty.text


def _vot(fields: str, table: str = "", rows: str = "<TR><TD>150.1</TD><TD>2.2</TD></TR>", before: str = "") -> bytes:
    return (f'<?xml version="1.0"?>\n{before}<VOTABLE version="1.3" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">'
            f'<RESOURCE><TABLE{table}><FIELD name="ra" datatype="double"/><FIELD name="dec" datatype="double"/>'
            f"{fields}<DATA>{rows}</DATA></TABLE></RESOURCE></VOTABLE>").encode()


BOMBS = [
    # astropy's parse time grows with the square of the FIELDs: 40,000 of them took 149 s
    ("40,000 FIELDs", _vot("".join(f'<FIELD name="c{i}" datatype="double"/>' for i in range(40_000)),
                           rows="<TABLEDATA/>"), "more than 1000 FIELDs, the limit of columns"),
    # astropy allocates the declared rows, and fixed arrays, before it reads one
    ("nrows of 200 million", _vot("", ' nrows="200000000"', "<TABLEDATA><TR><TD>1</TD><TD>2</TD></TR></TABLEDATA>"),
     "the TABLE declares nrows=200000000, more than the limit of 100000 rows"),
    ("an array of 50 million doubles", _vot('<FIELD name="x" datatype="double" arraysize="50000000"/>',
                                            rows="<TABLEDATA><TR><TD>1</TD><TD>2</TD><TD/></TR></TABLEDATA>"),
     "one row of the FIELDs declared takes 400000016 bytes, more than the limit"),
    ("an array of 10x5000000 strings", _vot('<FIELD name="x" datatype="char" arraysize="10x50000000"/>'),
     "one row of the FIELDs declared takes 500000016 bytes"),
    ("a bad arraysize", _vot('<FIELD name="x" datatype="char" arraysize="-1"/>'), "arraysize '-1' is not sizes"),
    # astropy fetches a STREAM href, file: URLs included: the server's own files, or its network
    ("a STREAM of a local file", _vot("", rows='<BINARY><STREAM href="file:///etc/passwd"/></BINARY>'),
     "its data is elsewhere (STREAM href)"),
    ("a STREAM of a URL", _vot("", rows='<BINARY2><STREAM href="http://169.254.169.254/latest"/></BINARY2>'),
     "its data is elsewhere (STREAM href)"),
    ("the FITS serialization", _vot("", rows='<FITS><STREAM href="file:///etc/hosts"/></FITS>'),
     "the FITS serialization refers to a file elsewhere"),
    ("entities", _vot("", before='<!DOCTYPE VOTABLE [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>\n'),
     "the document declares entities"),
    ("deep nesting", _vot("", rows="<TABLEDATA>" + "<TR>" * 100 + "</TR>" * 100 + "</TABLEDATA>"),
     "elements nested more than 32 deep"),
]


@pytest.mark.parametrize(("data", "words"), [b[1:] for b in BOMBS], ids=[b[0] for b in BOMBS])
def test_a_votable_whose_shape_is_a_bomb_is_refused_before_astropy_reads_it(data: bytes, words: str,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("astropy was asked to parse the table")

    monkeypatch.setattr("siasync.uws.uploads.parse_single_table", never)
    with pytest.raises(UsageError) as refused:
        read_fields(Upload("bomb", VOTABLE, data), max_size_deg=1.0, max_rows=100_000)
    assert refused.value.param == "UPLOAD" and str(refused.value).startswith("UPLOAD: bomb: "), str(refused.value)
    assert words in str(refused.value)


def test_a_votable_with_an_inline_binary_stream_and_variable_arrays_is_read() -> None:
    """What the shape check lets through: data inline (BINARY2), variable arrays (``*``) and a DOCTYPE naming the
    VOTable DTD by reference, as old VOTables do."""
    import base64
    import struct

    stream = base64.b64encode(b"".join(b"\x00" + struct.pack(">dd", 150.1 + i / 100, 2.2) + struct.pack(">i", 1)
                                       + b"x" for i in range(3))).decode()
    data = _vot('<FIELD name="label" datatype="char" arraysize="*"/>',
                rows=f'<BINARY2><STREAM encoding="base64">{stream}</STREAM></BINARY2>',
                before='<!DOCTYPE VOTABLE SYSTEM "http://us-vo.org/xml/VOTable.dtd">\n')
    fields = read_fields(Upload("t", VOTABLE, data), max_size_deg=1.0, max_rows=10)
    assert fields.positions == [(150.1 + i / 100, 2.2) for i in range(3)]
