"""Fuzzed input: every parser returns a valid value or a `UsageError` naming its parameter, nothing else.

Hypothesis feeds the job parameter parsers (POS, SIZE, FORMAT, INTERSECT, the times, PHASE), the
upload readers (CSV and VOTable bytes) and the Range header parser with values near the valid ones
and far from them. A parser that raised any other exception would answer a 500; one that returns
must return a value inside the limits. Then the same values go through HTTP, on one app for the
module: job creation, uploads, every change to a job, WAIT (parsed by the job service), the job list
filters, the event stream's start, /sia, /sia/cutout and raw bodies. Across all of it: no 5xx, and
every 4xx is ``Name: message`` in text/plain, a 400 naming the parameter at fault first.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cutout.sky import Intersect
from siasync.errors import UsageError
from siasync.uws.params import (
    JOB_PARAMETERS,
    Limits,
    clamp_destruction,
    clamp_duration,
    parse_choice,
    parse_format,
    parse_int,
    parse_job,
    parse_phase_on_create,
    parse_pos,
    parse_positions,
    parse_size,
    parse_time,
)
from siasync.uws.uploads import CSV, VOTABLE, Upload, read_fields, resolve
from siasync.vocabulary import FORMATS, PHASES
from siasync.web.download import byte_range

LIMITS = Limits(collections=frozenset({"DEMO-WIDE", "DEMO-DEEP"}), bands=frozenset({"g", "r"}), max_fields=40,
                max_size_deg=1.0, destruction_default_s=3600, destruction_max_s=86400, execution_default_s=60,
                execution_max_s=600)
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
#: examples per property: cheap parsers get many, table readers (astropy for VOTables) fewer
MANY, SOME = settings(max_examples=200), settings(max_examples=100)


def raises_named(param: str | tuple[str, ...], fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn``; a `UsageError` must name ``param`` (one of them) first in its message. Return None then."""
    names = (param,) if isinstance(param, str) else param
    try:
        return fn(*args)
    except UsageError as exc:
        assert exc.param in names, exc
        assert str(exc).startswith(f"{exc.param}: ") and len(str(exc)) > len(exc.param) + 2, exc
        assert exc.render().startswith(f"UsageError: {exc.param}: ")
        return None


# -- values ---------------------------------------------------------------------------------------

#: near misses that a number parser could let through, or choke on
ODD_NUMBERS = ["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1e400", "1_0", "0x10", "0o7", "1j", "١٢", "１２",
               "", " ", "+", "-", ".", "e5", "1e", "1.2.3", "9" * 5000, "0." + "0" * 400 + "1", "\x00", "1\x00",
               "  7  ", "\t3\n", "1,5", "+0", "-0", "00012"]
#: whitespace of every kind: str.isspace() and the regular expression \s take more than float() strips
pads = st.sampled_from(["", " ", "\t", "\u00a0", "\x0b", "\x1c", "\x1e", "\x85", "\u2028", "\u3000"])
bare_numbers = st.one_of(st.floats().map(repr),
                         st.floats(allow_nan=False, allow_infinity=False).map(lambda f: f"{f:.3e}"),
                         st.integers(-1000, 1000).map(str), st.integers().map(str), st.sampled_from(ODD_NUMBERS),
                         st.text(alphabet=" +-.eE0123456789_x", max_size=12), st.text(max_size=8))
numbers = st.one_of(bare_numbers, st.builds(lambda before, n, after: before + n + after, pads, bare_numbers, pads))
in_range = st.tuples(st.floats(0, 359.999999), st.floats(-90, 90)).map(lambda p: f"{p[0]!r},{p[1]!r}")
positions = st.one_of(
    in_range,
    st.builds(lambda a, b, sep, pad: f"{pad}{a}{pad}{sep}{pad}{b}{pad}", numbers, numbers,
              st.sampled_from([",", ", ", " ", ",,", ":"]), pads),
    st.text(max_size=30))
