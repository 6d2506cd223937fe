"""Synchronous SIAP 1.0 (/sia, /sia/cutout) and VOSI, in process: against the archive, astropy and the XSDs."""

from __future__ import annotations

import asyncio
import io
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from astropy.io import fits
from astropy.io.votable import parse as parse_votable
from astropy.io.votable.exceptions import W06
from litestar.testing import TestClient
from lxml import etree
from pyvo.io.vosi import parse_availability, parse_capabilities

from cutout.engine import ParentImage, cut
from cutout.index import ArchiveIndex
from cutout.preview import preview_bytes
from cutout.sky import Field, Intersect
from siasync.app import create_app, limits_for
from siasync.errors import NotFound, UsageError
from siasync.settings import Settings
from siasync.vo import sia as sia_module
from siasync.vo.sia import SiaService, parse_cutout, parse_query
from siasync.vo.sia_votable import VERB_COLUMNS
from tests.siasync.conftest import TEST_HOST
from tests.siasync.helpers import UWS_DATA

VOSI_DATA = Path(__file__).resolve().parents[1] / "data" / "vosi"
BASE = f"http://{TEST_HOST}"
FIELD = {"POS": "150.1,2.2", "SIZE": "0.05"}
#: where the schemata import each other from (their DaCHS-era schemaLocations), and the local copies
_LOCAL = {"VOResource.xsd": VOSI_DATA / "VOResource-v1.1.xsd", "stc.xsd": VOSI_DATA / "STC-v1.30.xsd",
          "xlink.xsd": UWS_DATA / "xlink.xsd"}
_ROOTS = {"http://www.ivoa.net/xml/VOSICapabilities/v1.0": "VOSICapabilities-v1.0.xsd",
          "http://www.ivoa.net/xml/VOSIAvailability/v1.0": "VOSIAvailability-v1.0.xsd",
          "http://www.ivoa.net/xml/VODataService/v1.1": "VODataService-v1.1.xsd",
          "http://www.ivoa.net/xml/SIA/v1.1": "SIA-v1.1.xsd"}


class _LocalSchemata(etree.Resolver):
    """Resolve the schemata's imports to the copies in tests/data, never the network."""

    def resolve(self, url: str, pubid: str, context: Any) -> Any:
        local = _LOCAL.get(url.rsplit("/", 1)[-1])
        return self.resolve_filename(str(local), context) if local else None


def vosi_schema() -> etree.XMLSchema:
    """One schema holding VOSI capabilities and availability, VOResource, VODataService and SIA."""
    parser = etree.XMLParser(no_network=True)
    parser.resolvers.add(_LocalSchemata())
    driver = ('<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">' + "".join(
        f'<xs:import namespace="{ns}" schemaLocation="{(VOSI_DATA / name).as_uri()}"/>' for ns, name in _ROOTS.items())
        + "</xs:schema>")
    return etree.XMLSchema(etree.fromstring(driver, parser))


SCHEMA = vosi_schema()


def assert_valid(document: bytes) -> etree._Element:
    root = etree.fromstring(document)
    if not SCHEMA.validate(root):
        raise AssertionError(f"invalid VOSI document: {SCHEMA.error_log}\n{document[:3000]!r}")
    return root


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, demo_archive: Path) -> Iterator[TestClient]:
    settings = Settings(archive=demo_archive, state_dir=tmp_path_factory.mktemp("sia-state"), workers=1,
                        allowed_hosts=(TEST_HOST,))
    with TestClient(create_app(settings), base_url=BASE) as c:
        yield c


