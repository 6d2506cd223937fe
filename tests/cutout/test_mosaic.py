"""Mosaics and stacks on the demo archive, checked against its catalogue and the parent pixels."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from astropy.table import Table
from astropy.wcs import WCS
from PIL import Image
from reproject import reproject_interp

from cutout import mosaic
from cutout.engine import ParentCache
from cutout.errors import NoOverlapError
from cutout.index import ArchiveIndex
from cutout.mosaic import GridSpec, Mosaic, coadd, colour_preview, mosaic_fits, read_input, stack_fits
from cutout.sky import Field

APERTURE = 8.0  # pixels
ANNULUS = (12.0, 18.0)


@pytest.fixture(scope="module")
def catalogue(demo_archive: Path) -> Table:
    return Table.read(demo_archive / "catalogue.ecsv")


@pytest.fixture(scope="module")
def cache() -> ParentCache:
    cache = ParentCache()
    yield cache
    cache.clear()


def mosaic_of(index: ArchiveIndex, cache: ParentCache, field: Field, records: list, spec: GridSpec = GridSpec(),
              combine: str = "mean", background: bool = False) -> Mosaic:
    grid = spec.resolve(field, min(r.scale for r in records) / 3600)
    inputs = [read_input(cache.get(index.path_of(r), r.hdu, r.id, r.path), grid, r.band, r.mjd) for r in records]
    return coadd(inputs, grid, combine, background)


def isolated_stars(catalogue: Table, wcs: WCS, shape: tuple[int, int], mag: str, brighter: float,
                   border: float = 25) -> Table:
    """Stars brighter than ``brighter`` with no other source within 12 arcsec, well inside the image."""
    sky = SkyCoord(catalogue["ra"], catalogue["dec"], unit="deg")
    _, sep, _ = sky.match_to_catalog_sky(sky, nthneighbor=2)
    x, y = wcs.world_to_pixel(sky)
    ny, nx = shape
    keep = ((catalogue["kind"] == "star") & (catalogue[mag] < brighter) & (sep.arcsec > 12)
            & (x > border) & (x < nx - border) & (y > border) & (y < ny - border))
    out = catalogue[keep]
    out["x"], out["y"] = x[keep], y[keep]
    return out


def centroid(data: np.ndarray, x: float, y: float, half: int = 3) -> tuple[float, float]:
    """First moment of the background-subtracted pixels in a box around the rounded position."""
    cx, cy = int(round(x)), int(round(y))
    box = data[cy - half:cy + half + 1, cx - half:cx + half + 1]
    ring = data[cy - 3 * half:cy + 3 * half + 1, cx - 3 * half:cx + 3 * half + 1]
    signal = box - np.nanmedian(ring)
    signal = np.clip(signal, 0, None)
    yy, xx = np.mgrid[cy - half:cy + half + 1, cx - half:cx + half + 1]
    return float((signal * xx).sum() / signal.sum()), float((signal * yy).sum() / signal.sum())


def aperture_flux(data: np.ndarray, x: float, y: float) -> float:
    """Flux in a circular aperture, less the annulus median per pixel."""
    half = int(ANNULUS[1]) + 1
    x, y = float(x), float(y)
    cx, cy = int(round(x)), int(round(y))
    data = data[cy - half:cy + half + 1, cx - half:cx + half + 1]
    yy, xx = np.mgrid[cy - half:cy + half + 1, cx - half:cx + half + 1]
    r = np.hypot(xx - x, yy - y)
    sky = np.nanmedian(data[(r >= ANNULUS[0]) & (r < ANNULUS[1])])
    inside = r < APERTURE
    return float(np.sum(data[inside] - sky))


def test_stack_bands_are_aligned_on_the_catalogue(demo_index: ArchiveIndex, cache: ParentCache,
                                                  catalogue: Table) -> None:
    # the field's centre is the corner of four DEMO-WIDE tiles: every band co-adds overlapping tiles
    field = Field(150.1, 2.2, 0.2, 0.2)
    records = [r for r in demo_index.lookup(field) if r.collection == "DEMO-WIDE"]
    grid = GridSpec().resolve(field, min(r.scale for r in records) / 3600)
    mosaics = []
    for band in ("g", "r", "i"):
        mine = [r for r in records if r.band == band]
        assert len(mine) == 4
        inputs = [read_input(cache.get(demo_index.path_of(r), r.hdu, r.id, r.path), grid, band) for r in mine]
        mosaics.append(coadd(inputs, grid))
    assert all(m.grid == grid for m in mosaics)
    wcs = grid.wcs()
    stars = isolated_stars(catalogue, wcs, grid.shape, "mag_r", 20.0)
    assert len(stars) >= 10
    offsets = []
    for m in mosaics:
        for star in stars:
            box = m.data[int(round(star["y"])) - 9:int(round(star["y"])) + 10,
                         int(round(star["x"])) - 9:int(round(star["x"])) + 10]
            if not np.isfinite(box).all():  # a dead column of an i-band tile
                continue
            cx, cy = centroid(m.data, star["x"], star["y"])
            offsets.append(np.hypot(cx - star["x"], cy - star["y"]))
    assert len(offsets) >= 3 * len(stars) - 4
    assert max(offsets) < 0.2, max(offsets)

    # the stack file: one extension per band, named by band, weights alongside, one WCS
    with fits.open(io.BytesIO(stack_fits(mosaics))) as hdul:
        assert [h.name for h in hdul[1:]] == ["G", "G_WEIGHT", "R", "R_WEIGHT", "I", "I_WEIGHT"]
        for band, m in zip("gri", mosaics, strict=True):
            np.testing.assert_array_equal(hdul[band].data, m.data)
            assert hdul[band].header["FILTER"] == band and hdul[band].header["NCOMBINE"] == 4
            assert hdul[band].header["BUNIT"] == "adu"
            assert WCS(hdul[band].header).wcs.compare(wcs.wcs)
    png = Image.open(io.BytesIO(colour_preview(mosaics)))
    assert png.mode == "RGB" and png.size == grid.naxis
    rgb = np.asarray(png)
    # stars are brighter than the sky in every channel
    star = stars[0]
    row, col = grid.shape[0] - 1 - int(round(star["y"])), int(round(star["x"]))
    assert (rgb[row, col] > np.median(rgb, axis=(0, 1))).all()


def test_deep_coadd_conserves_flux_and_beats_the_noise(demo_index: ArchiveIndex, cache: ParentCache,
                                                       catalogue: Table) -> None:
    field = Field(150.1, 2.2, 0.12, 0.12)
    epochs = sorted((r for r in demo_index.lookup(field) if r.collection == "DEMO-DEEP"), key=lambda r: r.mjd)
    assert len(epochs) == 3
    deep = mosaic_of(demo_index, cache, field, epochs)
    assert deep.inputs == tuple(r.id for r in epochs) and np.all(deep.weight == 3)
    stars = isolated_stars(catalogue, deep.grid.wcs(), deep.grid.shape, "mag_r", 20.0)
    assert len(stars) >= 5
    # the truth: aperture photometry on the first epoch's own pixels, at the catalogue position
    with fits.open(demo_index.path_of(epochs[0])) as hdul:
        parent, parent_wcs = hdul[epochs[0].hdu].data, WCS(hdul[epochs[0].hdu].header)
        ratios = []
        for star in stars:
            px, py = parent_wcs.world_to_pixel(SkyCoord(star["ra"], star["dec"], unit="deg"))
            ratios.append(aperture_flux(deep.data, star["x"], star["y"]) / aperture_flux(parent, px, py))
    assert abs(np.median(ratios) - 1) < 0.01, ratios

    singles = [mosaic_of(demo_index, cache, field, [r]) for r in epochs]
    noise = [sigma_clipped_stats(m.data, sigma=3)[2] for m in singles]
    gain = np.mean(noise) / sigma_clipped_stats(deep.data, sigma=3)[2]
    assert gain == pytest.approx(np.sqrt(3), rel=0.15)

    median = mosaic_of(demo_index, cache, field, epochs, combine="median")
    total = mosaic_of(demo_index, cache, field, epochs, combine="sum")
    assert median.combine == "median" and np.all(median.weight == 3)
    np.testing.assert_allclose(total.data, 3 * deep.data, rtol=1e-4)
    star = stars[0]
    assert aperture_flux(median.data, star["x"], star["y"]) == pytest.approx(
        aperture_flux(deep.data, star["x"], star["y"]), rel=0.03)


def test_background_matching_removes_offsets(demo_index: ArchiveIndex, cache: ParentCache) -> None:
    field = Field(150.1, 2.2, 0.04, 0.04)
    epochs = [r for r in demo_index.lookup(field) if r.collection == "DEMO-DEEP"]
    grid = GridSpec().resolve(field, 0.5 / 3600)
    inputs = [read_input(cache.get(demo_index.path_of(r), r.hdu, r.id, r.path), grid, "r") for r in epochs]
    shifted = [inputs[0].__class__(i.data + offset, i.wcs, i.parent_id, i.band, i.bunit, i.mjd)
               for i, offset in zip(inputs, (0.0, 40.0, -25.0), strict=True)]
    plain = coadd(inputs, grid)
    for combine in ("mean", "median"):
        matched = coadd(shifted, grid, combine, match_background=True)
        layers = [coadd([i], grid, combine, match_background=True).data for i in shifted]
        # matched inputs agree with each other: the co-add differs from the unshifted one by a constant
        difference = matched.data - coadd(inputs, grid, combine).data
        assert np.nanstd(difference) < 0.5, combine
        assert abs(np.nanmedian(difference) - 5.0) < 1.0  # the mean correction is zero: (0+40-25)/3
        assert len(layers) == 3
    unmatched = coadd(shifted, grid)
    assert np.nanmedian(unmatched.data - plain.data) == pytest.approx(5.0, abs=0.01)


def test_a_median_is_taken_strip_by_strip_within_its_memory_budget(demo_index: ArchiveIndex, cache: ParentCache,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The same median as reproject's layers over the whole grid (every input reprojected with reproject_interp, then
    numpy's nanmedian), in strips of a 1 MiB budget: its memory (tracemalloc) is the output's and a few strips'."""
    field = Field(150.1, 2.2, 0.1, 0.1)
    epochs = [r for r in demo_index.lookup(field) if r.collection == "DEMO-DEEP"]
    grid = GridSpec().resolve(field, 0.5 / 3600)
    inputs = [read_input(cache.get(demo_index.path_of(r), r.hdu, r.id, r.path), grid, "r") for r in epochs]
    layers = []
    for i in inputs:
        array, footprint = reproject_interp((i.data, i.wcs), grid.wcs(), shape_out=grid.shape, roundtrip_coords=False)
        layers.append(np.where(footprint > 0, array, np.nan))
    expected = np.nanmedian(layers, axis=0)
    budget = 2**20
    assert len(inputs) * grid.pixels * 8 > 10 * budget  # many strips

    def traced(**options: object) -> tuple[Mosaic, int]:
        tracemalloc.start()
        try:
            return coadd(inputs, grid, "median", **options), tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    monkeypatch.setattr(mosaic, "MEDIAN_BYTES", 2**30)
    whole, whole_peak = traced()  # one strip: the whole grid at once
    whole_matched = coadd(inputs, grid, "median", match_background=True)  # offsets from every pixel
    monkeypatch.setattr(mosaic, "MEDIAN_BYTES", budget)
    median, peak = traced()
    np.testing.assert_array_equal(median.data, expected.astype(np.float32))
    np.testing.assert_array_equal(median.weight, np.isfinite(layers).sum(axis=0))
    np.testing.assert_array_equal(whole.data, median.data)
    outputs = 2 * grid.pixels * 4  # the co-add and its weight map, float32
    assert peak < outputs + 12 * budget < whole_peak, (peak, outputs, whole_peak)

    matched = coadd(inputs, grid, "median", match_background=True)  # offsets from the grid sampled every k-th pixel
    np.testing.assert_allclose(matched.data, whole_matched.data, atol=0.05 * float(np.nanstd(whole_matched.data)))