sizes = st.one_of(st.builds(lambda *p: ",".join(p), numbers), st.builds(lambda a, b: f"{a},{b}", numbers, numbers),
                  st.floats(0, 1.5).map(repr), st.text(max_size=20))


def case_variants(words: list[str]) -> st.SearchStrategy[str]:
    """The words, in any letter case, padded, and text near them."""
    return st.one_of(st.builds(lambda w, upper, pad: pad + "".join(c.upper() if u else c.lower()
                                                                   for c, u in zip(w, upper * len(w))) + pad,
                               st.sampled_from(words), st.lists(st.booleans(), min_size=1, max_size=3), pads),
                     st.builds(lambda w, t: w + t, st.sampled_from(words), st.text(max_size=3)),
                     st.text(max_size=20))


offsets = st.builds(lambda m: timezone(timedelta(minutes=m)), st.integers(-23 * 60 - 59, 23 * 60 + 59))
instants = st.one_of(
    st.datetimes(timezones=st.none() | offsets).map(lambda d: d.isoformat()),
    st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31)).map(lambda d: d.isoformat() + "Z"),
    st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01", "9999-12-31T23:59:59Z",
                     "2026-13-45T99:00:00", "1700000000", "tomorrow", "2026-06-01T12:00:00+25:00", "", "T", "Z"]),
    st.text(alphabet="0123456789-:T.+Z ", max_size=30), st.text(max_size=20))
integers = st.one_of(st.integers().map(str), st.integers(-5, 100_000).map(str), st.sampled_from(ODD_NUMBERS),
                     st.builds(lambda before, n, after: before + n + after, pads, st.integers(0, 99).map(str), pads),
                     st.integers(4290, 4310).map(lambda n: "9" * n), st.text(max_size=10))


# -- single parameters ----------------------------------------------------------------------------


@MANY
@given(positions)
def test_pos_is_a_position_in_range_or_a_pos_error(text: str) -> None:
    value = raises_named("POS", parse_pos, text)
    if value is not None:
        ra, dec = value
        assert math.isfinite(ra) and math.isfinite(dec) and 0 <= ra < 360 and -90 <= dec <= 90


@SOME
@given(st.lists(st.one_of(positions.filter(lambda p: not set(p) & set(";\r\n")), pads), min_size=1, max_size=30),
       st.lists(st.sampled_from(["\n", "\r\n", ";", " ; \n", "\r"]), min_size=1), st.integers(1, 5))
def test_a_pos_list_parses_like_each_position_alone(lines: list[str], separators: list[str], values: int) -> None:
    """The bulk path (one float() over the whole list) agrees with `parse_pos` line by line, faults included."""
    joined = [separators[i % len(separators)].join(lines[i::values]) for i in range(values)]
    wanted = [line for value in joined for line in _lines(value)]
    try:
        expected = tuple(parse_pos(line) for line in wanted)
    except UsageError as exc:
        with pytest.raises(UsageError) as listed:
            parse_positions(joined)
        assert str(listed.value) == str(exc)
    else:
        assert parse_positions(joined) == expected


def _lines(value: str) -> list[str]:
    """The positions of one POS value, split as the service documents it: by line or by ';'."""
    parts = value.replace("\r\n", "\n").replace("\r", "\n").replace(";", "\n").split("\n")
    return [p for p in parts if p and not p.isspace()]


@MANY
@given(sizes)
@example("0.1\x1e")  # \s matches the record separator; float() refuses it
def test_size_is_one_or_two_positive_numbers_up_to_the_limit_or_zero_or_a_size_error(text: str) -> None:
    value = raises_named("SIZE", parse_size, text, LIMITS.max_size_deg)
    if value == (0.0, 0.0):  # SIAP 1.0 SIZE=0: every number given is zero
        assert all(float(part) == 0 for part in text.split(","))
    elif value is not None:
        assert len(value) == 2 and all(0 < s <= LIMITS.max_size_deg and math.isfinite(s) for s in value)
        if "," not in text:
            assert value[0] == value[1]


