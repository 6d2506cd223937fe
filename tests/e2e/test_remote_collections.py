"""Remote collections end to end: a job mixes the archive's images with other archives', fetched through pyvo
and astroquery from real servers on loopback, and the remotes' faults never become the job's.

The remote archive is a second siasync process serving the demo archive (SIAP 1.0, SIA 2.0, DataLink, the
files), reached through `tests.e2e.loopback_remote.Loopback`, which passes every request on unless a test
injects a fault, and which also stands in for a hips2fits service (computing the asked grid from the demo
archive with `cutout.mosaic`). The server under test serves the demo archive too, with a
``siasync-remotes.toml`` declaring:

* ``R-SIA2``: the remote's DEMO-WIDE through pyvo's SIA 2.0 client (files behind DataLink documents);
* ``R-SIAP``: the remote's DEMO-DEEP through pyvo's SIAP 1.0 client (the rows are the remote's cutouts);
* ``R-IRSA``: the remote's DEMO-POLE through astroquery's IRSA SIA 2.0 client;
* ``R-HIPS``: the HiPS ``DEMO/P/DEMO-WIDE/r`` through ``astroquery.hips2fits``;
* ``R-SLOW``: ``R-SIAP`` with a 1 s timeout, for the slow-server test;
* ``R-GONE``: a SIA 2.0 service on a port nobody listens on.

The truth each product is checked against is the demo archive's own files, read here with astropy: a remote
cutout must hold exactly its parent's pixels (located through the two WCSs), a HiPS product must be the
parent's sky resampled (reproject, here).
"""

from __future__ import annotations

import io
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from astropy.io import fits
from astropy.io.votable import parse_single_table
from astropy.wcs import WCS
from pyvo.dal import sia, sia2
from reproject import reproject_interp
from reproject.mosaicking import reproject_and_coadd

from cutout.index import ArchiveIndex
from cutout.sky import Field
from tests.e2e.conftest import Server, free_port, submit, wait_final
from tests.e2e.loopback_remote import Fault, Loopback

pytestmark = [pytest.mark.filterwarnings(
    "ignore::pyvo.utils.xml.exceptions.UnknownElementWarning", "ignore::pyvo.io.vosi.exceptions.W17",
    "ignore::astropy.io.votable.exceptions.VOTableSpecWarning", "ignore::astropy.wcs.FITSFixedWarning",
    "ignore:Unknown xsi.type sia.SimpleImageAccess")]

REMOTES = {"R-SIA2": "DEMO-WIDE", "R-SIAP": "DEMO-DEEP", "R-IRSA": "DEMO-POLE", "R-HIPS": "DEMO-WIDE",
           "R-SLOW": "DEMO-DEEP"}
SIZE = 0.02


@dataclass
class Remote:
    """The remote archive, its loopback, and the server under test."""

    upstream: Server
    loop: Loopback
    server: Server
    archive: Path
    index: ArchiveIndex

    @property
    def cache(self) -> Path:
        return self.server.state_dir / "remote-cache"

    def forget_images(self) -> None:
        """Empty the download cache's images (the queries' answers stay), so that the next job downloads."""
        shutil.rmtree(self.cache / "images", ignore_errors=True)


