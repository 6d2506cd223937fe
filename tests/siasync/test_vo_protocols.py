"""SIA 2.0, DataLink and SODA in process: answers against the archive and the parents' pixels, the
official VOTable schema, astropy's strict parser, and the errors each standard prescribes."""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.io.votable import parse as parse_votable
from astropy.wcs import WCS
from litestar.testing import TestClient
from lxml import etree

from cutout.index import ArchiveIndex
from cutout.scan import BANDPASSES
from cutout.sky import Field, footprint_circle
from siasync.app import create_app
from siasync.settings import Settings
from tests.siasync.conftest import TEST_HOST
from tests.siasync.test_sia import assert_valid as assert_valid_vosi

BASE = f"http://{TEST_HOST}"
VOTABLE_XSD = etree.XMLSchema(etree.parse(str(Path(__file__).resolve().parents[1] / "data" / "votable"
                                              / "VOTable-v1.3.xsd")))
DATALINK = "application/x-votable+xml;content=datalink"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, demo_archive: Path) -> Iterator[TestClient]:
    settings = Settings(archive=demo_archive, state_dir=tmp_path_factory.mktemp("vo-state"), workers=1,
                        ivo_authority="example.org",
                        allowed_hosts=(TEST_HOST,))
    with TestClient(create_app(settings), base_url=BASE) as c:
        yield c


def valid_votable(content: bytes) -> Any:
    """Valid against the VOTable 1.3 schema, and parsed by astropy without a single warning."""
    root = etree.fromstring(content)
    assert VOTABLE_XSD.validate(root), VOTABLE_XSD.error_log
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        document = parse_votable(io.BytesIO(content), verify="warn")
    assert not caught, [str(w.message) for w in caught]
    return document


def query_status(document: Any) -> list[tuple[str, str]]:
    results = next(r for r in document.resources if r.type == "results")
    return [(i.value, i.content or "") for i in results.infos if i.name == "QUERY_STATUS"]