@MANY
@given(case_variants(list(FORMATS)))
def test_format_is_a_known_format_or_a_format_error(text: str) -> None:
    value = raises_named("FORMAT", parse_format, text)
    if value is not None:
        assert value in FORMATS and value.lower() == text.strip().lower()


@MANY
@given(case_variants([m.value for m in Intersect]))
def test_intersect_is_a_known_mode_or_an_intersect_error(text: str) -> None:
    value = raises_named("INTERSECT", parse_choice, "INTERSECT", text, [m.value for m in Intersect])
    if value is not None:
        assert Intersect(value).value == text.strip().upper()


@MANY
@given(case_variants(["RUN", "ABORT", *PHASES]))
def test_phase_on_creation_is_run_or_a_phase_error(text: str) -> None:
    value = raises_named("PHASE", parse_phase_on_create, text)
    assert value in (None, True)
    assert (value is True) == (text.strip().upper() == "RUN")


@MANY
@given(instants, st.sampled_from(["DESTRUCTION", "START", "AFTER", "TIME"]))
@example("0001-01-01T00:00:00+01:00", "DESTRUCTION")  # a year-1 instant east of UTC is before datetime.min in UTC
@example("9999-12-31T23:59:59-01:00", "START")
def test_a_time_is_an_aware_utc_instant_or_an_error_naming_it(text: str, param: str) -> None:
    value = raises_named(param, parse_time, param, text)
    if value is not None:
        assert value.utcoffset() == timedelta(0)


@MANY
@given(instants)
@example("9999-12-31T23:59:59Z")
def test_destruction_is_in_the_future_within_the_retention_or_a_destruction_error(text: str) -> None:
    instant = raises_named("DESTRUCTION", parse_time, "DESTRUCTION", text)
    if instant is not None:
        value = raises_named("DESTRUCTION", clamp_destruction, instant, LIMITS, NOW)
        if value is not None:
            assert NOW < value <= NOW + timedelta(seconds=LIMITS.destruction_max_s)


@MANY
@given(integers)
@example("9" * 4301)  # more digits than int() converts by default
def test_execution_duration_is_clamped_seconds_or_an_executionduration_error(text: str) -> None:
    seconds = raises_named("EXECUTIONDURATION", parse_int, "EXECUTIONDURATION", text)
    if seconds is not None:
        value = raises_named("EXECUTIONDURATION", clamp_duration, seconds, LIMITS)
        if value is not None:
            assert 0 < value <= LIMITS.execution_max_s


# -- whole jobs -----------------------------------------------------------------------------------

VALUES = {"POS": positions, "SIZE": sizes, "FORMAT": case_variants(list(FORMATS)),
          "INTERSECT": case_variants([m.value for m in Intersect]), "DESTRUCTION": instants, "START": instants,
          "EXECUTIONDURATION": integers, "PHASE": case_variants(["RUN", "ABORT"]),
          "COLLECTION": case_variants(["DEMO-WIDE", "DEMO-DEEP", ""]), "BAND": case_variants(["g", "r", "z"]),
          "RUNID": st.text(max_size=300)}
extra = st.lists(st.one_of(
    st.sampled_from(list(VALUES)).flatmap(lambda name: st.tuples(st.just(name), VALUES[name])),
    st.tuples(st.sampled_from(["POS", "SIZE"]), in_range),
    st.tuples(st.text(max_size=8).map(str.upper), st.text(max_size=8))), max_size=5)
#: a valid core (some positions and a size) or none, then any parameters
params = st.builds(lambda core, more: core + more, st.one_of(st.just([]), st.builds(
    lambda pos, size: [("POS", p) for p in pos] + [("SIZE", size)], st.lists(in_range, min_size=1, max_size=3),
    st.floats(0.001, 1.0).map(repr))), extra)


