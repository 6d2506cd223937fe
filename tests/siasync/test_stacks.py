"""MODE=mosaic and MODE=stack through the service: jobs, their table rows, /sia/cutout and validation."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits
from astropy.io.votable import parse_single_table
from astropy.wcs import WCS, WCSCOMPARE_ANCILLARY
from litestar.testing import TestClient
from PIL import Image

from cutout.engine import ParentCache
from cutout.index import ArchiveIndex
from cutout.mosaic import GridSpec, coadd, read_input
from cutout.sky import Field
from tests.siasync.helpers import create_job, wait_for

FIELDS = "150.1,2.2;150.2,2.3"


def finished(client: TestClient, data: dict) -> tuple[str, list[dict], dict]:
    """Run a job to COMPLETED; its id, results (id, href, mime) and its table as columns."""
    job_id = create_job(client, {**data, "PHASE": "RUN"})
    assert wait_for(client, job_id, ("COMPLETED", "ERROR"), timeout=120) == "COMPLETED"
    results = client.get(f"/async/{job_id}", headers={"Accept": "application/json"}).json()["results"]
    table = parse_single_table(io.BytesIO(client.get(f"/async/{job_id}/results/table").content)).to_table()
    return job_id, [r for r in results if r["id"] != "table"], table


def fetch(client: TestClient, href: str) -> bytes:
    response = client.get(href)
    assert response.status_code == 200, href
    return response.content


def test_stack_job_makes_one_aligned_cube_and_a_colour_preview_per_field(client: TestClient) -> None:
    _, results, table = finished(client, {"POS": FIELDS, "SIZE": "0.03", "MODE": "stack",
                                          "COLLECTION": "DEMO-WIDE"})
    assert sorted(r["id"] for r in results) == ["00000.stack.fits", "00000.stack.png",
                                                "00001.stack.fits", "00001.stack.png"]
    assert sorted(table["result_id"]) == sorted(r["id"] for r in results)
    for row in table:
        data = fetch(client, row["access_url"])
        assert row["filesize"] == len(data)
        assert row["bandpass_id"] == "g,r,i"
        if row["format"] == "image/png":
            assert row["pixflags"] == "V" and Image.open(io.BytesIO(data)).mode == "RGB"
            continue
        assert row["pixflags"] == "F"
        with fits.open(io.BytesIO(data)) as hdul:
            assert [h.name for h in hdul[1:]] == ["G", "G_WEIGHT", "R", "R_WEIGHT", "I", "I_WEIGHT"]
            wcs = WCS(hdul["G"].header)
            for band in ("G", "R", "I"):
                assert WCS(hdul[band].header).wcs.compare(wcs.wcs, cmp=WCSCOMPARE_ANCILLARY)
                assert hdul[band].header["NCOMBINE"] >= 1 and hdul[band].header["BUNIT"] == "adu"
                assert np.isfinite(hdul[band].data).mean() > 0.99  # DEMO-WIDE i has a dead column
            # the default grid: TAN, north up, 1"/px (DEMO-WIDE's scale), covering SIZE, centred on POS
            assert hdul[0].header["CTYPE1"] == "RA---TAN" and hdul[0].header["CDELT2"] == pytest.approx(1 / 3600)
            assert hdul["R"].data.shape == (108, 108)
            assert (hdul[0].header["CRVAL1"], hdul[0].header["CRVAL2"]) == pytest.approx(
                (row["field_ra"], row["field_dec"]))
            assert list(row["naxis"]) == [108, 108]
            assert list(row["scale"]) == pytest.approx([1 / 3600, 1 / 3600])
            assert row["projection"] == "TAN"


def test_mosaic_job_makes_one_file_per_band_on_one_grid(client: TestClient, demo_index: ArchiveIndex) -> None:
    _, results, table = finished(client, {"POS": "150.1,2.2", "SIZE": "0.02", "MODE": "mosaic",
                                          "FORMAT": "ALL", "COMBINE": "median"})
    # DEMO-WIDE g, r, i and DEEP r: the r mosaic co-adds both surveys, at DEEP's finer scale
    assert sorted(r["id"] for r in results) == sorted(f"00000.mosaic-{b}.{ext}" for b in "gri"
                                                      for ext in ("fits", "png"))
    headers = {}
    for row in table:
        if row["format"] == "image/fits":
            with fits.open(io.BytesIO(fetch(client, row["access_url"]))) as hdul:
                headers[row["bandpass_id"]] = hdul[0].header
                assert hdul["WEIGHT"].data.shape == hdul[0].data.shape
    assert set(headers) == {"g", "r", "i"}
    assert all(h["CDELT2"] == pytest.approx(0.5 / 3600) for h in headers.values())
    assert len({(h["NAXIS1"], h["CRVAL1"], h["CRVAL2"]) for h in headers.values()}) == 1
    r_inputs = [r for r in demo_index.lookup(Field(150.1, 2.2, 0.02, 0.02)) if r.band == "r"]
    assert headers["r"]["NCOMBINE"] == len(r_inputs) == 7  # 4 WIDE tiles meet here, and 3 DEEP epochs
    assert {headers["r"][f"IMCMB{i:03d}"] for i in range(1, 8)} == {r.id for r in r_inputs}
    assert headers["r"]["COMBINE"] == "median"
    r_row = next(row for row in table if row["bandpass_id"] == "r" and row["format"] == "image/fits")
    assert set(r_row["parent_id"].split(",")) == {r.id for r in r_inputs}
    assert r_row["collection"] == "DEMO-DEEP,DEMO-WIDE"


def test_requested_grid_reaches_the_file(client: TestClient) -> None:
    _, results, table = finished(client, {"POS": "150.1,2.2", "SIZE": "0.02", "MODE": "mosaic", "BAND": "r",
                                          "COLLECTION": "DEMO-DEEP", "CRVAL": "150.105,2.195", "CDELT": "0.0002",
                                          "ROTANG": "20", "PROJ": "ZEA", "NAXIS": "120,80", "BACKGROUND": "match"})
    assert [r["id"] for r in results] == ["00000.mosaic-r.fits"]
    header = fits.getheader(io.BytesIO(fetch(client, results[0]["href"])))
    assert (header["NAXIS1"], header["NAXIS2"], header["CTYPE1"]) == (120, 80, "RA---ZEA")
    assert (header["CRVAL1"], header["CRVAL2"]) == (150.105, 2.195)
    assert (header["CDELT1"], header["CDELT2"]) == (-0.0002, 0.0002)
    assert header["ROTANG"] == 20.0 and header["BKGMATCH"] is True
    assert header["REQ_RA"] == 150.1 and header["REQ_W"] == 0.02
    row = table[0]
    assert row["projection"] == "ZEA" and list(row["naxis"]) == [120, 80]
    assert list(row["crval"]) == [150.105, 2.195]
    assert list(row["scale"]) == pytest.approx([0.0002, 0.0002])


def test_metadata_describes_the_products_without_files(client: TestClient) -> None:
    job_id, results, table = finished(client, {"POS": FIELDS, "SIZE": "0.02", "MODE": "mosaic",
                                               "FORMAT": "METADATA", "COLLECTION": "DEMO-WIDE"})
    assert results == []
    assert len(table) == 6 and sorted(set(table["bandpass_id"])) == ["g", "i", "r"]
    assert all(list(n) == [72, 72] for n in table["naxis"])


def test_sync_mosaic_is_what_a_job_writes(client: TestClient) -> None:
    query = {"POS": "150.1,2.2", "SIZE": "0.02", "MODE": "mosaic", "BAND": "g"}
    _, results, _ = finished(client, query)
    response = client.get("/sia/cutout", params=query)
    assert response.status_code == 200 and response.headers["content-type"] == "image/fits"
    assert "mosaic-g.fits" in response.headers["content-disposition"]
    assert response.content == fetch(client, results[0]["href"])
    png = client.get("/sia/cutout", params={"POS": "150.1,2.2", "SIZE": "0.02", "MODE": "stack",
                                            "FORMAT": "image/png", "COLLECTION": "DEMO-WIDE"})
    assert png.status_code == 200 and Image.open(io.BytesIO(png.content)).mode == "RGB"


def test_sync_mosaic_of_chosen_images(client: TestClient, demo_index: ArchiveIndex) -> None:
    field = Field(150.1, 2.2, 0.02, 0.02)
    deep = [r for r in demo_index.lookup(field) if r.collection == "DEMO-DEEP"][:2]
    response = client.get("/sia/cutout", params=[("POS", "150.1,2.2"), ("SIZE", "0.02"), ("MODE", "mosaic"),
                                                 ("ID", deep[0].id), ("ID", deep[1].id)])
    assert response.status_code == 200
    with fits.open(io.BytesIO(response.content)) as hdul:
        assert hdul[0].header["NCOMBINE"] == 2
        # the same co-add computed directly from the two parents
        grid = GridSpec().resolve(field, 0.5 / 3600)
        cache = ParentCache()
        direct = coadd([read_input(cache.get(demo_index.path_of(r), r.hdu, r.id, r.path), grid, "r") for r in deep],
                       grid)
        cache.clear()
        np.testing.assert_array_equal(hdul[0].data, direct.data)


@pytest.mark.parametrize(("params", "name", "status"), [
    ({"MODE": "mosaic"}, "BAND", 400),  # the field has three bands
    ({"MODE": "mosaic", "ID": "no-such-image"}, "ID", 404),
    ({"NAXIS": "100"}, "NAXIS", 400),  # grid parameters need MODE=mosaic or stack
    ({"MODE": "stack", "NAXIS": "100000"}, "NAXIS", 400),
    ({"MODE": "stack", "PROJ": "XYZ"}, "PROJ", 400),
    ({"MODE": "stack", "COMBINE": "max"}, "COMBINE", 400),
    ({"MODE": "stack", "CFRAME": "GAL", "EQUINOX": "2000"}, "EQUINOX", 400),
    ({"MODE": "stack", "CRVAL": "400,0"}, "CRVAL", 400),
    ({"MODE": "stack", "ROTANG": "north"}, "ROTANG", 400),
    ({"MODE": "stack", "BACKGROUND": "subtract"}, "BACKGROUND", 400),
])
def test_sync_errors_name_the_parameter(client: TestClient, params: dict, name: str, status: int) -> None:
    response = client.get("/sia/cutout", params={"POS": "150.1,2.2", "SIZE": "0.02", **params})
    assert response.status_code == status
    assert name in response.text


def test_job_errors_name_the_parameter(client: TestClient) -> None:
    for params, name in (({"CDELT": "0.0001"}, "CDELT"), ({"MODE": "stack", "SIZE": "1.5"}, "SIZE"),
                         ({"MODE": "stack", "CDELT": "0.000001"}, "CDELT"), ({"MODE": "mix"}, "MODE")):
        response = client.post("/async", data={"POS": "150.1,2.2", "SIZE": "0.02", **params})
        assert response.status_code == 400 and response.text.startswith(f"UsageError: {name}:"), response.text
