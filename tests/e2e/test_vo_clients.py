"""pyvo as a VO user would drive the modern face of a real server: SIA 2.0, DataLink and SODA, sync and async.

Nothing of pyvo is mocked: it reads the service's capabilities, queries, follows DataLink documents and
service descriptors, and runs SODA jobs with its UWS client, over HTTP to a real uvicorn server.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from astropy.io import fits
from pyvo.dal import AsyncTAPJob, sia, sia2
from pyvo.dal.adhoc import DatalinkResults

from cutout.index import ArchiveIndex
from cutout.sky import Field, from_plane
from tests.e2e.conftest import Server, serving

pytestmark = [pytest.mark.filterwarnings(
    "ignore::pyvo.utils.xml.exceptions.UnknownElementWarning", "ignore::pyvo.io.vosi.exceptions.W17",
    "ignore:Unknown xsi.type sia.SimpleImageAccess")]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, demo_archive: Path) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("vo"), demo_archive, "--workers", "2") as srv:
        yield srv


def box_polygon(field: Field) -> tuple[float, ...]:
    """The corners of a field's box: its edges are great circles, so this polygon is the same region."""
    hw, hh = field.width / 2, field.height / 2
    ra, dec = from_plane(field.ra, field.dec, np.array([-hw, hw, hw, -hw]), np.array([-hh, -hh, hh, hh]))
    return tuple(float(c) for pair in zip(ra, dec, strict=True) for c in pair)


def parent_pixels(index: ArchiveIndex, image_id: str, cutout: fits.HDUList) -> np.ndarray:
    record = index.by_id[image_id]
    header = cutout[0].header
    y0, x0 = -header["LTV2"], -header["LTV1"]
    ny, nx = cutout[0].data.shape
    with fits.open(index.path_of(record)) as parent:
        return parent[record.hdu].data[y0:y0 + ny, x0:x0 + nx].copy()


def test_pyvo_finds_the_service_and_its_rows_agree_with_siap(server: Server, demo_index: ArchiveIndex) -> None:
    field = Field(150.1, 2.2, 0.2, 0.2)
    results = sia2.search(server.url + "/sia2", pos=box_polygon(field))
    records = list(results)
    expected = {r.id for r in demo_index.lookup(field)}
    assert len(records) == len(expected) > 5 and {r.obs_id for r in records} == expected
    siap = sia.search(server.url + "/sia", pos=(field.ra, field.dec), size=(field.width, field.height),
                      format="image/fits", verbosity=3)
    by_parent = {row["parent_id"]: row for row in siap}
    for record in records:  # every record read; each agrees with the SIAP 1.0 row of the same image
        row = by_parent[record.obs_id]
        assert record.obs_collection == row["collection"] and record.t_min.mjd == pytest.approx(row["mjd_obs"])
        assert record.em_min.to_value("m") == pytest.approx(row["bandpass_lolimit"])
        assert record.access_format == "application/x-votable+xml;content=datalink"
        assert record.s_xel1 > 0 and record.s_fov.to_value("deg") > 0
    # SIAP 1.0 rows reach the same DataLink documents by their parent_id
    for row in siap:
        links = DatalinkResults.from_result_url(f"{server.url}/datalink?ID={row['parent_id']}")
        this = next(links.bysemantics("#this", include_narrower=False))
        assert this.getdataurl() == f"{server.url}/archive/{row['parent_id']}"


def test_pyvo_follows_datalink_to_the_file_and_the_preview(server: Server, demo_index: ArchiveIndex) -> None:
    results = sia2.search(server.url + "/sia2", pos=(150.1, 2.2, 0.02), maxrec=3)
    linked = list(results.iter_datalinks())  # one POST for every ID at once, split per ID by pyvo
    assert len(linked) == len(results) == 3
    for record, links in zip(results, linked, strict=True):
        this = next(links.bysemantics("#this", include_narrower=False))
        data = httpx.get(this.getdataurl(), timeout=30).content
        assert data == demo_index.path_of(demo_index.by_id[record.obs_id]).read_bytes()
        preview = next(links.bysemantics("#preview", include_narrower=False))
        assert httpx.get(preview.getdataurl(), timeout=60).content.startswith(b"\x89PNG")
    unknown = DatalinkResults.from_result_url(server.url + "/datalink?ID=ivo://siasync.local/images?nope")
    assert next(iter(unknown)).error_message.startswith("NotFoundFault")


