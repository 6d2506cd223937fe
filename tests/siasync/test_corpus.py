"""Real survey layouts (tests/cutout/corpus.py), indexed, described and cut, against astropy's truth.

Every indexed image of the corpus goes through ``/sia/cutout`` and an async job: pixels equal
to the parent's (raw integers and BSCALE/BZERO/BLANK kept), the cutout's WCS equal to the
parent's and to `~astropy.nddata.Cutout2D`'s within 1e-6 degrees at its corners and centre,
the SIAP row in agreement with the header, previews for every BITPIX with BLANK shown as
missing. A parent that breaks is a warning, never the job's end.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.io.votable import parse as parse_votable
from astropy.io.votable.exceptions import W06
from astropy.nddata import Cutout2D
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales
from litestar.testing import TestClient
from PIL import Image

from cutout.geometry import celestial_frame
from cutout.index import ArchiveIndex
from cutout.layout import image_wcs
from cutout.scan import ImageRecord, bandpass
from cutout.sky import Field, Intersect
from siasync.app import create_app
from siasync.settings import Settings
from tests.cutout.corpus import Layout, build_corpus, corpus_fields
from tests.siasync.conftest import TEST_HOST
from tests.siasync.helpers import create_job, wait_for

BASE = f"http://{TEST_HOST}"
#: the cutout WCS agrees with the parent's and Cutout2D's to this, in degrees
TOLERANCE_DEG = 1e-6


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Layout], ArchiveIndex, list[str]]:
    root = tmp_path_factory.mktemp("corpus")
    layouts = build_corpus(root)
    handler = _Capture()
    logging.getLogger("cutout.scan").addHandler(handler)
    try:
        index, _ = ArchiveIndex.build(root, workers=2)
    finally:
        logging.getLogger("cutout.scan").removeHandler(handler)
    index.save()
    return root, layouts, ArchiveIndex.load(root), handler.messages


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def client(corpus: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = corpus[0]
    settings = Settings(archive=root, state_dir=tmp_path_factory.mktemp("corpus-state"), workers=2,
                        allowed_hosts=(TEST_HOST,))
    with TestClient(create_app(settings), base_url=BASE) as c:
        yield c


def open_parent(root: Path, record: ImageRecord) -> tuple[np.ndarray, fits.Header, WCS]:
    """The parent's raw values, header and celestial WCS, as astropy reads them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        with fits.open(root / record.path, do_not_scale_image_data=True) as hdul:
            hdu = hdul[record.hdu]
            data = np.array(hdu.data)
            header = hdu.header.copy()
            wcs = image_wcs(header, hdul)
    return data.reshape(data.shape[-2:]), header, wcs