def parse_strictly(document: bytes) -> Any:
    """A VOTable parsed by astropy, which must not warn but about the UCD1 words SIAP 1.0 prescribes (W06)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = parse_votable(io.BytesIO(document), verify="warn")
    assert all(isinstance(w.message, W06) for w in caught), [str(w.message) for w in caught]
    return table


def votable(response: Any) -> Any:
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/xml;content=x-votable")
    return parse_strictly(response.content)


def status(table: Any) -> tuple[str, str]:
    info = next(i for i in table.resources[0].infos if i.name == "QUERY_STATUS")
    return info.value, info.content or ""


# -- the query --------------------------------------------------------------------------------------------


def test_query_lists_each_matching_image_in_each_format(client: TestClient, demo_index: ArchiveIndex) -> None:
    expected = demo_index.lookup(Field(150.1, 2.2, 0.05, 0.05))
    assert len(expected) >= 10
    table = votable(client.get("/sia", params=FIELD))
    assert status(table) == ("OK", "")
    rows = table.get_first_table().array
    assert list(rows["parent_id"]) == [r.id for r in expected for _ in ("fits", "png")]  # FORMAT=ALL
    assert list(rows["format"][:2]) == ["image/fits", "image/png"]
    assert all(url.startswith(f"{BASE}/sia/cutout?ID=") for url in rows["access_url"])
    only = votable(client.get("/sia", params={**FIELD, "FORMAT": "image/jpeg,image/fits", "BAND": "r",
                                              "COLLECTION": "DEMO-WIDE", "INTERSECT": "center"}))
    wide_r = demo_index.lookup(Field(150.1, 2.2, 0.05, 0.05), Intersect.CENTER, ["DEMO-WIDE"], ["r"])
    rows = only.get_first_table().array
    assert list(rows["parent_id"]) == [r.id for r in wide_r for _ in (1, 2)] and len(wide_r) >= 1
    assert list(rows["format"][:2]) == ["image/jpeg", "image/fits"]


def test_each_row_describes_the_cutout_its_url_returns(client: TestClient, demo_index: ArchiveIndex) -> None:
    rows = votable(client.get("/sia", params={**FIELD, "FORMAT": "image/fits", "VERB": "3"})).get_first_table().array
    for row in rows[:6]:
        response = client.get(row["access_url"])
        assert response.status_code == 200 and response.headers["content-type"] == "image/fits"
        assert response.headers["content-disposition"] == f'inline; filename="{row["parent_id"]}.fits"'
        assert row["filesize"] == len(response.content)
        header = fits.getheader(io.BytesIO(response.content))
        assert list(row["naxis"]) == [header["NAXIS1"], header["NAXIS2"]]
        assert list(row["crpix"]) == pytest.approx([header["CRPIX1"], header["CRPIX2"]])
        record = demo_index.by_id[row["parent_id"]]
        assert row["collection"] == record.collection and row["bandpass_id"] == record.band
        assert (row["field"], row["field_ra"], row["field_dec"]) == (0, 150.1, 2.2)


def test_cutout_bytes_are_what_a_job_writes(client: TestClient, demo_index: ArchiveIndex) -> None:
    field = Field(150.1, 2.2, 0.03, 0.02)
    for record in [r for r in demo_index.lookup(field) if r.compressed][:1] + demo_index.lookup(field)[:2]:
        params = {"ID": record.id, "POS": "150.1,2.2", "SIZE": "0.03,0.02"}
        with ParentImage(demo_index.path_of(record), record.hdu, record.id, record.path) as parent:
            piece = cut(parent, field)
        assert client.get("/sia/cutout", params=params).content == piece.to_fits()
        for mime in ("image/png", "image/jpeg"):
            response = client.get("/sia/cutout", params={**params, "FORMAT": mime})
            assert response.headers["content-type"] == mime and response.content == preview_bytes(piece.data, mime)


@pytest.mark.parametrize("verb", [0, 1, 2, 3])
def test_verb_chooses_the_columns(client: TestClient, verb: int) -> None:
    table = votable(client.get("/sia", params={**FIELD, "VERB": str(verb)})).get_first_table()
    names = [f.name for f in table.fields]
    assert names == [c.name for c in VERB_COLUMNS[verb]]
    assert {"title", "ra", "dec", "naxes", "naxis", "scale", "format", "access_url"} <= set(names)
    assert ("crpix" in names) == (verb >= 2) and ("result_id" in names) == (verb == 3)
    assert len(table.array) > 0 and all(len(table.array[n]) for n in names)


def test_verb_rows_are_the_table_rows_cut_down(client: TestClient) -> None:
    full = votable(client.get("/sia", params={**FIELD, "VERB": "3"})).get_first_table().array
    small = votable(client.get("/sia", params={**FIELD, "VERB": "0"})).get_first_table().array
    for name in small.dtype.names:
        assert [str(v) for v in small[name]] == [str(v) for v in full[name]]


def test_metadata_query_describes_inputs_and_columns(client: TestClient) -> None:
    table = votable(client.get("/sia", params={"FORMAT": "METADATA"}))
    assert status(table)[0] == "OK"
    params = {p.name: p for p in table.resources[0].params}
    assert set(params) == {f"INPUT:{n}" for n in ("POS", "SIZE", "INTERSECT", "FORMAT", "VERB", "COLLECTION", "BAND",
                                                  "MODE")}
    assert all(p.description for p in params.values())
    assert [value for _, value in params["INPUT:INTERSECT"].values.options] == [m.value for m in Intersect]
    assert {value for _, value in params["INPUT:COLLECTION"].values.options} == {"DEMO-WIDE", "DEMO-DEEP", "DEMO-POLE"}
    first = table.get_first_table()
    assert len(first.array) == 0 and [f.name for f in first.fields] == [c.name for c in VERB_COLUMNS[3]]
    verb0 = votable(client.get("/sia", params={"FORMAT": "metadata", "VERB": "0", **FIELD})).get_first_table()
    assert [f.name for f in verb0.fields] == [c.name for c in VERB_COLUMNS[0]] and len(verb0.array) == 0


# (case, query parameters, the parameter the message must name)
BAD_QUERIES = [
    ("no POS", {"SIZE": "0.1"}, "POS"),
    ("no SIZE", {"POS": "150.1,2.2"}, "SIZE"),
    ("POS three numbers", {**FIELD, "POS": "150,2,3"}, "POS"),
    ("POS not numbers", {**FIELD, "POS": "abc,def"}, "POS"),
    ("two POS", [("POS", "150,2"), ("POS", "151,2"), ("SIZE", "0.1")], "POS"),
    ("POS list", {**FIELD, "POS": "150,2;151,2"}, "POS"),
    ("POS Dec over 90", {**FIELD, "POS": "150,91"}, "POS"),
    ("SIZE zero and not", {**FIELD, "SIZE": "0,0.1"}, "SIZE"),
    ("SIZE too large", {**FIELD, "SIZE": "5"}, "SIZE"),
    ("SIZE text", {**FIELD, "SIZE": "wide"}, "SIZE"),
    ("FORMAT unknown", {**FIELD, "FORMAT": "image/gif"}, "FORMAT"),
    ("FORMAT empty item", {**FIELD, "FORMAT": "image/fits,"}, "FORMAT"),
    ("FORMAT METADATA and more", {**FIELD, "FORMAT": "METADATA,image/fits"}, "FORMAT"),
    ("INTERSECT unknown", {**FIELD, "INTERSECT": "TOUCHES"}, "INTERSECT"),
    ("VERB text", {**FIELD, "VERB": "loud"}, "VERB"),
    ("VERB 4", {**FIELD, "VERB": "4"}, "VERB"),
    ("VERB twice", {**FIELD, "VERB": ["1", "2"]}, "VERB"),
    ("COLLECTION unknown", {**FIELD, "COLLECTION": "HST"}, "COLLECTION"),
    ("BAND unknown", {**FIELD, "BAND": "z"}, "BAND"),
    ("metadata with a bad POS", {"FORMAT": "METADATA", "POS": "abc"}, "POS"),
]


#: the cases whose parameters /async takes too, with the same meaning
SHARED = {"no SIZE", "POS three numbers", "POS not numbers", "POS Dec over 90", "SIZE zero and not", "SIZE too large",
          "SIZE text", "FORMAT unknown", "INTERSECT unknown", "COLLECTION unknown", "BAND unknown"}


def pairs(params: dict | list) -> list[tuple[str, str]]:
    """Parameters as (name, value) pairs; a dict's list values repeat the name."""
    if isinstance(params, list):
        return params
    return [(k, v) for k, values in params.items() for v in (values if isinstance(values, list) else [values])]