def sia2(client: TestClient, params: Any) -> tuple[Any, Any]:
    response = client.get("/sia2/query", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-votable+xml")
    document = valid_votable(response.content)
    return document, document.get_first_table().to_table()


def did(image_id: str) -> str:
    return f"ivo://example.org/images?{image_id}"


def post_form(client: TestClient, path: str, pairs: list[tuple[str, str]]) -> Any:
    """POST form fields, names repeated as a client sends them."""
    return client.post(path, content=urlencode(pairs), follow_redirects=False,
                       headers={"Content-Type": "application/x-www-form-urlencoded"})


# -- SIA 2.0 -------------------------------------------------------------------------------------------------


def test_sia2_polygon_finds_what_siap_finds_for_the_same_box(client: TestClient, demo_index: ArchiveIndex) -> None:
    # a SIAP field's box has great-circle edges: the polygon of its corners is the same region
    field = Field(150.1, 2.2, 0.3, 0.2)
    corners = np.array([(-0.15, -0.1), (0.15, -0.1), (0.15, 0.1), (-0.15, 0.1)])
    from cutout.sky import from_plane
    ra, dec = from_plane(field.ra, field.dec, corners[:, 0], corners[:, 1])
    polygon = "POLYGON " + " ".join(f"{a:.12f} {d:.12f}" for a, d in zip(ra, dec, strict=True))
    _, rows = sia2(client, {"POS": polygon})
    expected = {r.id for r in demo_index.lookup(field)}
    assert len(expected) > 10 and set(rows["obs_id"]) == expected
    siap = parse_votable(io.BytesIO(client.get("/sia", params={"POS": "150.1,2.2", "SIZE": "0.3,0.2",
                                                                "FORMAT": "image/fits", "VERB": "3"}).content))
    siap_rows = siap.get_first_table().to_table()
    assert set(siap_rows["parent_id"]) == expected
    for row in siap_rows:  # the same images, described alike
        mine = rows[list(rows["obs_id"]).index(row["parent_id"])]
        assert mine["obs_collection"] == row["collection"] and mine["band"] == row["bandpass_id"]
        assert mine["t_min"] == pytest.approx(row["mjd_obs"])
        assert (mine["em_min"], mine["em_max"]) == pytest.approx((row["bandpass_lolimit"], row["bandpass_hilimit"]))


def test_sia2_circle_against_the_images_sampled_through_their_wcs(client: TestClient,
                                                                 demo_index: ArchiveIndex) -> None:
    centre = SkyCoord(150.4, 2.5, unit="deg")
    _, rows = sia2(client, {"POS": "CIRCLE 150.4 2.5 0.2"})
    found = set(rows["obs_id"])
    for record in demo_index.records:
        wcs = record.wcs()
        ny, nx = record.shape
        ys, xs = np.mgrid[-0.5:ny:8, -0.5:nx:8]
        nearest = wcs.pixel_to_world(xs.ravel(), ys.ravel()).separation(centre).deg.min()
        if abs(nearest - 0.2) > 0.005:  # clear of the circle's edge at this sampling
            assert (record.id in found) == (nearest < 0.2), record.id


def test_sia2_constraints_combine_or_within_and_across(client: TestClient, demo_index: ArchiveIndex) -> None:
    r_band = BANDPASSES["r"]
    _, rows = sia2(client, [("BAND", f"{r_band[0]!r}"), ("BAND", "1e-3 +Inf"), ("COLLECTION", "DEMO-WIDE"),
                            ("COLLECTION", "DEMO-DEEP")])
    expected = {r.id for r in demo_index.records if r.band == "r" and r.collection in ("DEMO-WIDE", "DEMO-DEEP")}
    assert set(rows["obs_id"]) == expected
    mjds = sorted({r.mjd for r in demo_index.records if r.mjd is not None})
    _, rows = sia2(client, {"TIME": f"-Inf {mjds[0]!r}"})
    assert set(rows["obs_id"]) == {r.id for r in demo_index.records if r.mjd is not None and r.mjd <= mjds[0]}
    one = demo_index.records[3]
    _, rows = sia2(client, [("ID", did(one.id).upper().replace("IMAGES?", "images?")), ("CALIB", "2")])
    assert list(rows["obs_id"]) == [one.id]  # the DID's authority compares case-insensitively
    _, rows = sia2(client, {"CALIB": "3"})
    assert len(rows) == 0
    assert len(sia2(client, {"SPATRES": "-Inf +Inf"})[1]) == 0  # no image has a resolution: nothing matches
    shortest = min(r.exptime for r in demo_index.records if r.exptime is not None)
    _, rows = sia2(client, {"EXPTIME": f"-Inf {shortest!r}"})
    assert set(rows["obs_id"]) == {r.id for r in demo_index.records if r.exptime == shortest}
    assert set(rows["t_exptime"]) == {shortest}


def test_sia2_rows_describe_their_images(client: TestClient, demo_index: ArchiveIndex) -> None:
    document, rows = sia2(client, {"POS": "CIRCLE 150.1 2.2 0.05"})
    for row in rows:
        record = demo_index.by_id[row["obs_id"]]
        (ra, dec), radius = footprint_circle(record.footprint)
        assert row["obs_publisher_did"] == did(record.id) and row["access_format"] == DATALINK
        assert row["access_url"] == f"{BASE}/datalink?ID=ivo%3A%2F%2Fexample.org%2Fimages%3F{record.id}"
        assert (row["s_xel1"], row["s_xel2"]) == (record.shape[1], record.shape[0])
        assert (row["s_ra"], row["s_dec"], row["s_fov"]) == pytest.approx((ra, dec, 2 * radius))
        region = np.asarray(row["s_region"]).reshape(-1, 2)
        # the outline is the image's edge: each vertex maps onto the pixel border through astropy's WCS
        x, y = record.wcs().world_to_pixel(SkyCoord(region[:, 0], region[:, 1], unit="deg"))
        ny, nx = record.shape
        edge = np.minimum.reduce([np.abs(x + 0.5), np.abs(x - nx + 0.5), np.abs(y + 0.5), np.abs(y - ny + 0.5)])
        assert edge.max() < 1e-6
    fields = {f.name: f for f in document.get_first_table().fields}
    assert fields["s_region"].xtype == "polygon"
    assert fields["obs_publisher_did"].utype == "obscore:Curation.publisherDID"
    descriptors = {r.ID: r for r in document.resources if r.type == "meta"}
    assert {"datalink", "soda-sync", "soda-async", "this"} <= set(descriptors)
    assert descriptors["datalink"].groups[0].entries[0].ref == "obs_publisher_did"


def test_sia2_maxrec_overflows_and_zero_gives_the_metadata(client: TestClient) -> None:
    document, rows = sia2(client, {"POS": "CIRCLE 150.1 2.2 1", "MAXREC": "3"})
    assert len(rows) == 3 and query_status(document)[-1][0] == "OVERFLOW"
    document, rows = sia2(client, {"MAXREC": "0"})
    assert len(rows) == 0 and [s for s, _ in query_status(document)] == ["OK", "OVERFLOW"]
    document, rows = sia2(client, {"COLLECTION": "DEMO-POLE"})
    assert len(rows) > 0 and [s for s, _ in query_status(document)] == ["OK"]


@pytest.mark.parametrize(("params", "param"), [
    ({"POS": "CIRCLE 150 2"}, "POS"), ({"POS": "BOX 1 2 3 4"}, "POS"), ({"POS": "POLYGON 1 2 3 4"}, "POS"),
    ({"POS": "CIRCLE 400 2 1"}, "POS"), ({"BAND": "7e-7 6e-7"}, "BAND"), ({"BAND": "red"}, "BAND"),
    ({"TIME": "1 2 3"}, "TIME"), ({"FOV": "nan"}, "FOV"), ({"CALIB": "7"}, "CALIB"), ({"CALIB": "two"}, "CALIB"),
    ({"POL": "Z"}, "POL"), ({"MAXREC": "-1"}, "MAXREC"), ({"MAXREC": ["1", "2"]}, "MAXREC"),
    ({"RESPONSEFORMAT": "csv"}, "RESPONSEFORMAT"),
])
def test_sia2_refuses_malformed_queries_with_an_error_votable(client: TestClient, params: dict, param: str) -> None:
    response = client.get("/sia2/query", params=params)
    assert response.status_code == 400
    document = valid_votable(response.content)
    (value, message), = query_status(document)
    assert value == "ERROR" and message.startswith(f"UsageFault: {param}: "), message


def test_sia2_ignores_unknown_parameters_and_takes_lower_case_names_and_posts(client: TestClient) -> None:
    plain = sia2(client, {"POS": "CIRCLE 150.1 2.2 0.05"})[1]
    assert list(sia2(client, {"pos": "CIRCLE 150.1 2.2 0.05", "NOSUCH": "1"})[1]["obs_id"]) == list(plain["obs_id"])
    posted = client.post("/sia2/query", data={"POS": "CIRCLE 150.1 2.2 0.05"})
    assert list(valid_votable(posted.content).get_first_table().to_table()["obs_id"]) == list(plain["obs_id"])


# -- DataLink -------------------------------------------------------------------------------------------------


def test_datalink_links_each_id_in_order_with_an_error_row_for_unknown_ones(client: TestClient,
                                                                           demo_index: ArchiveIndex) -> None:
    first, second = demo_index.records[0], demo_index.records[5]
    response = client.get("/datalink", params=[("ID", did(first.id)), ("ID", "ivo://example.org/images?nope"),
                                               ("ID", second.id)])
    assert response.status_code == 200 and response.headers["content-type"] == DATALINK
    document = valid_votable(response.content)
    rows = document.get_first_table().to_table()
    assert [r["ID"] for r in rows] == [did(first.id)] * 4 + ["ivo://example.org/images?nope"] + [second.id] * 4
    unknown = rows[4]
    assert unknown["semantics"] == "#this" and unknown["error_message"].startswith("NotFoundFault: ")
    this = rows[0]
    assert this["semantics"] == "#this" and this["content_length"] == first.filesize
    file = client.get(this["access_url"])
    assert file.content == demo_index.path_of(first).read_bytes()
    preview = client.get(rows[1]["access_url"])
    assert preview.headers["content-type"] == "image/png"
    assert client.get(rows[1]["access_url"]).content == preview.content  # made once, then kept
    descriptors = {r.ID: r for r in document.resources if r.type == "meta"}
    assert {rows[2]["service_def"], rows[3]["service_def"]} <= set(descriptors)
    sync = descriptors[rows[2]["service_def"]]
    assert {p.name: p.value for p in sync.params}["standardID"] == "ivo://ivoa.net/std/SODA#sync-1.0"
    inputs = {p.name: p for p in sync.groups[0].entries}
    assert inputs["ID"].value == did(first.id)  # the dataset's ID is fixed in its descriptor
    ra, dec, radius = np.asarray(inputs["CIRCLE"].values.max, dtype=float)
    assert radius == pytest.approx(footprint_circle(first.footprint)[1])


def test_datalink_with_no_id_is_an_empty_answer_and_a_bad_format_an_error(client: TestClient) -> None:
    empty = valid_votable(client.get("/datalink").content)
    assert len(empty.get_first_table().to_table()) == 0 and query_status(empty) == [("OK", "")]
    bad = client.get("/datalink", params={"ID": "x", "RESPONSEFORMAT": "text/csv"})
    assert bad.status_code == 400 and query_status(valid_votable(bad.content))[0][1].startswith(
        "UsageFault: RESPONSEFORMAT: ")


# -- SODA sync ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("region", [("CIRCLE", "150.1 2.2 0.01"), ("POLYGON", "150.09 2.19 150.11 2.19 150.1 2.21"),
                                    ("POS", "RANGE 150.09 150.11 2.19 2.21"), ("POS", "CIRCLE 150.1 2.2 0.01")])