def remotes_toml(loop: str) -> str:
    fast = "retries = 2\nbackoff_s = 0.1\ntimeout_s = 20\n"
    return f"""
[R-SIA2]
protocol = "sia2"
url = "{loop}/sia2"
collection = "DEMO-WIDE"
{fast}
[R-SIAP]
protocol = "siap"
url = "{loop}/sia?COLLECTION=DEMO-DEEP"
title = "the remote's deep field"
{fast}
[R-IRSA]
protocol = "sia2"
client = "astroquery.ipac.irsa"
url = "{loop}/sia2"
collection = "DEMO-POLE"
{fast}
[R-HIPS]
protocol = "hips2fits"
url = "{loop}/hips2fits"
hips = "DEMO/P/DEMO-WIDE/r"
band = "r"
scale_arcsec = 2.0
tile_deg = 0.25
{fast}
[R-SLOW]
protocol = "siap"
url = "{loop}/sia?COLLECTION=DEMO-DEEP"
timeout_s = 1
retries = 1
backoff_s = 0.1

[R-GONE]
protocol = "sia2"
url = "http://127.0.0.1:{free_port()}/sia2"
retries = 1
backoff_s = 0.1
"""


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory, demo_archive: Path) -> Iterator[Remote]:
    root = tmp_path_factory.mktemp("remote")
    upstream = Server(demo_archive, root / "upstream", root / "upstream.log", "--workers", "1").start()
    loop = Loopback(upstream.url, demo_archive).start()
    archive = root / "archive"
    index = ArchiveIndex.load(demo_archive)
    index.save(archive / "siasync-index.sqlite")
    (archive / "siasync-remotes.toml").write_text(remotes_toml(loop.url))
    server = Server(archive, root / "state", root / "server.log", "--workers", "2").start()
    try:
        yield Remote(upstream, loop, server, archive, index)
    finally:
        server.stop()
        loop.stop()
        upstream.stop()


def job_document(url: str) -> dict:
    return httpx.get(url, headers={"Accept": "application/json"}, timeout=30).json()


def product_ids(job: dict) -> list[str]:
    return [r["id"] for r in job["results"] if r["id"] != "table"]


def open_product(url: str) -> fits.HDUList:
    response = httpx.get(url, timeout=60)
    assert response.status_code == 200, response.text
    return fits.open(io.BytesIO(response.content))


def assert_parent_pixels(product: fits.HDUList, index: ArchiveIndex, collection: str) -> str:
    """The product's pixels are exactly those of one image of ``collection`` in the demo archive (its band and
    epoch), placed by the two WCSs; the parent's id."""
    header, data = product[0].header, product[0].data
    wcs = WCS(header)
    ny, nx = data.shape
    centre = wcs.pixel_to_world_values((nx - 1) / 2, (ny - 1) / 2)
    candidates = [r for r in index.lookup(Field(float(centre[0]), float(centre[1]), 0.0, 0.0),
                                          collections=[collection])
                  if r.band == header.get("FILTER") and r.mjd == header.get("MJD-OBS")]
    for record in candidates:
        with fits.open(index.path_of(record)) as parent:
            hdu = parent[record.hdu]
            x0, y0 = map(float, WCS(hdu.header).world_to_pixel_values(*wcs.pixel_to_world_values(0, 0)))
            if abs(x0 - round(x0)) > 1e-3 or abs(y0 - round(y0)) > 1e-3 or x0 < -0.5 or y0 < -0.5:
                continue
            x0, y0 = round(x0), round(y0)
            expected = hdu.data[y0:y0 + ny, x0:x0 + nx]
            if expected.shape == data.shape and np.array_equal(expected, data, equal_nan=True):
                return record.id
    raise AssertionError(f"no image of {collection} holds these pixels ({header.get('PARENTID')})")


def assert_resampled_sky(product: fits.HDUList, index: ArchiveIndex) -> None:
    """A HiPS product is the demo archive's r-band sky on its own grid: the mean of its r-band images resampled
    (bilinear) onto that grid by reproject, here, agrees with it to float32 precision."""
    header, data = product[0].header, product[0].data.astype(float)
    ny, nx = data.shape
    ra, dec = WCS(header).pixel_to_world_values((nx - 1) / 2, (ny - 1) / 2)
    records = index.lookup(Field(float(ra), float(dec), nx * abs(header["CDELT1"]), ny * abs(header["CDELT2"])),
                           collections=["DEMO-WIDE"], bands=["r"])
    parents = [fits.open(index.path_of(r)) for r in records]
    try:
        expected, footprint = reproject_and_coadd([p[r.hdu] for p, r in zip(parents, records, strict=True)],
                                                  header, shape_out=data.shape, reproject_function=reproject_interp)
    finally:
        for parent in parents:
            parent.close()
    both = (footprint > 0) & np.isfinite(expected) & np.isfinite(data)
    assert both.sum() > 0.9 * data.size
    np.testing.assert_allclose(data[both], expected[both], rtol=1e-4, atol=1e-3 * np.nanstd(expected))