@pytest.mark.parametrize("case,params,param", BAD_QUERIES, ids=[c[0] for c in BAD_QUERIES])
def test_bad_queries_answer_query_status_error(client: TestClient, case: str, params: Any, param: str) -> None:
    table = votable(client.get("/sia", params=pairs(params)))  # HTTP 200 and a valid VOTable, as SIAP 1.0 asks
    value, message = status(table)
    assert value == "ERROR" and message.startswith(f"{param}: ")
    with pytest.raises(UsageError) as info:  # the service parses without HTTP, to the same message
        parse_query([(k.upper(), v) for k, v in pairs(params)], client.app.state.sia.limits)
    assert info.value.message == message
    if case in SHARED:  # the text the async UsageError carries
        response = client.post("/async", content=urlencode(pairs(params)),
                               headers={"content-type": "application/x-www-form-urlencoded"})
        assert response.status_code == 400 and response.text == f"UsageError: {message}\n"


def test_a_form_post_and_lower_case_names_work(client: TestClient) -> None:
    by_get = votable(client.get("/sia", params=FIELD)).get_first_table().array
    by_post = votable(client.post("/sia", data={"pos": "150.1,2.2", "size": "0.05"})).get_first_table().array
    assert list(by_post["access_url"]) == list(by_get["access_url"])