def world(wcs: WCS, x: np.ndarray, y: np.ndarray) -> SkyCoord:
    """ICRS positions of pixels, through astropy (the frame as `celestial_frame` maps the axes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        out = wcs.all_pix2world(np.column_stack([x, y]), 0)
    lon, lat = out[:, wcs.wcs.lng], out[:, wcs.wcs.lat]
    return SkyCoord(lon, lat, unit="deg", frame=celestial_frame(wcs)).icrs


def assert_same(a: SkyCoord, b: SkyCoord, what: str) -> None:
    """Positions equal within the tolerance; off-sky pixels (NaN) off the sky in both."""
    off_a, off_b = np.isnan(a.ra.deg), np.isnan(b.ra.deg)
    np.testing.assert_array_equal(off_a, off_b, err_msg=what)
    separation = a[~off_a].separation(b[~off_b]).deg
    assert np.all(separation < TOLERANCE_DEG), (what, separation)


def test_every_file_is_indexed_or_skipped_with_one_line_naming_its_cause(corpus: Any) -> None:
    root, layouts, index, warned = corpus
    records: dict[str, list[ImageRecord]] = {}
    for r in index.records:
        records.setdefault(r.path, []).append(r)
    skipped = {s.path: s for s in index.skipped}
    assert set(records) | set(skipped) == {layout.path for layout in layouts}
    assert not set(records) & set(skipped)
    for layout in layouts:
        found = records.get(layout.path, [])
        if layout.hdus:
            assert tuple(r.hdu for r in found) == layout.hdus, (layout.path, skipped.get(layout.path))
        if layout.cause:
            assert layout.path in skipped and skipped[layout.path].cause == layout.cause, layout.path
        if layout.path in skipped:
            assert sum(m.startswith(f"skipped {layout.path}: ") for m in warned) == 1, layout.path
        if layout.wide is not None:
            assert all(r.wide == layout.wide for r in found), layout.path
        meta = layout.meta
        for r in found:
            if "band" in meta:
                assert r.band == meta["band"], layout.path
            if "mjd" in meta:
                assert r.mjd == pytest.approx(meta["mjd"]) and r.t_min == pytest.approx(meta["mjd"])
            for key in ("instrument", "exptime", "facility", "target", "t_max"):
                if key in meta:
                    assert getattr(r, key) == pytest.approx(meta[key]) if isinstance(meta[key], float) \
                        else getattr(r, key) == meta[key], (layout.path, key)
            if "em" in meta:
                assert (r.em_min, r.em_max) == pytest.approx(meta["em"])
            if "frame" in meta:
                assert r.frame == meta["frame"], layout.path
            if meta.get("tables"):
                assert r.wcs_tables and r.cutout_tail > 0
    named = [layout for layout in layouts if layout.named]
    assert len(named) >= 20  # every layout issue 15 names is in the corpus
    assert sum(1 for layout in layouts if layout.source != "generated") >= 40  # and the packages' samples


def test_frames_are_placed_where_astropy_puts_them(corpus: Any) -> None:
    root, _, index, _ = corpus
    for record in index.records:
        _, header, wcs = open_parent(root, record)
        ny, nx = record.shape
        if record.wide:
            continue
        corners = world(wcs, np.array([-0.5, nx - 0.5, nx - 0.5, -0.5]), np.array([-0.5, -0.5, ny - 0.5, ny - 0.5]))
        stored = SkyCoord(record.footprint[::4, 0], record.footprint[::4, 1], unit="deg")
        assert np.all(corners.separation(stored).deg < TOLERANCE_DEG), record.path
    ecliptic = next(r for r in index.records if r.path.endswith("frame_ecliptic.fits"))
    lon, lat = ecliptic.wcs().wcs.crval
    truth = SkyCoord(lon, lat, unit="deg", frame="barycentricmeanecliptic").icrs
    centre = SkyCoord(*np.mean(ecliptic.footprint, axis=0), unit="deg")
    assert truth.separation(centre).deg < 0.05  # tens of degrees off when placed as if ICRS
    assert SkyCoord(lon, lat, unit="deg", frame="icrs").separation(truth).deg > 10


def test_wide_images_are_found_anywhere_inside_and_never_outside(corpus: Any) -> None:
    root, _, index, _ = corpus
    rng = np.random.default_rng(15)
    wide = [r for r in index.records if r.wide]
    assert {Path(r.path).name for r in wide} >= {"allsky_car_galactic.fits", "hemisphere_zea.fits",
                                                "car_strip_20x10.fits"}
    truth = {r.id: open_parent(root, r)[2] for r in wide}
    for _ in range(300):
        ra, dec = rng.uniform(0, 360), np.degrees(np.arcsin(rng.uniform(-1, 1)))
        field = Field(float(ra), float(dec), 0.2, 0.2)
        found = {r.id for r in index.lookup(field, Intersect.CENTER)}
        for record in wide:
            wcs = truth[record.id]
            frame = celestial_frame(wcs)
            native = SkyCoord(ra, dec, unit="deg").transform_to(frame).spherical
            w = np.zeros((1, 2))
            w[0, wcs.wcs.lng], w[0, wcs.wcs.lat] = native.lon.deg, native.lat.deg
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    x, y = wcs.all_world2pix(w, 0, quiet=True)[0]
                except Exception:
                    x = y = np.nan
            ny, nx = record.shape
            inside = bool(np.isfinite(x) and np.isfinite(y) and -0.5 <= x <= nx - 0.5 and -0.5 <= y <= ny - 0.5)
            assert (record.id in found) == inside, (record.path, ra, dec)
    strip = next(r for r in wide if r.path.endswith("car_strip_20x10.fits"))
    # inside the strip, just below its top edge at Dec 60 (a small circle, not a great circle)
    for ra in (141.0, 145.0, 150.0, 155.0, 159.0):
        assert strip.id in {r.id for r in index.lookup(Field(ra, 59.9, 0.05, 0.05))}
    assert all(r.id != strip.id for r in index.lookup(Field(150.0, 60.2, 0.05, 0.05)))
    point = {r.id for r in index.lookup(Field(150.0, 55.0, 0.0, 0.0))}  # SIZE=0: the images containing POS
    assert strip.id in point


def _rows(client: TestClient, params: dict) -> Any:
    response = client.get("/sia", params=params)
    assert response.status_code == 200
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = parse_votable(io.BytesIO(response.content), verify="warn")
    assert all(isinstance(w.message, W06) for w in caught), [str(w.message) for w in caught]
    return table.get_first_table().array


def test_cutouts_match_astropy_for_every_indexed_image(corpus: Any, client: TestClient) -> None:
    root, layouts, index, _ = corpus
    expected = {layout.path: layout for layout in layouts}
    checked = 0
    for record in index.records:
        data, header, pwcs = open_parent(root, record)
        geometry = index.geometry(record)
        layout = expected[record.path]
        for ra, dec, size in corpus_fields(record, geometry):
            params = {"ID": record.id, "POS": f"{ra!r},{dec!r}", "SIZE": f"{size!r}"}
            response = client.get("/sia/cutout", params={**params, "FORMAT": "image/fits"})
            assert response.status_code == 200, (record.path, response.text)
            with fits.open(io.BytesIO(response.content), do_not_scale_image_data=True) as hdul:
                hdul.verify("exception")
                out, cheader = np.array(hdul[0].data), hdul[0].header.copy()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", AstropyWarning)
                    cwcs = WCS(cheader, fobj=hdul)
            h, w = out.shape
            x0 = int(round(float(header.get("LTV1", 0)) - cheader["LTV1"]))
            y0 = int(round(float(header.get("LTV2", 0)) - cheader["LTV2"]))
            # pixels: the parent's raw values, with their scaling cards
            np.testing.assert_array_equal(out, data[y0:y0 + h, x0:x0 + w], err_msg=record.path)
            assert out.dtype.newbyteorder("=") == data.dtype.newbyteorder("="), record.path
            for key in ("BSCALE", "BZERO", "BLANK"):
                assert cheader.get(key) == header.get(key), (record.path, key)
            # the WCS: equal to the parent's, and to Cutout2D's, at the corners and the centre
            xs = np.array([0, w - 1, w - 1, 0, (w - 1) / 2])
            ys = np.array([0, 0, h - 1, h - 1, (h - 1) / 2])
            ours, parents = world(cwcs, xs, ys), world(pwcs, xs + x0, ys + y0)
            assert_same(ours, parents, record.path)
            c2d = Cutout2D(data, (x0 + (w - 1) / 2, y0 + (h - 1) / 2), (h, w), wcs=pwcs, mode="partial")
            ox, oy = c2d.origin_original
            assert_same(ours, world(c2d.wcs, xs + x0 - ox, ys + y0 - oy), f"{record.path} (Cutout2D)")
            # the SIAP row agrees with the header
            rows = _rows(client, {"POS": params["POS"], "SIZE": params["SIZE"], "FORMAT": "image/fits", "VERB": "3"})
            row = next(r for r in rows if r["parent_id"] == record.id)
            assert row["access_url"].endswith(client.get("/sia/cutout", params={**params}).url.query.decode()) \
                or "ID=" + record.id in row["access_url"]
            assert list(row["naxis"]) == [w, h] and row["filesize"] == len(response.content), record.path
            centre = world(cwcs, np.array([(w - 1) / 2]), np.array([(h - 1) / 2]))
            assert SkyCoord(row["ra"], row["dec"], unit="deg").separation(centre[0]).deg < TOLERANCE_DEG
            assert list(row["scale"]) == pytest.approx(list(proj_plane_pixel_scales(cwcs.celestial)), rel=1e-9)
            assert list(row["crpix"]) == pytest.approx([cwcs.wcs.crpix[0], cwcs.wcs.crpix[1]])
            assert row["bandpass_id"] == record.band and row["collection"] == record.collection
            assert (row["instrument"] or None) == record.instrument
            if record.mjd is None:
                assert np.ma.is_masked(row["mjd_obs"]) or not np.isfinite(row["mjd_obs"])
            else:
                assert row["mjd_obs"] == pytest.approx(record.mjd)
            for key, column in (("band", "bandpass_id"), ("instrument", "instrument")):
                if key in layout.meta:
                    assert row[column] == layout.meta[key], (record.path, key)
            if record.frame in ("fk4", "fk5"):
                assert row["coord_frame"] == record.frame.upper()
                assert row["equinox"] == pytest.approx(float(cheader["EQUINOX"]))
            elif record.frame == "galactic":
                assert row["coord_frame"] == "GAL" and np.ma.is_masked(row["equinox"])
            known = bandpass(record.band)
            if known and record.em_min is not None:
                assert row["bandpass_lolimit"] == pytest.approx(record.em_min)
            # previews for every BITPIX: BLANK pixels are missing (black)
            preview = client.get("/sia/cutout", params={**params, "FORMAT": "image/png"})
            assert preview.status_code == 200, (record.path, preview.text)
            image = np.flipud(np.array(Image.open(io.BytesIO(preview.content))))
            assert image.shape == (h, w)
            blank = cheader.get("BLANK")
            if isinstance(blank, int) and (out == blank).any():
                assert np.all(image[out == blank] == 0), record.path
                assert image[out != blank].mean() > 0
            checked += 1
    assert checked >= 100


def test_a_job_over_the_whole_corpus_makes_every_product_and_warns_of_a_broken_parent(
        corpus: Any, client: TestClient) -> None:
    root, _, index, _ = corpus
    positions = []
    for record in index.records:
        ra, dec, _ = corpus_fields(record, index.geometry(record))[0]  # a point on the image
        positions.append(f"{ra % 360.0!r},{dec!r}")
    victim = next(r for r in index.records if r.path.endswith("tile_rice_1_float32.fits.fz"))
    path = root / victim.path
    good = path.read_bytes()
    try:
        raw = bytearray(good)
        raw[-5000:] = b"\xff" * 5000  # the tiles are garbage: decompression fails in the worker
        path.write_bytes(bytes(raw))
        job = create_job(client, {"POS": positions, "SIZE": "0", "FORMAT": "ALL", "PHASE": "RUN"})
        assert wait_for(client, job, ("COMPLETED", "ERROR"), timeout=240) == "COMPLETED"
        document = client.get(f"/async/{job}", headers={"Accept": "application/json"}).json()
        warnings_ = [v for k, v in document["jobInfo"].items() if k.startswith("warning")]
        assert any(victim.id in w and victim.path in w for w in warnings_), warnings_
        results = {r["id"]: r for r in document["results"]}
        page = client.get(f"/async/{job}", headers={"Accept": "text/html"}).text
        assert victim.path in page and "Warnings" in page
        made = 0
        for i, (record, pos) in enumerate(zip(index.records, positions, strict=True)):
            name = f"{i:05d}.{record.id}.fits"
            if record.id == victim.id:
                assert name not in results
                continue
            assert name in results, (record.path, sorted(results)[:5])
            staged = client.get(f"/async/{job}/results/{name}").content
            direct = client.get("/sia/cutout", params={"ID": record.id, "POS": pos, "SIZE": "0"})
            assert staged == direct.content, record.path  # SIZE=0: the whole image, byte for byte
            with fits.open(io.BytesIO(staged)) as hdul:
                assert hdul[0].data.shape == record.shape
            made += 1
        assert made == len(index.records) - 1
    finally:
        path.write_bytes(good)


def test_sia2_finds_every_real_image_at_its_centre_and_describes_it_from_its_header(corpus: Any,
                                                                                  client: TestClient) -> None:
    """SIA 2.0 and DataLink over the real layouts: wide maps, every frame, lookup-table and plate distortions."""
    root, _, index, _ = corpus
    everything = client.get("/sia2/query", params={"POS": "RANGE -Inf +Inf -Inf +Inf"})
    assert everything.status_code == 200
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = parse_votable(io.BytesIO(everything.content), verify="warn").get_first_table().to_table()
    assert not caught, [str(w.message) for w in caught]
    assert sorted(rows["obs_id"]) == sorted(r.id for r in index.records)  # each image once
    by_id = {row["obs_id"]: row for row in rows}
    for record in index.records:
        _, header, pwcs = open_parent(root, record)
        ny, nx = record.shape
        # the pixel on the sky nearest the middle (an all-sky map's or a ZPN hole's centre is off it), as astropy
        # places it
        fx, fy = np.meshgrid(np.linspace(0.1, 0.9, 9), np.linspace(0.1, 0.9, 9))
        order = np.argsort(np.hypot(fx - 0.5, fy - 0.5).ravel())
        points = world(pwcs, fx.ravel()[order] * (nx - 1), fy.ravel()[order] * (ny - 1))
        centre = next(p for p in points if np.isfinite(p.ra.deg) and np.isfinite(p.dec.deg))
        found = client.get("/sia2/query", params={"POS": f"CIRCLE {centre.ra.deg:.10f} {centre.dec.deg:.10f} 0.0001"})
        assert found.status_code == 200, found.text
        found_ids = set(parse_votable(io.BytesIO(found.content)).get_first_table().to_table()["obs_id"])
        assert record.id in found_ids, record.path
        row = by_id[record.id]
        assert (row["s_xel1"], row["s_xel2"]) == (nx, ny)
        assert row["instrument_name"] == (record.instrument or "")
        if record.em_min is not None:  # the band's interval as indexing read it from the header, as SIAP 1.0 shows it
            assert (row["em_min"], row["em_max"]) == pytest.approx((record.em_min, record.em_max))
    ids = [("ID", r.id) for r in index.records]
    links = client.post("/datalink", data={"ID": [r.id for r in index.records]})
    table = parse_votable(io.BytesIO(links.content)).get_first_table().to_table()
    this = {row["ID"]: row for row in table if row["semantics"] == "#this"}
    assert len(this) == len(ids)
    for record in index.records:
        assert this[record.id]["content_length"] == (root / record.path).stat().st_size