def test_soda_cutouts_are_the_parents_pixels_around_the_region(client: TestClient, demo_index: ArchiveIndex,
                                                               region: tuple[str, str]) -> None:
    record = demo_index.lookup(Field(150.1, 2.2, 0.001, 0.001))[0]
    response = client.get("/soda/sync", params={"ID": did(record.id), region[0]: region[1]})
    assert response.status_code == 200 and response.headers["content-type"] == "application/fits"
    with fits.open(io.BytesIO(response.content)) as cut, fits.open(demo_index.path_of(record)) as parent:
        header = cut[0].header
        y0, x0 = -header["LTV2"], -header["LTV1"]
        ny, nx = cut[0].data.shape
        np.testing.assert_array_equal(cut[0].data, parent[record.hdu].data[y0:y0 + ny, x0:x0 + nx])
        wcs = WCS(header)
    # the region's points all fall on the cutout
    numbers = [float(v) for v in region[1].split()[1 if region[0] == "POS" else 0:]]
    if region[1].startswith("CIRCLE") or region[0] == "CIRCLE":
        ra, dec, radius = numbers
        points = SkyCoord(ra, dec, unit="deg").directional_offset_by(np.linspace(0, 2 * np.pi, 64),
                                                                      np.radians(radius))
    elif region[1].startswith("RANGE"):
        points = SkyCoord([numbers[0], numbers[1], numbers[1], numbers[0]], [numbers[2]] * 2 + [numbers[3]] * 2,
                          unit="deg")
    else:
        points = SkyCoord(numbers[0::2], numbers[1::2], unit="deg")
    x, y = wcs.world_to_pixel(points)
    assert x.min() >= -0.5 and y.min() >= -0.5 and x.max() <= nx - 0.5 and y.max() <= ny - 0.5