@settings(max_examples=200)
@given(params)
def test_a_job_is_valid_or_refused_naming_one_of_its_parameters(raw: list[tuple[str, str]]) -> None:
    parsed = raises_named(JOB_PARAMETERS, parse_job, raw, LIMITS, NOW)
    if parsed is None:
        return
    request, control = parsed
    assert 0 < len(request.positions) <= LIMITS.max_fields
    assert all(0 <= ra < 360 and -90 <= dec <= 90 for ra, dec in request.positions)
    assert request.size is not None and all(0 < s <= LIMITS.max_size_deg for s in request.size)
    assert request.format in FORMATS and Intersect(request.intersect)
    assert set(request.collections) <= LIMITS.collections and set(request.bands) <= LIMITS.bands
    assert 0 < control.execution_duration <= LIMITS.execution_max_s
    assert NOW < control.destruction <= NOW + timedelta(seconds=LIMITS.destruction_max_s)
    assert control.run == any(n == "PHASE" for n, _ in raw)
    assert control.run_id is None or (len(control.run_id) <= 255 and control.run_id.isprintable())


# -- uploads --------------------------------------------------------------------------------------

COLUMN_NAMES = ["ra", "dec", "size", "RA", " Dec ", "id", "name", "ra ", "SIZE", ""]
cells = st.one_of(numbers, st.floats(0, 359).map(repr), st.floats(-90, 90).map(repr), st.just(""),
                  st.text(alphabet='",\'\n \\', max_size=4))


@st.composite
def csv_tables(draw: st.DrawFn) -> bytes:
    """CSV text near a valid table: a header of likely names, rows of likely numbers, comments and quotes."""
    if draw(st.booleans()):  # a valid table, then perhaps one fault
        header = draw(st.permutations(["ra", "dec", *draw(st.sampled_from([[], ["size"], ["id", "size"]]))]))
        valid = {"ra": st.floats(0, 359.9), "dec": st.floats(-90, 90), "size": st.floats(0.001, 1.0), "id": st.just(7)}
        rows = draw(st.lists(st.tuples(*(valid[name].map(repr) for name in header)).map(list), min_size=1,
                             max_size=12))
        if draw(st.booleans()) and rows:
            row, column = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, len(header) - 1))
            rows[row][column] = draw(cells)
    else:
        header = draw(st.lists(st.one_of(st.sampled_from(COLUMN_NAMES), st.text(max_size=5)), min_size=1,
                               max_size=5))
        width = draw(st.integers(max(1, len(header) - 1), len(header) + 1))
        rows = draw(st.lists(st.lists(cells, min_size=width, max_size=width), max_size=12))
    lines = [",".join(header)] + [",".join(row) for row in rows]
    for at in draw(st.lists(st.integers(0, len(lines)), max_size=2)):
        lines.insert(at, draw(st.sampled_from(["# a comment", "", "   ", '"unclosed', "\x00"])))
    text = draw(st.sampled_from(["\n", "\r\n"])).join(lines)
    return draw(st.sampled_from([b"", b"\xef\xbb\xbf"])) + text.encode()


