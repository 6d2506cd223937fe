"""pyvo as a VO user runs it, against a real server: SIAP 1.0 queries, cutout downloads and VOSI."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from astropy.io import fits
from astropy.io.votable import parse_single_table
from pyvo.dal import DALQueryError, SIAService
from pyvo.dal.sia import search
from pyvo.io.vosi import parse_availability, parse_capabilities

from cutout.index import ArchiveIndex
from cutout.sky import Field
from siasync.vo.sia_votable import VERB_COLUMNS
from tests.e2e.conftest import Server, serving, submit, wait_final

POS, SIZE = (150.1, 2.2), 0.05


@pytest.fixture(scope="module")
def sia_server(tmp_path_factory: pytest.TempPathFactory, demo_archive: Path) -> Iterator[Server]:
    """One server on the local pool (the synchronous endpoints use no executor), shared by this module."""
    with serving(tmp_path_factory.mktemp("pyvo"), demo_archive, "--workers", "1") as srv:
        yield srv


def test_search_and_download_cutouts_equal_to_the_parents_pixels(sia_server: Server, demo_archive: Path,
                                                                  demo_index: ArchiveIndex) -> None:
    results = search(sia_server.url + "/sia", pos=POS, size=SIZE)
    expected = [r.id for r in demo_index.lookup(Field(*POS, SIZE, SIZE))]
    records = [r for r in results if r.format == "image/fits"]
    assert [r["parent_id"] for r in records] == expected
    compressed = [r for r in records if demo_index.by_id[r["parent_id"]].compressed]
    for record in records[:2] + compressed[:1]:
        url = record.getdataurl()
        assert url.startswith(sia_server.url + "/sia/cutout?")
        data = record.getdataset().read()
        assert len(data) == record.filesize
        with fits.open(io.BytesIO(data)) as hdul:
            hdul.verify("exception")
            cutout, header = np.array(hdul[0].data), hdul[0].header
        assert list(record.naxis.value) == [header["NAXIS1"], header["NAXIS2"]]
        parent_record = demo_index.by_id[record["parent_id"]]
        with fits.open(demo_archive / parent_record.path) as parent_file:  # astropy, the whole parent
            parent = np.array(parent_file[parent_record.hdu].data)
        x0, y0 = -header["LTV1"], -header["LTV2"]
        h, w = cutout.shape
        np.testing.assert_array_equal(cutout, parent[y0:y0 + h, x0:x0 + w])
    png = next(r for r in results if r.format == "image/png")
    assert png.getdataset().read().startswith(b"\x89PNG\r\n\x1a\n")


def test_service_columns_come_from_the_metadata_query(sia_server: Server) -> None:
    service = SIAService(sia_server.url + "/sia")
    assert [c.name for c in service.columns] == [c.name for c in VERB_COLUMNS[3]]
    assert {p.name for p in service.params} >= {"INPUT:POS", "INPUT:SIZE", "INPUT:FORMAT", "INPUT:VERB"}
    assert len(service.search(pos=POS, size=SIZE, verbosity=0).to_table().colnames) == len(VERB_COLUMNS[0])


def test_an_invalid_query_raises_dal_query_error_with_our_message(sia_server: Server) -> None:
    with pytest.raises(DALQueryError, match="SIZE: must be positive and at most 2 deg, got 5"):
        search(sia_server.url + "/sia", pos=POS, size=5)
    with pytest.raises(DALQueryError, match="INTERSECT: unknown value 'TOUCHES'"):
        search(sia_server.url + "/sia", pos=POS, size=SIZE, intersect="touches")


def test_a_sync_cutout_is_the_file_an_async_job_stages(sia_server: Server, demo_index: ArchiveIndex) -> None:
    final = wait_final(submit(sia_server, POS="150.1,2.2", SIZE="0.03,0.02", FORMAT="ALL", PHASE="RUN"))
    assert final.phase == "COMPLETED"
    products = [r for r in final.results if r.id_ != "table"]
    assert products
    for product in products:
        image_id, extension = product.id_.split(".", 1)[1].rsplit(".", 1)
        mime = {"fits": "image/fits", "png": "image/png"}[extension]
        sync = httpx.get(sia_server.url + "/sia/cutout", params={"ID": image_id, "POS": "150.1,2.2",
                                                                 "SIZE": "0.03,0.02", "FORMAT": mime})
        assert sync.status_code == 200 and sync.headers["content-type"] == mime
        assert sync.content == httpx.get(product.href).content


def test_sync_rows_describe_what_an_async_metadata_job_describes(sia_server: Server) -> None:
    job = submit(sia_server, POS="150.1,2.2", SIZE="0.03,0.02", FORMAT="METADATA", PHASE="RUN")
    assert wait_final(job).phase == "COMPLETED"
    staged = parse_single_table(io.BytesIO(httpx.get(job + "/results/table").content)).to_table()
    sync = search(sia_server.url + "/sia", pos=POS, size=(0.03, 0.02), format="image/fits", verbosity=3).to_table()
    assert len(sync) == len(staged) > 0
    sync.sort("parent_id")
    staged.sort("parent_id")  # the table is in registration order
    for name in ("title", "ra", "dec", "naxis", "scale", "crpix", "crval", "cd", "parent_id", "mjd_obs"):
        assert [str(v) for v in sync[name]] == [str(v) for v in staged[name]], name


@pytest.mark.filterwarnings("ignore::pyvo.utils.xml.exceptions.UnknownElementWarning",  # see tests/siasync/test_sia.py
                            "ignore::pyvo.io.vosi.exceptions.W17", "ignore:Unknown xsi.type sia.SimpleImageAccess")
def test_vosi_over_http(sia_server: Server) -> None:
    capabilities = parse_capabilities(io.BytesIO(httpx.get(sia_server.url + "/capabilities").content))
    sia = next(c for c in capabilities if c.standardid == "ivo://ivoa.net/std/SIA")
    assert sia.interfaces[0].accessurls[0].content == sia_server.url + "/sia"
    availability = parse_availability(io.BytesIO(httpx.get(sia_server.url + "/availability").content))
    assert availability.available is True
    missing = httpx.get(sia_server.url + "/sia/cutout", params={"ID": "nope", "POS": "1,2", "SIZE": "0.1"})
    assert missing.status_code == 404 and missing.text.startswith("NotFound: ID: ")