def test_soda_sync_answers_204_without_pixels_and_errors_by_the_standard(client: TestClient,
                                                                         demo_index: ArchiveIndex) -> None:
    record = demo_index.lookup(Field(150.1, 2.2, 0.001, 0.001))[0]
    image = did(record.id)
    empty = client.get("/soda/sync", params={"ID": image, "CIRCLE": "10 10 0.01"})
    assert empty.status_code == 204 and empty.content == b""
    other_band = next(b for b in BANDPASSES.values() if b[2] < record.em_min or b[1] > record.em_max)
    assert client.get("/soda/sync", params={"ID": image, "CIRCLE": "150.1 2.2 0.01",
                                            "BAND": f"{other_band[0]!r}"}).status_code == 204
    for params, status, start in [
        ({"CIRCLE": "150.1 2.2 0.01"}, 400, "UsageError: ID: required"),
        ({"ID": "ivo://example.org/images?nope", "CIRCLE": "150.1 2.2 0.01"}, 404, "UsageError: ID: no dataset"),
        ({"ID": [image, image], "CIRCLE": "150.1 2.2 0.01"}, 400, "MultiValuedParamNotSupported: ID: "),
        ({"ID": image, "CIRCLE": ["150.1 2.2 0.01", "150.1 2.2 0.02"]}, 400, "MultiValuedParamNotSupported: "),
        ({"ID": image, "CIRCLE": "150.1 2.2"}, 400, "UsageError: CIRCLE: expected 3 numbers"),
        ({"ID": image, "POLYGON": "150 2 151 2"}, 400, "UsageError: POLYGON: needs at least 3 vertices"),
        ({"ID": image, "POS": "ELLIPSE 1 2 3"}, 400, "UsageError: POS: unknown shape"),
        ({"ID": image, "CIRCLE": "150.1 2.2 5"}, 400, "UsageError: CIRCLE: the region spans"),
        ({"ID": image}, 400, "UsageError: POS: required"),
        ({"ID": image, "CIRCLE": "150.1 2.2 0.01", "POL": "I"}, 400, "UsageError: POL: "),
        ({"ID": image, "CIRCLE": "150.1 2.2 0.01", "RESPONSEFORMAT": "image/png"}, 400, "UsageError: RESPONSEFORMAT"),
        ({"ID": image, "CIRCLE": "150.1 2.2 0.01", "TIME": "5 4"}, 400, "UsageError: TIME: "),
    ]:
        answer = client.get("/soda/sync", params=params)
        assert answer.status_code == status and answer.text.startswith(start), (params, answer.text)
        assert answer.headers["content-type"].startswith("text/plain")