def test_requested_grid_is_honoured(demo_index: ArchiveIndex, cache: ParentCache) -> None:
    field = Field(150.1, 2.2, 0.05, 0.05)
    records = [r for r in demo_index.lookup(field) if r.collection == "DEMO-DEEP"]
    spec = GridSpec(naxis=(300, 200), crval=(150.11, 2.19), cdelt=(-0.0002, 0.00025), rotang=35.0, proj="SIN",
                    crpix=(120.0, 90.5))
    m = mosaic_of(demo_index, cache, field, records, spec)
    with fits.open(io.BytesIO(mosaic_fits(m))) as hdul:
        header = hdul[0].header
        assert header["NAXIS1"] == 300 and header["NAXIS2"] == 200
        assert header["CTYPE1"] == "RA---SIN" and header["CTYPE2"] == "DEC--SIN"
        assert (header["CRVAL1"], header["CRVAL2"]) == (150.11, 2.19)
        assert (header["CDELT1"], header["CDELT2"]) == (-0.0002, 0.00025)
        assert (header["CRPIX1"], header["CRPIX2"]) == (120.0, 90.5)
        assert hdul["WEIGHT"].data.shape == (200, 300)
        wcs = WCS(header)
    # ROTANG: the +y axis points 35 degrees east of north
    here, up = wcs.pixel_to_world(150, 100), wcs.pixel_to_world(150, 110)
    assert here.position_angle(up).deg == pytest.approx(35.0, abs=1e-3)
    # scale along the axes, measured on the sky
    right = wcs.pixel_to_world(160, 100)
    assert here.separation(right).deg / 10 == pytest.approx(0.0002, rel=1e-3)
    assert here.separation(up).deg / 10 == pytest.approx(0.00025, rel=1e-3)

    galactic = GridSpec(frame="GAL", cdelt=(-0.0003, 0.0003)).resolve(field, 0.5 / 3600)
    centre = SkyCoord(150.1, 2.2, unit="deg").galactic
    assert galactic.wcs().wcs.ctype[0] == "GLON-TAN"
    assert galactic.crval == pytest.approx((centre.l.deg, centre.b.deg))
    assert galactic.naxis == (167, 167)
    fk5 = GridSpec(frame="FK5", equinox=1975.0).resolve(field, 0.5 / 3600)
    assert fk5.header()["EQUINOX"] == 1975.0 and fk5.header()["RADESYS"] == "FK5"
    back = SkyCoord(*fk5.crval, unit="deg", frame=fk5.frame_object()).icrs
    assert back.separation(SkyCoord(150.1, 2.2, unit="deg")).arcsec < 1e-6