def test_overflow_stops_at_max_records(demo_index: ArchiveIndex) -> None:
    limits = limits_for(Settings(), demo_index)
    service = SiaService(demo_index, limits, concurrency=1, max_records=5)
    body = asyncio.run(service.query([("POS", "150.1,2.2"), ("SIZE", "0.05")], BASE))
    table = parse_strictly(body.encode())
    assert status(table)[0] == "OVERFLOW" and "5 rows" in status(table)[1]
    assert len(table.get_first_table().array) == 4  # two formats per image: whole images only
    full = asyncio.run(SiaService(demo_index, limits, 1, 100).query([("POS", "150.1,2.2"), ("SIZE", "0.05")], BASE))
    assert full.count("<TR>") > 5 and 'value="OK"' in full


# -- /sia/cutout ----------------------------------------------------------------------------------------


# (case, parameters, status, the text the body must start with)
BAD_CUTOUTS = [
    ("no ID", {**FIELD}, 400, "UsageError: ID: "),
    ("unknown ID", {**FIELD, "ID": "no-such-image"}, 404, "NotFound: ID: "),
    ("no POS", {"ID": "X", "SIZE": "0.1"}, 400, "UsageError: POS: "),
    ("bad SIZE", {**FIELD, "ID": "X", "SIZE": "-1"}, 400, "UsageError: SIZE: "),
    ("FORMAT ALL", {**FIELD, "ID": "X", "FORMAT": "ALL"}, 400, "UsageError: FORMAT: "),
    ("FORMAT unknown", {**FIELD, "ID": "X", "FORMAT": "image/tiff"}, 400, "UsageError: FORMAT: "),
    ("two IDs", [("ID", "a"), ("ID", "b"), ("POS", "1,2"), ("SIZE", "0.1")], 400, "UsageError: ID: "),
    ("no overlap", {"ID": "X", "POS": "10,-60", "SIZE": "0.1"}, 400, "UsageError: POS: the field does not overlap"),
]


@pytest.mark.parametrize("case,params,code,start", BAD_CUTOUTS, ids=[c[0] for c in BAD_CUTOUTS])
def test_bad_cutouts(client: TestClient, demo_index: ArchiveIndex, case: str, params: Any, code: int,
                     start: str) -> None:
    real = demo_index.records[0].id
    if isinstance(params, dict) and params.get("ID") == "X":
        params = {**params, "ID": real}
    response = client.get("/sia/cutout", params=params)
    assert response.status_code == code and response.headers["content-type"].startswith("text/plain")
    assert response.text.startswith(start), response.text