@st.composite
def votables(draw: st.DrawFn) -> bytes:
    """VOTable XML near a valid position table, sometimes cut short."""
    column = st.tuples(
        st.sampled_from(["ra", "dec", "size", "alpha", "delta", "x"]),
        st.sampled_from(["double", "float", "int", "long", "short", "char", "boolean", "unsignedByte",
                         "floatComplex", "bit", "nonsense"]),
        st.sampled_from([None, "deg", "rad", "arcmin", "arcsec", "m", "km/s", "foo", ""]),
        st.sampled_from([None, "pos.eq.ra;meta.main", "pos.eq.dec", "POS.EQ.RA", "pos.eq.ra pos.eq.dec"]),
        st.sampled_from([None, "*", "2", "3x2"]))
    valid = draw(st.booleans())
    if valid:  # ra and dec in degrees (by name or UCD), perhaps a size, perhaps one odd column
        columns = [("ra", "double", "deg", None, None), ("b", "float", None, "pos.eq.dec", None)]
        columns += draw(st.sampled_from([[], [("size", "double", "arcmin", None, None)]]))
        columns += draw(st.lists(column, max_size=1))
        values = [st.floats(0, 359.9).map(repr), st.floats(-90, 90).map(repr), st.floats(0.1, 60).map(repr), cells]
        rows = draw(st.lists(st.tuples(*values[:len(columns)]).map(list), min_size=1, max_size=8))
    else:
        columns = draw(st.lists(column, min_size=1, max_size=4))
        rows = draw(st.lists(st.lists(cells, min_size=len(columns), max_size=len(columns)), max_size=8))
    fields = "".join(f"<FIELD name={quoteattr(n)} datatype={quoteattr(t)}" + (f" unit={quoteattr(u)}" if u is not None
                     else "") + (f" ucd={quoteattr(c)}" if c else "") + (f" arraysize={quoteattr(a)}" if a else "")
                     + "/>" for n, t, u, c, a in columns)
    data = "".join("<TR>" + "".join(f"<TD>{escape(v)}</TD>" for v in row) + "</TR>" for row in rows)
    text = ('<?xml version="1.0"?><VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">'
            f"<RESOURCE><TABLE>{fields}<DATA><TABLEDATA>{data}</TABLEDATA></DATA></TABLE></RESOURCE></VOTABLE>")
    cut = draw(st.one_of(st.none(), st.integers(0, len(text)))) if not valid or draw(st.booleans()) else None
    return text[:cut].encode()


def check_fields(upload: Upload, max_rows: int = 10) -> None:
    fields = raises_named("UPLOAD", read_fields, upload, LIMITS.max_size_deg, max_rows)
    if fields is None:
        return
    assert 0 < len(fields.positions) == len(fields.sizes) <= max_rows
    assert all(0 <= ra < 360 and -90 <= dec <= 90 for ra, dec in fields.positions)
    assert all(s is None or 0 < s <= LIMITS.max_size_deg for s in fields.sizes)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(csv_tables(), st.binary(max_size=200)))
@example(b"ra,dec\n1,2\n3,4\n5,6\n7,8\n9,10\n11,12\n13,14\n15,16\n17,18\n19,20\n21,22\n")  # 11 rows: over the limit
def test_a_csv_upload_gives_fields_in_range_or_an_upload_error(data: bytes) -> None:
    check_fields(Upload("t", CSV, data))


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(votables())
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # astropy: 1e400 in a float
def test_a_votable_upload_gives_fields_in_range_or_an_upload_error(data: bytes) -> None:
    check_fields(Upload("t", VOTABLE, data))


@MANY
@given(st.lists(st.one_of(st.text(max_size=30), st.builds(lambda n, u: f"{n},{u}", st.text(max_size=10), st.one_of(
    st.sampled_from(["param:fields", "param:other", "param:", "http://example.org/x.csv", "https://a/b",
                     "file:///etc/passwd", "ftp://x", "param:../../etc/passwd"]), st.text(max_size=10)))),
    max_size=4))
def test_upload_references_resolve_to_named_tables_or_an_upload_error(values: list[str]) -> None:
    """No URL is allowed here, so nothing is ever fetched; an error names UPLOAD."""
    parts = {"fields": ("text/csv", b"ra,dec\n1,2\n"), "other": ("application/octet-stream", b"<?xml ")}
    uploads = raises_named("UPLOAD", lambda: asyncio.run(resolve(values, parts, ())))
    if uploads is not None:
        assert len(uploads) == len(values) == len({u.name for u in uploads})
        assert all(u.mime_type in (CSV, VOTABLE) and u.data in (b"ra,dec\n1,2\n", b"<?xml ") for u in uploads)


positions_in_bytes = st.one_of(st.just(""), st.integers(0, 10**30).map(str), st.just("9" * 5000))