# -- SODA async -----------------------------------------------------------------------------------------------


def test_a_soda_job_makes_a_result_per_combination_and_says_which_hold_no_pixels(client: TestClient,
                                                                                 demo_index: ArchiveIndex) -> None:
    here = demo_index.lookup(Field(150.1, 2.2, 0.001, 0.001))[:2]
    # the fields: POS values first, then CIRCLE, then POLYGON; the second misses both images
    regions = [("CIRCLE", "10 10 0.01"), ("POS", "CIRCLE 150.1 2.2 0.01"), ("POLYGON", "150.09 2.19 150.11 2.19 "
                                                                                       "150.1 2.21")]
    created = post_form(client, "/soda/async", [("ID", did(r.id)) for r in here] + regions + [("PHASE", "RUN")])
    assert created.status_code == 303, created.text
    job = created.headers["location"]
    assert job.startswith(f"{BASE}/soda/async/soda-")
    deadline = time.monotonic() + 30
    while client.get(job + "/phase").text in ("QUEUED", "EXECUTING") and time.monotonic() < deadline:
        time.sleep(0.05)
    document = client.get(job, headers={"Accept": "application/json"}).json()
    assert document["phase"] == "COMPLETED"
    products = [r for r in document["results"] if r["id"] != "table"]
    assert len(products) == 6  # every (region, ID) combination, one result each
    by_field = {}
    for r in products:
        by_field.setdefault(int(r["id"][:5]), []).append(r)
    assert [r["mime-type"] for r in by_field[1]] == ["text/plain", "text/plain"], products
    assert all(r["mime-type"] == "image/fits" for f in (0, 2) for r in by_field[f])
    explained = client.get(by_field[1][0]["href"])
    assert explained.headers["content-type"].startswith("text/plain") and explained.text.startswith("Error: no data")
    table = valid_table(client.get(job + "/results/table").content)
    assert sorted(table["result_id"]) == sorted(r["id"] for r in products if r["mime-type"] == "image/fits")
    # its own list, not /async's
    assert job.rsplit("/", 1)[-1] in client.get("/soda/async").text
    assert job.rsplit("/", 1)[-1] not in client.get("/async").text