def test_mosaic_across_ra_zero_is_seamless(demo_index: ArchiveIndex, cache: ParentCache, catalogue: Table) -> None:
    field = Field(0.0, -30.0, 0.25, 0.25)
    records = [r for r in demo_index.lookup(field) if r.collection == "DEMO-POLE"]
    assert len(records) == 4
    m = mosaic_of(demo_index, cache, field, records)
    assert np.isfinite(m.data).all() and (m.weight >= 1).all()
    stars = isolated_stars(catalogue, m.grid.wcs(), m.grid.shape, "mag_r", 20.0)
    west, east = stars[stars["ra"] > 180], stars[stars["ra"] < 180]
    assert len(west) >= 3 and len(east) >= 3
    for star in stars:
        cx, cy = centroid(m.data, star["x"], star["y"])
        assert np.hypot(cx - star["x"], cy - star["y"]) < 0.2, star["ra"]


def test_partial_coverage_has_the_right_footprint_and_weights(demo_index: ArchiveIndex, cache: ParentCache) -> None:
    # on the edge of DEMO-DEEP: the three rotated, dithered epochs each cover a different part
    field = Field(150.1 + 0.14, 2.2 + 0.05, 0.06, 0.06)
    epochs = [r for r in demo_index.lookup(field) if r.collection == "DEMO-DEEP"]
    assert len(epochs) >= 2
    m = mosaic_of(demo_index, cache, field, epochs)
    ny, nx = m.grid.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    sky = m.grid.wcs().pixel_to_world(xx, yy)
    expected = np.zeros((ny, nx))
    near_edge = np.zeros((ny, nx), dtype=bool)
    for r in epochs:
        w = WCS(fits.getheader(demo_index.path_of(r), r.hdu))
        px, py = w.world_to_pixel(sky)
        rny, rnx = r.shape
        expected += (px > -0.5) & (px < rnx - 0.5) & (py > -0.5) & (py < rny - 0.5)
        near_edge |= (np.minimum(np.abs(px + 0.5), np.abs(px - rnx + 0.5)) < 1.5) | \
                     (np.minimum(np.abs(py + 0.5), np.abs(py - rny + 0.5)) < 1.5)
    assert {0, 1, 2}.issubset(set(np.unique(expected)))
    interior = ~near_edge
    np.testing.assert_allclose(m.weight[interior], expected[interior], atol=1e-6)
    assert np.isnan(m.data[interior & (expected == 0)]).all()
    assert np.isfinite(m.data[interior & (expected > 0)]).all()


def test_a_grid_off_the_image_is_no_overlap(demo_index: ArchiveIndex, cache: ParentCache) -> None:
    record = next(r for r in demo_index.records if r.collection == "DEMO-DEEP")
    grid = GridSpec().resolve(Field(10.0, 10.0, 0.01, 0.01), 0.5 / 3600)
    with pytest.raises(NoOverlapError):
        read_input(cache.get(demo_index.path_of(record), record.hdu), grid, "r")