@MANY
@given(positions_in_bytes, positions_in_bytes, st.integers(0, 30), st.integers(0, 10**6))
@example("9" * 5000, "", 0, 100)
def test_a_range_header_is_a_range_in_the_file_unsatisfiable_or_ignored(first: str, last: str, zeros: int,
                                                                       size: int) -> None:
    chosen = byte_range(f"bytes={first}-{last}", size)
    assert chosen is False or chosen is None or 0 <= chosen[0] <= chosen[1] < size
    assert chosen is False or first or last
    if first:  # leading zeros change nothing
        assert byte_range(f"bytes={'0' * zeros}{first}-{last}", size) == chosen


@MANY
@given(st.one_of(st.text(max_size=20), st.sampled_from(["bytes=٣-٥", "bytes=-", "bytes=1-2,3-4", "bytes=1-2-3"])),
       st.integers(0, 10**6))
def test_a_range_header_that_is_not_one_ascii_byte_range_is_ignored(header: str, size: int) -> None:
    if not re.fullmatch(r"\s*bytes=[0-9]*-[0-9]*\s*", header):
        assert byte_range(header, size) is False


# -- through HTTP ---------------------------------------------------------------------------------
# One app for the module; every example makes a few requests. Any 5xx fails, and every 4xx must be
# text/plain "Name: message", a 400 naming the parameter at fault first.

_ANSWER = re.compile(r"^(\w+): (\S[^\n]*)")
JOB = {"POS": "150.1,2.2", "SIZE": "0.01"}
WAITS = st.one_of(integers, st.sampled_from(["-1", "0", "1", "-2", "0.5", "9" * 30]))
#: the children of a job that take one parameter in a POST, and that parameter's values
CHILDREN = {"/phase": ("PHASE", case_variants(["RUN", "ABORT", "SUSPEND"])),
            "/executionduration": ("EXECUTIONDURATION", integers),
            "/destruction": ("DESTRUCTION", instants), "/termination": ("TIME", instants),
            "": ("ACTION", case_variants(["DELETE", "ABORT"]))}


@pytest.fixture(scope="module")
def app(make_module_client) -> Any:
    with make_module_client(max_fields=40, max_size_deg=1.0, workers=1) as client:
        yield client


def assert_answer(response: Any, names: tuple[str, ...] = ()) -> str | None:
    """No 5xx; a 4xx is ``Name: message`` in text/plain; a 400 names one of ``names``. Return the name."""
    assert response.status_code < 500, response.text
    if response.status_code < 400:
        return None
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    match = _ANSWER.match(response.text)
    assert match, response.text
    if response.status_code == 400:
        assert match.group(1) == "UsageError", response.text
        param = match.group(2).split(":", 1)[0]
        assert param in names, response.text
        return param
    return match.group(1)


def send(client: Any, method: str, path: str, raw: list[tuple[str, str]], how: str, **kwargs: Any) -> Any:
    """A request with ``raw`` parameters in the query string, a form-encoded body or a multipart body."""
    if how == "query":
        return client.request(method, path, params=raw, follow_redirects=False, **kwargs)
    if how == "multipart":
        return client.request(method, path, files=[(n, (None, v.encode())) for n, v in raw] or {"_": (None, b"")},
                              follow_redirects=False, **kwargs)
    form: dict[str, list[str]] = {}
    for name, value in raw:
        form.setdefault(name, []).append(value)
    return client.request(method, path, data=form, follow_redirects=False, **kwargs)


def new_job(client: Any, **params: str) -> str:
    response = client.post("/async", data={**JOB, **params}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return response.headers["location"].rsplit("/", 1)[-1]


HOW = st.sampled_from(["form", "query", "multipart"])


@settings(max_examples=100)
@given(params, HOW)
def test_http_job_creation_answers_a_job_or_a_400_naming_the_parameter(app, raw: list[tuple[str, str]],
                                                                       how: str) -> None:
    response = send(app, "POST", "/async", raw, how)
    named = assert_answer(response, JOB_PARAMETERS)
    if response.status_code == 303:
        app.delete(response.headers["location"])
    else:
        assert response.status_code == 400 and named, response.text


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(csv_tables(), votables(), st.binary(max_size=100)), st.sampled_from(["text/csv", "text/xml",
                                                                                   "application/octet-stream"]))