def test_pyvo_cuts_through_soda_from_a_query_and_from_a_datalink_document(server: Server,
                                                                         demo_index: ArchiveIndex) -> None:
    record = next(iter(sia2.search(server.url + "/sia2", pos=(150.1, 2.2, 0.001), maxrec=1)))
    # the SIA 2.0 answer's own SODA descriptor, its ID bound to the row's obs_publisher_did
    with fits.open(io.BytesIO(record.processed(circle=(150.1, 2.2, 0.01)).read())) as cut:
        np.testing.assert_array_equal(cut[0].data, parent_pixels(demo_index, record.obs_id, cut))
        assert cut[0].header["PARENTID"] == record.obs_id
    # the DataLink document's descriptor, its ID fixed to the dataset
    links = record.getdatalink()
    cutout = next(link for link in links if link.service_def and link.service_def.startswith("soda-sync"))
    with fits.open(io.BytesIO(cutout.processed(circle=(150.1, 2.2, 0.005)).read())) as cut:
        np.testing.assert_array_equal(cut[0].data, parent_pixels(demo_index, record.obs_id, cut))


def test_a_soda_job_runs_under_pyvos_uws_client(server: Server, demo_index: ArchiveIndex) -> None:
    images = [r.id for r in demo_index.lookup(Field(150.1, 2.2, 0.001, 0.001))[:2]]
    created = httpx.post(server.url + "/soda/async", timeout=30, follow_redirects=False, data={
        "ID": images, "CIRCLE": ["150.1 2.2 0.01", "150.11 2.21 0.01", "20 20 0.01"]})
    assert created.status_code == 303
    job = AsyncTAPJob(created.headers["location"])
    assert job.phase == "PENDING"
    job.run()
    job.wait(phases=["COMPLETED", "ERROR", "ABORTED"], timeout=60)
    assert job.phase == "COMPLETED"
    results = {r.id_: r for r in job._job.results}  # pyvo's parse of the UWS results list
    products = [name for name in results if name != "table"]
    assert len(products) == 6  # three regions of two images, each combination one result
    for name in products:
        body = httpx.get(results[name].href, timeout=30)
        if name.startswith("00002."):  # (20, 20) holds no pixel of either image
            assert body.text.startswith("Error: no data")
            continue
        with fits.open(io.BytesIO(body.content)) as cut:
            np.testing.assert_array_equal(cut[0].data, parent_pixels(demo_index, name.split(".")[1], cut))
    job.delete()
    assert httpx.get(created.headers["location"], timeout=30).status_code == 404


def test_head_through_a_real_server_sends_gets_headers_and_no_body(server: Server) -> None:
    job = httpx.post(server.url + "/async", data={"POS": "150.1,2.2", "SIZE": "0.01", "PHASE": "RUN"},
                     timeout=30).headers["location"]
    deadline = time.monotonic() + 30
    while httpx.get(f"{job}/phase", timeout=30).text != "COMPLETED" and time.monotonic() < deadline:
        time.sleep(0.1)
    product = httpx.get(str(job), headers={"Accept": "application/json"}, timeout=30).json()["results"][1]["href"]
    with httpx.Client(timeout=30) as client:
        for url in (str(job), product, f"{job}/results/table", f"{job}/events", server.url + "/sia2/capabilities"):
            get = client.get(url) if not url.endswith("/events") else None
            head = client.head(url)
            assert head.status_code == 200 and head.content == b""
            if get is not None:  # the framing of a body that HEAD does not send (chunked) is uvicorn's to drop
                volatile = ("date", "transfer-encoding")
                assert {k: v for k, v in head.headers.items() if k not in volatile} == \
                    {k: v for k, v in get.headers.items() if k not in volatile}, url