def test_parsers_reject_without_http(demo_index: ArchiveIndex) -> None:
    limits = limits_for(Settings(), demo_index)
    assert parse_cutout([("ID", "a"), ("POS", "1,2"), ("SIZE", "0.1,0.2"), ("FORMAT", "IMAGE/PNG")], limits).mime \
        == "image/png"
    query = parse_query([("POS", "1,2"), ("SIZE", "0.1"), ("FORMAT", "GRAPHIC,image/fits,image/png")], limits)
    assert query.products == ("image/png", "image/fits") and query.field == Field(1, 2, 0.1, 0.1)
    assert parse_query([("FORMAT", "METADATA")], limits).field is None
    with pytest.raises(NotFound):
        asyncio.run(SiaService(demo_index, limits, 1, 10).cutout([("ID", "nope"), ("POS", "1,2"), ("SIZE", "1")]))


def test_damaged_parents_answer_500_and_unreachable_ones_503(tmp_path: Path, demo_index: ArchiveIndex) -> None:
    field = Field(150.1, 2.2, 0.02, 0.02)
    record = demo_index.lookup(field, bands=["g"], collections=["DEMO-WIDE"])[0]
    copy = tmp_path / record.path
    copy.parent.mkdir(parents=True)
    copy.write_bytes(b"not a FITS file at all" * 200)
    broken = ArchiveIndex(tmp_path, [record])
    service = SiaService(broken, limits_for(Settings(), broken), 1, 10)
    body = asyncio.run(service.query([("POS", "150.1,2.2"), ("SIZE", "0.02")], BASE))
    assert 'value="OK"' in body and body.count("<TR>") == 2  # rows come from the index: no file is opened
    raw = [("ID", record.id), ("POS", "150.1,2.2"), ("SIZE", "0.02")]
    with pytest.raises(sia_module.ArchiveDamaged) as damaged:  # permanent: asking again will not help
        asyncio.run(service.cutout(raw))
    assert damaged.value.status == 500 and record.id in damaged.value.message
    assert "Retry-After" not in damaged.value.headers
    copy.unlink()  # the archive's storage is gone (an unmounted disk): transient
    with pytest.raises(sia_module.ArchiveUnavailable) as unavailable:
        asyncio.run(service.cutout(raw))
    assert unavailable.value.status == 503 and record.id in unavailable.value.message
    assert unavailable.value.headers["Retry-After"] == str(sia_module.RETRY_AFTER_S)