def table_rows(job_url: str):
    response = httpx.get(job_url + "/results/table", timeout=30)
    return parse_single_table(io.BytesIO(response.content)).to_table()


def test_remote_collections_are_declared_on_every_face(remote: Remote) -> None:
    page = httpx.get(remote.server.url + "/", headers={"Accept": "text/html"}, timeout=30).text
    assert "Remote collections" in page
    for name in [*REMOTES, "R-GONE"]:
        assert f"<td>{name}" in page
    notes = httpx.get(remote.server.url + "/availability", timeout=60).text
    assert "<vosi:available>true</vosi:available>" in notes  # a remote that is down is not our fault
    lines = {name: [line for line in notes.splitlines() if f"remote collection {name} (" in line] for name in REMOTES}
    assert all(len(found) == 1 and f" at {remote.loop.url}/" in found[0] for found in lines.values()), lines
    for line in notes.splitlines():  # R-SLOW's 1 s timeout is for its test: a loaded machine may miss it here
        if "remote collection " in line and "R-SLOW" not in line:
            assert ("does not answer" in line) == ("R-GONE" in line), line
    # /sia's self-description lists the remote collections among COLLECTION's values
    text = httpx.get(remote.server.url + "/sia", params={"FORMAT": "METADATA"}, timeout=30).text
    collection_param = text[text.index('name="INPUT:COLLECTION"'):]
    collection_param = collection_param[:collection_param.index("</PARAM>")]
    for name in [*REMOTES, "R-GONE", "DEMO-WIDE"]:
        assert f'value="{name}"' in collection_param
    refused = httpx.post(remote.server.url + "/async", data={"POS": "150.1,2.2", "SIZE": "0.1",
                                                              "COLLECTION": "R-NOWHERE"}, timeout=30)
    assert refused.status_code == 400 and refused.text.startswith("UsageError: COLLECTION: ")


def test_pyvo_queries_mark_remote_rows_and_their_cutouts_are_the_parents_pixels(remote: Remote) -> None:
    url = remote.server.url
    rows = sia.search(url + "/sia", pos=(150.1, 2.2), size=(SIZE, SIZE), format="image/fits",
                      COLLECTION="DEMO-DEEP,R-SIAP")
    local = [r for r in rows if not r["remote"]]
    remote_rows = [r for r in rows if r["remote"]]
    assert len(local) == len(remote_rows) == 3  # the three epochs of the deep field, here and there
    assert {r["remote"] for r in remote_rows} == {remote.loop.url + "/sia?COLLECTION=DEMO-DEEP"}
    assert {r["collection"] for r in remote_rows} == {"R-SIAP"}
    parents = set()
    for row in remote_rows:
        with open_product(row.getdataurl()) as product:
            parents.add(assert_parent_pixels(product, remote.index, "DEMO-DEEP"))
    assert parents == {r["parent_id"] for r in local}  # the same three images, cut to the same pixels
    found = sia2.search(url + "/sia2", pos=(150.1, 2.2, 0.01), collection=["R-SIA2", "DEMO-WIDE"])
    by_collection: dict[str, list] = {}
    for row in found:
        by_collection.setdefault(row["obs_collection"], []).append(row)
    assert len(by_collection["R-SIA2"]) == len(by_collection["DEMO-WIDE"]) > 0
    assert {row["remote"] for row in by_collection["R-SIA2"]} == {remote.loop.url + "/sia2"}
    assert all(str(row["access_url"]).startswith(remote.loop.url) for row in by_collection["R-SIA2"])
    assert not any(row["remote"] for row in by_collection["DEMO-WIDE"])
    # astroquery's IRSA client, on the remote's DEMO-POLE (across RA 0/360)
    pole = sia.search(url + "/sia", pos=(0.05, -30.0), size=(SIZE, SIZE), format="image/fits", COLLECTION="R-IRSA")
    assert len(pole) > 0 and {r["collection"] for r in pole} == {"R-IRSA"}
    for row in pole:
        with open_product(row.getdataurl()) as product:
            assert_parent_pixels(product, remote.index, "DEMO-POLE")
    gone = sia2.search(url + "/sia2", pos=(150.1, 2.2, 0.01), collection=["R-GONE", "DEMO-WIDE"])
    assert len(gone) == len(by_collection["DEMO-WIDE"])  # the archive's rows; the remote's fault is an INFO
    assert any(info.name == "REMOTE" and "R-GONE" in info.content for info in gone.votable.resources[0].infos)