def test_http_uploads_answer_a_job_or_a_400_naming_upload(app, data: bytes, content_type: str) -> None:
    response = app.post("/async", data={"SIZE": "0.01"}, files={"UPLOAD": ("t", data, content_type)},
                        follow_redirects=False)
    assert_answer(response, ("UPLOAD",))
    if response.status_code == 303:
        app.delete(response.headers["location"])


@settings(max_examples=60)
@given(st.sampled_from(list(CHILDREN)).flatmap(lambda child: st.tuples(st.just(child), CHILDREN[child][1])), HOW)
def test_http_job_changes_answer_a_redirect_or_an_error_naming_the_parameter(app, change: tuple[str, str],
                                                                             how: str) -> None:
    child, value = change
    job_id = new_job(app)
    response = send(app, "POST", f"/async/{job_id}{child}", [(CHILDREN[child][0], value)], how)
    assert_answer(response, (CHILDREN[child][0],))
    app.delete(f"/async/{job_id}")


@settings(max_examples=40)
@given(params, HOW)
def test_http_parameter_changes_answer_a_redirect_or_a_400_naming_the_parameter(app, raw: list[tuple[str, str]],
                                                                               how: str) -> None:
    job_id = new_job(app)
    before = app.get(f"/async/{job_id}/parameters").text
    response = send(app, "POST", f"/async/{job_id}/parameters", raw, how)
    assert_answer(response, JOB_PARAMETERS)
    if response.status_code >= 400:
        assert app.get(f"/async/{job_id}/parameters").text == before  # a refused change changes nothing
    app.delete(f"/async/{job_id}")


@pytest.fixture(scope="module")
def finished_job(app) -> str:
    """An ABORTED job: WAIT on it returns at once, whatever it asks."""
    job_id = new_job(app)
    app.post(f"/async/{job_id}/phase", data={"PHASE": "ABORT"})
    return job_id


@settings(max_examples=80)
@given(WAITS, st.one_of(st.none(), case_variants(list(PHASES))))
@example("9" * 4400, None)
def test_http_wait_answers_the_job_or_a_400_naming_wait_or_phase(app, finished_job: str, wait: str,
                                                                 phase: str | None) -> None:
    query = {"WAIT": wait, **({"PHASE": phase} if phase is not None else {})}
    response = app.get(f"/async/{finished_job}", params=query)
    assert_answer(response, ("WAIT", "PHASE"))
    assert response.status_code in (200, 400)


@settings(max_examples=80)
@given(st.lists(st.one_of(st.tuples(st.just("PHASE"), case_variants(list(PHASES))),
                          st.tuples(st.just("AFTER"), instants), st.tuples(st.just("LAST"), WAITS)), max_size=4))
@example([("LAST", "9" * 30)])  # beyond SQLite's integers
def test_http_job_list_filters_answer_a_list_or_a_400_naming_the_filter(app, raw: list[tuple[str, str]]) -> None:
    response = app.get("/async", params=raw)
    assert_answer(response, ("PHASE", "AFTER", "LAST"))
    assert response.status_code in (200, 400)


@settings(max_examples=60)
@given(st.one_of(st.none(), WAITS, st.sampled_from(["²", "١", " 3 ", "9" * 19])).filter(
    lambda v: v is None or not set(v) & set("\r\n\x00")))
@example("9" * 30)
def test_http_event_stream_start_is_a_stream_or_a_400_naming_it(app, finished_job: str, after: str | None) -> None:
    headers = {"Last-Event-ID": after.encode()} if after is not None else {}
    response = app.get(f"/async/{finished_job}/events", headers=headers)
    assert_answer(response, ("Last-Event-ID",))
    response = app.get(f"/async/{finished_job}/events", params={"AFTER": after} if after is not None else {})
    assert_answer(response, ("Last-Event-ID", "AFTER"))