def test_cutouts_run_off_the_loop_at_most_n_at_once(demo_index: ArchiveIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    running, peak, lock = [0], [0], threading.Lock()
    real = sia_module.make_cutout

    def slow(*args: Any) -> bytes:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.2)  # blocks its thread, never the loop
        with lock:
            running[0] -= 1
        return real(*args)

    monkeypatch.setattr(sia_module, "make_cutout", slow)
    service = SiaService(demo_index, limits_for(Settings(), demo_index), concurrency=2, max_records=10)
    record = demo_index.lookup(Field(150.1, 2.2, 0.01, 0.01))[0]
    raw = [("ID", record.id), ("POS", "150.1,2.2"), ("SIZE", "0.01")]

    async def scenario() -> tuple[list[bytes], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        results = await asyncio.gather(*(service.cutout(raw) for _ in range(5)))
        task.cancel()
        return [r[0] for r in results], ticks

    outputs, ticks = asyncio.run(scenario())
    assert peak[0] == 2 and len(set(outputs)) == 1
    assert ticks >= 30  # three rounds of 0.2 s with the loop free all along


# -- VOSI ---------------------------------------------------------------------------------------------------


def test_the_schemata_reject_a_broken_capability() -> None:
    broken = (b'<vosi:capabilities xmlns:vosi="http://www.ivoa.net/xml/VOSICapabilities/v1.0" '
              b'xmlns:sia="http://www.ivoa.net/xml/SIA/v1.1" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
              b'<capability standardID="ivo://ivoa.net/std/SIA" xsi:type="sia:SimpleImageAccess">'
              b"<imageServiceType>Cutouts</imageServiceType></capability></vosi:capabilities>")
    with pytest.raises(AssertionError, match="imageServiceType"):
        assert_valid(broken)


# pyvo 1.9 knows no SIA capability type and no ParamHTTP param elements, and warns at a second queryType (which
# VODataService allows, and which it reads): what it warns about is checked against the XSDs above
@pytest.mark.filterwarnings("ignore::pyvo.utils.xml.exceptions.UnknownElementWarning",
                            "ignore::pyvo.io.vosi.exceptions.W17", "ignore:Unknown xsi.type sia.SimpleImageAccess")
def test_capabilities_are_valid_and_pyvo_reads_them(client: TestClient, demo_index: ArchiveIndex) -> None:
    response = client.get("/capabilities")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/xml")
    root = assert_valid(response.content)
    ns = {"xsi": "http://www.w3.org/2001/XMLSchema-instance"}
    sia = root.find("capability[@standardID='ivo://ivoa.net/std/SIA']")
    assert sia.get(f"{{{ns['xsi']}}}type") == "sia:SimpleImageAccess"
    assert sia.findtext("imageServiceType") == "Cutout" and sia.findtext("interface/accessURL") == f"{BASE}/sia"
    assert sia.find("interface/accessURL").get("use") == "base"
    assert float(sia.findtext("maxQueryRegionSize/long")) == Settings().max_size_deg
    assert int(sia.findtext("maxImageSize")) == max(max(r.shape) for r in demo_index.records)
    assert int(sia.findtext("maxRecords")) == Settings().sia_max_records
    assert int(sia.findtext("maxFileSize")) >= max(r.filesize for r in demo_index.records)

    capabilities = parse_capabilities(io.BytesIO(response.content))
    urls = {c.standardid: c.interfaces[0].accessurls[0].content for c in capabilities}
    assert urls == {"ivo://ivoa.net/std/SIA": f"{BASE}/sia", "ivo://ivoa.net/std/UWS#rest-1.1": f"{BASE}/async",
                    "ivo://ivoa.net/std/SIA#query-2.0": f"{BASE}/sia2/query",
                    "ivo://ivoa.net/std/DataLink#links-1.1": f"{BASE}/datalink",
                    "ivo://ivoa.net/std/SODA#sync-1.0": f"{BASE}/soda/sync",
                    "ivo://ivoa.net/std/SODA#async-1.0": f"{BASE}/soda/async",
                    "ivo://ivoa.net/std/VOSI#capabilities": f"{BASE}/capabilities",
                    "ivo://ivoa.net/std/VOSI#availability": f"{BASE}/availability"}
    assert capabilities[0].interfaces[0].resulttype.content == "text/xml;content=x-votable"
    assert list(capabilities[1].interfaces[0].querytypes) == ["GET", "POST"]


def test_availability_is_valid(client: TestClient, demo_index: ArchiveIndex) -> None:
    response = client.get("/availability")
    assert response.status_code == 200
    assert_valid(response.content)
    availability = parse_availability(io.BytesIO(response.content))
    assert availability.available is True and availability.upsince is not None
    assert f"{len(demo_index)} archive images" in availability.notes[0]


def test_vosi_documents_follow_the_public_url(make_client: Any) -> None:
    with make_client(public_url="https://survey.example.org/siasync/") as c:
        capabilities = c.get("/capabilities").content
        assert_valid(capabilities)
        assert b'<accessURL use="base">https://survey.example.org/siasync/sia</accessURL>' in capabilities
        row = votable(c.get("/sia", params=FIELD)).get_first_table().array[0]
        assert row["access_url"].startswith("https://survey.example.org/siasync/sia/cutout?ID=")


def test_the_sync_settings_come_from_the_environment_and_must_be_positive() -> None:
    settings = Settings.from_env({"SIASYNC_SYNC_CUTOUTS": "8", "SIASYNC_SIA_MAX_RECORDS": "500"})
    assert (settings.sync_cutouts, settings.sia_max_records) == (8, 500)
    for name in ("SYNC_CUTOUTS", "SIA_MAX_RECORDS"):
        with pytest.raises(ValueError, match=f"{name.lower()} must be positive"):
            Settings.from_env({f"SIASYNC_{name}": "0"})