#: the mixed job: the archive's DEMO-WIDE and every remote collection that answers, over three fields
MIXED = {"POS": ["150.1,2.2", "150.32,2.41", "149.95,2.05"], "SIZE": str(SIZE),
         "COLLECTION": ["DEMO-WIDE", "R-SIA2", "R-SIAP", "R-HIPS"], "BAND": ["r", "i"]}


def run_mixed(remote: Remote) -> tuple[str, dict]:
    url = submit(remote.server, **MIXED, PHASE="RUN")
    assert wait_final(url, 240).phase == "COMPLETED"
    return url, job_document(url)


def test_a_job_mixes_local_and_remote_products_each_fetched_once(remote: Remote) -> None:
    remote.forget_images()
    before = {p: remote.loop.count(p) for p in ("/archive", "/sia", "/hips2fits")}
    url, job = run_mixed(remote)
    ids = product_ids(job)
    assert len(ids) == len(set(ids))
    positions = [tuple(map(float, p.split(","))) for p in MIXED["POS"]]
    local = {f"{i:05d}.{r.id}.fits" for i, (ra, dec) in enumerate(positions)
             for r in remote.index.lookup(Field(ra, dec, SIZE, SIZE), collections=["DEMO-WIDE"], bands=["r", "i"])}
    assert local <= set(ids)
    table = table_rows(url)
    assert sorted(table["result_id"]) == sorted(ids)
    collection_of = dict(zip(table["result_id"], table["collection"], strict=True))
    remote_ids = [i for i in ids if i not in local]
    assert {collection_of[i] for i in remote_ids} == {"R-SIA2", "R-SIAP", "R-HIPS"}
    # the remote's DEMO-WIDE gives the same pairs as the archive's own: same parents, same pixels
    for name in [i for i in remote_ids if collection_of[i] == "R-SIA2"] + [i for i in remote_ids
                                                                          if collection_of[i] == "R-SIAP"]:
        with open_product(f"{url}/results/{name}") as product:
            parent = assert_parent_pixels(product, remote.index, REMOTES[collection_of[name]])
            assert name.startswith(f"{int(name[:5]):05d}.") and int(name[:5]) < len(positions)
            if collection_of[name] == "R-SIA2":
                assert f"{int(name[:5]):05d}.{parent}.fits" in local
    hips = [i for i in remote_ids if collection_of[i] == "R-HIPS"]
    assert len(hips) == len(positions)  # one tile per field, band r
    for name in hips:
        with open_product(f"{url}/results/{name}") as product:
            assert_resampled_sky(product, remote.index)
    # each remote image was downloaded once, however many fields it served
    info = job["jobInfo"]
    distinct = {i.split(".")[1] for i in remote_ids}
    assert info["remote_fetched"] == len(distinct)
    assert info["remote_fetched"] + info["remote_cached"] == len(remote_ids)
    assert remote.loop.count("/archive") - before["/archive"] == len({i.split(".")[1] for i in remote_ids
                                                                      if collection_of[i] == "R-SIA2"})
    assert remote.loop.count("/hips2fits") - before["/hips2fits"] == len({i.split(".")[1] for i in hips})
    assert "warning1" not in info