def valid_table(content: bytes) -> Any:
    root = etree.fromstring(content)
    assert VOTABLE_XSD.validate(root), VOTABLE_XSD.error_log
    return parse_votable(io.BytesIO(content)).get_first_table().to_table()


@pytest.mark.parametrize(("data", "status", "start"), [
    ([("CIRCLE", "150.1 2.2 0.01")], 400, "UsageError: ID: required"),
    ([("ID", "nope"), ("CIRCLE", "150.1 2.2 0.01")], 404, "UsageError: ID: no dataset"),
    ([("ID", "{id}")], 400, "UsageError: POS: required"),
    ([("ID", "{id}"), ("CIRCLE", "150.1 2.2 0.01"), ("BAND", "1 2"), ("BAND", "3 4")], 400,
     "MultiValuedParamNotSupported: BAND"),
    ([("ID", "{id}"), ("CIRCLE", "150.1 2.2 0.01"), ("PHASE", "ABORT")], 400, "UsageError: PHASE"),
    ([("ID", "{id}"), ("CIRCLE", "150.1 2.2 0.01"), ("RUNID", "x" * 300)], 400, "UsageError: RUNID"),
])
def test_a_malformed_soda_job_is_refused_naming_the_parameter(client: TestClient, demo_index: ArchiveIndex,
                                                             data: list, status: int, start: str) -> None:
    image = demo_index.records[0].id
    answer = post_form(client, "/soda/async", [(n, v.format(id=image)) for n, v in data])
    assert answer.status_code == status and answer.text.startswith(start), answer.text


# -- VOSI -------------------------------------------------------------------------------------------------------


def test_capabilities_list_the_new_services_beside_each_of_them(client: TestClient) -> None:
    for root in ("", "/sia2", "/soda"):
        document = assert_valid_vosi(client.get(f"{root}/capabilities").content)
        urls = {c.get("standardID"): c.findtext("interface/accessURL") for c in document.iter("capability")}
        assert urls["ivo://ivoa.net/std/SIA#query-2.0"] == f"{BASE}/sia2/query"
        assert urls["ivo://ivoa.net/std/DataLink#links-1.1"] == f"{BASE}/datalink"
        assert urls["ivo://ivoa.net/std/SODA#sync-1.0"] == f"{BASE}/soda/sync"
        assert urls["ivo://ivoa.net/std/SODA#async-1.0"] == f"{BASE}/soda/async"
        assert client.get(f"{root}/availability").status_code == 200
    assert client.get("/sia2/query/capabilities").status_code == 404  # pyvo looks there first


def test_siap_rows_reach_their_images_datalink_documents_by_parent_id(client: TestClient) -> None:
    # no descriptor in the SIAP answer: pyvo would then take a row's dataset from DataLink (the whole image)
    # instead of its access reference (the cutout); a row's parent_id is a DataLink ID all the same
    answer = client.get("/sia", params={"POS": "150.1,2.2", "SIZE": "0.05", "FORMAT": "image/fits"})
    document = parse_votable(io.BytesIO(answer.content))
    assert [r.type for r in document.resources] == ["results"]
    row = document.get_first_table().to_table()[0]
    links = valid_votable(client.get("/datalink", params={"ID": row["parent_id"]}).content)
    this = next(r for r in links.get_first_table().to_table() if r["semantics"] == "#this")
    assert this["access_url"] == f"{BASE}/archive/{row['parent_id']}"