SIA = {"POS": positions, "SIZE": sizes, "FORMAT": case_variants([*FORMATS, "image/png,image/fits"]),
       "INTERSECT": case_variants([m.value for m in Intersect]), "VERB": case_variants(["0", "1", "3", "4"]),
       "COLLECTION": case_variants(["DEMO-WIDE", "X"]), "BAND": case_variants(["g", "z"])}
sia_params = st.lists(st.sampled_from(list(SIA)).flatmap(lambda n: st.tuples(st.just(n), SIA[n])), max_size=5)


@settings(max_examples=60)
@given(sia_params)
def test_http_sia_queries_answer_a_votable_naming_the_parameter_at_fault(app, raw: list[tuple[str, str]]) -> None:
    response = app.get("/sia", params=[("POS", "150.1,2.2"), ("SIZE", "0.05"), *raw] if len(raw) % 2 else raw)
    assert response.status_code == 200, response.text
    status = re.search(rb'<INFO name="QUERY_STATUS" value="(\w+)"[^>]*>([^<]*)<', response.content)
    assert status, response.text[:500]
    if status.group(1) == b"ERROR":
        assert status.group(2).split(b":")[0].decode() in SIA, status.group(2)


@settings(max_examples=30)
@given(st.lists(st.one_of(st.tuples(st.just("ID"), st.one_of(st.text(max_size=20), st.sampled_from(
    ["../../etc/passwd", "/etc/passwd", "", "DEMO"]))), st.sampled_from(["POS", "SIZE", "FORMAT"]).flatmap(
    lambda n: st.tuples(st.just(n), SIA[n]))), max_size=4))
def test_http_cutouts_answer_an_image_or_an_error_naming_the_parameter(app, raw: list[tuple[str, str]]) -> None:
    response = app.get("/sia/cutout", params=raw)
    name = assert_answer(response, ("ID", "POS", "SIZE", "FORMAT"))
    assert response.status_code in (200, 400, 404), response.text
    if response.status_code == 404:
        assert name == "NotFound" and response.text.startswith("NotFound: ID: "), response.text


bodies = st.one_of(st.binary(max_size=200), st.builds(
    lambda name, extra, data: (f'--B\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n\r\n').encode()
    + data + b"\r\n--B--\r\n", st.sampled_from(["POS", "SIZE", "UPLOAD", "X"]),
    st.sampled_from(["", '; filename="t.csv"', "\r\nContent-Type: text/plain; charset=latin-1",
                     "\r\nContent-Type: text/plain; charset=nope", "\r\nContent-Type: text/plain; charset=utf-16"]),
    st.one_of(st.binary(max_size=20), st.sampled_from([b"\xff\xfe", b"150.1,2.2", b"\x80"]))))


@settings(max_examples=80)
@given(bodies, st.sampled_from(["multipart/form-data; boundary=B", "multipart/form-data",
                                "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=x",
                                "text/plain", "multipart/form-data; boundary="]))
@example(b'--B\r\nContent-Disposition: form-data; name="POS"\r\n\r\n\xff\xfe\r\n--B--\r\n',
         "multipart/form-data; boundary=B")  # a text part that is not UTF-8
@example(b'--B\r\nContent-Disposition: form-data; name="POS"\r\nContent-Type: text/plain; charset=nope\r\n\r\n'
         b'1,2\r\n--B--\r\n', "multipart/form-data; boundary=B")  # a charset Python does not know
def test_http_raw_bodies_answer_a_job_or_a_4xx_naming_what_is_wrong(app, body: bytes, content_type: str) -> None:
    response = app.post("/async", content=body, headers={"Content-Type": content_type}, follow_redirects=False)
    assert_answer(response, (*JOB_PARAMETERS, "request body"))
    if response.status_code == 303:
        app.delete(response.headers["location"])