def test_remote_faults_that_pass_are_retried_and_change_nothing(remote: Remote) -> None:
    """503s, a body cut short and an HTML page where FITS was asked: the same products, the same pixels."""
    clean_url, clean = run_mixed(remote)  # from the cache: the reference
    remote.forget_images()
    remote.loop.fault("/archive", Fault(status=503, times=2))
    remote.loop.fault("/datalink", Fault(truncate=True, times=1))
    remote.loop.fault("/hips2fits", Fault(garbage=True, times=1))
    remote.loop.fault("/sia", Fault(truncate=True, times=1))
    try:
        url, job = run_mixed(remote)
        assert remote.loop.unspent() == []  # every fault struck, and was got over
    finally:
        remote.loop.heal()
    assert sorted(product_ids(job)) == sorted(product_ids(clean))
    assert "warning1" not in job["jobInfo"], job["jobInfo"]
    for name in product_ids(job):
        if "r-" in name.split(".")[1][:2]:
            a, b = httpx.get(f"{url}/results/{name}", timeout=30), httpx.get(f"{clean_url}/results/{name}", timeout=30)
            with fits.open(io.BytesIO(a.content)) as got, fits.open(io.BytesIO(b.content)) as want:
                np.testing.assert_array_equal(got[0].data, want[0].data, err_msg=name)


def job_page(url: str) -> str:
    return httpx.get(url, headers={"Accept": "text/html"}, timeout=30).text


def test_remotes_that_keep_failing_are_warnings_and_the_archive_products_all_come(remote: Remote) -> None:
    positions = ["150.2,2.3", "150.0,2.1"]  # not asked before: the queries are made now
    remote.loop.fault("/sia2", Fault(status=503))
    remote.loop.fault("/sia", Fault(delay=3.0))
    try:
        url = submit(remote.server, POS=positions, SIZE=str(SIZE), BAND="r",
                     COLLECTION=["DEMO-WIDE", "R-SIA2", "R-SLOW", "R-GONE"], PHASE="RUN")
        final = wait_final(url, 120)
    finally:
        remote.loop.heal()
    assert final.phase == "COMPLETED"
    job = job_document(url)
    fields = [tuple(map(float, p.split(","))) for p in positions]
    local = {f"{i:05d}.{r.id}.fits" for i, (ra, dec) in enumerate(fields)
             for r in remote.index.lookup(Field(ra, dec, SIZE, SIZE), collections=["DEMO-WIDE"], bands=["r"])}
    assert set(product_ids(job)) == local
    warnings = [v for k, v in job["jobInfo"].items() if k.startswith("warning")]
    text = " ".join(warnings)
    assert "remote R-SIA2" in text and "HTTP 503" in text and "(after 3 attempts)" in text
    assert "remote R-SLOW" in text and "no answer in time" in text
    assert "remote R-GONE" in text and "Connection failed" in text and "This could mean" not in text
    page = job_page(url)
    assert "Warnings" in page and "remote R-SIA2" in page and "ERROR" not in page


def test_a_slow_remote_never_holds_back_the_archive_and_one_dying_is_a_warning(remote: Remote) -> None:
    remote.forget_images()
    held = remote.loop.count("/datalink")
    remote.loop.fault("/datalink", Fault(hold=True))
    positions = ["150.05,2.15", "150.25,2.35"]
    fields = [tuple(map(float, p.split(","))) for p in positions]
    local = {f"{i:05d}.{r.id}.fits" for i, (ra, dec) in enumerate(fields)
             for r in remote.index.lookup(Field(ra, dec, SIZE, SIZE), collections=["DEMO-WIDE"], bands=["g"])}
    try:
        url = submit(remote.server, POS=positions, SIZE=str(SIZE), BAND="g", COLLECTION=["DEMO-WIDE", "R-SIA2"],
                     PHASE="RUN")
        deadline = time.monotonic() + 90
        while set(product_ids(job := job_document(url))) != local or remote.loop.count("/datalink") == held:
            assert time.monotonic() < deadline and set(product_ids(job)) <= local, job
            time.sleep(0.3)
        assert job["phase"] == "EXECUTING"  # every product of the archive is there; the remote's are held
        remote.upstream.stop(signal.SIGKILL)  # the remote archive dies with requests in flight
        remote.loop.release()
        final = wait_final(url, 120)
    finally:
        remote.loop.heal()
        if remote.upstream.process.poll() is not None:
            remote.upstream.start()
    assert final.phase == "COMPLETED"
    job = job_document(url)
    assert set(product_ids(job)) == local
    warnings = " ".join(v for k, v in job["jobInfo"].items() if k.startswith("warning"))
    assert "remote R-SIA2" in warnings and "HTTP 502" in warnings and "has no product of it" in warnings
    assert "remote R-SIA2" in job_page(url)


def test_a_mixed_job_killed_mid_way_resumes_with_each_product_once(remote: Remote) -> None:
    reference = product_ids(run_mixed(remote)[1])  # every image in the cache: fast, and the expected ids
    remote.forget_images()
    remote.loop.fault("/archive", Fault(delay=0.7))
    remote.loop.fault("/hips2fits", Fault(delay=0.7))
    try:
        url = submit(remote.server, **MIXED, PHASE="RUN")
        deadline = time.monotonic() + 90
        while True:
            job = job_document(url)
            if any(".r-" in i for i in product_ids(job)):
                break
            assert time.monotonic() < deadline and job["phase"] in ("QUEUED", "EXECUTING"), job
            time.sleep(0.2)
        remote.server.stop(signal.SIGKILL)
    finally:
        remote.loop.heal()
    assert len(product_ids(job)) < len(reference)  # killed mid-way
    remote.server.start()
    assert wait_final(url, 240).phase == "COMPLETED"
    ids = product_ids(job_document(url))
    assert len(ids) == len(set(ids)) and sorted(ids) == sorted(reference)
    table = table_rows(url)
    assert sorted(table["result_id"]) == sorted(ids)  # one row each, none twice
    directory = remote.server.state_dir / "results" / url.rsplit("/", 1)[1]
    assert sorted(p.name for p in directory.iterdir()) == sorted(ids)  # no temporary, no orphan


def test_a_mosaic_coadds_remote_inputs_with_the_archives(remote: Remote) -> None:
    """The remote's DEMO-WIDE holds the archive's own images: co-added with them (mean), each pixel is the same
    mean as the archive's images alone give, from twice the inputs."""
    query = {"POS": "150.12,2.21", "SIZE": str(SIZE), "MODE": "mosaic", "BAND": "r", "PHASE": "RUN"}
    mixed = submit(remote.server, **query, COLLECTION=["DEMO-WIDE", "R-SIA2"])
    alone = submit(remote.server, **query, COLLECTION="DEMO-WIDE")
    assert wait_final(mixed, 120).phase == wait_final(alone, 120).phase == "COMPLETED"
    assert product_ids(job_document(mixed)) == product_ids(job_document(alone)) == ["00000.mosaic-r.fits"]
    with open_product(f"{mixed}/results/00000.mosaic-r.fits") as got, \
            open_product(f"{alone}/results/00000.mosaic-r.fits") as want:
        assert got[0].header["NCOMBINE"] == 2 * want[0].header["NCOMBINE"] >= 2
        np.testing.assert_allclose(got[0].data, want[0].data, rtol=1e-5, equal_nan=True)
    assert list(table_rows(mixed)["collection"]) == ["DEMO-WIDE,R-SIA2"]  # the row names both
