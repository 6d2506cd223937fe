"""The demo survey: layout, survey-like headers, one sky in every image, determinism."""

from __future__ import annotations

from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from cutout.demo import load_settings, make_catalogue, plan_images, render_image
from cutout.index import ArchiveIndex
from tests.conftest import DEMO_SETTINGS

REQUIRED = ("CD1_1", "CD1_2", "CD2_1", "CD2_2", "RADESYS", "EQUINOX", "MJD-OBS", "DATE-OBS", "FILTER",
            "BUNIT", "TELESCOP", "INSTRUME", "EXPTIME", "SURVEY")


def images_of(index: ArchiveIndex, collection: str, band: str | None = None) -> list:
    return [r for r in index.records if r.collection == collection and band in (None, r.band)]


def test_layout_and_headers(demo_index: ArchiveIndex, demo_archive: Path) -> None:
    wide = images_of(demo_index, "DEMO-WIDE")
    assert len(wide) == 48 and {r.band for r in wide} == {"g", "r", "i"}
    assert all(r.shape == (1024, 1024) and r.scale == pytest.approx(1.0) for r in wide)
    deep = images_of(demo_index, "DEMO-DEEP")
    assert len(deep) == 3 and all(r.compressed and r.band == "r" for r in deep)
    assert all(r.scale == pytest.approx(0.5) for r in deep)
    assert len({r.mjd for r in deep}) == 3
    for rec in demo_index.records:
        header = fits.getheader(demo_index.path_of(rec), rec.hdu)
        for key in REQUIRED:
            assert key in header, (rec.path, key)
        assert header["RADESYS"] == "ICRS" and header["EQUINOX"] == 2000.0
        assert header["BITPIX"] == -32
    with fits.open(demo_index.path_of(deep[0]), disable_image_compression=True) as raw:
        assert raw[1].header["ZCMPTYPE"] == "RICE_1"
    total = sum(p.stat().st_size for p in demo_archive.rglob("*") if p.is_file())
    assert total < 400e6


def test_wide_covers_the_field_with_overlapping_tiles(demo_index: ArchiveIndex) -> None:
    tiles = [(WCS(fits.getheader(demo_index.path_of(r))), r) for r in images_of(demo_index, "DEMO-WIDE", "r")]
    centre = SkyCoord(150.1, 2.2, unit="deg")
    offsets = np.linspace(-0.4, 0.4, 17)
    for dx in offsets:
        for dy in offsets:
            point = centre.spherical_offsets_by(dx * u.deg, dy * u.deg)
            covered = False
            for w, _ in tiles:
                x, y = w.world_to_pixel(point)
                covered |= bool(-0.5 <= x <= 1023.5 and -0.5 <= y <= 1023.5)
            assert covered, (dx, dy)
    # neighbours share about 1 arcmin: tile t01 lies west (+x) of t00, and t00's right edge
    # falls about 60 px inside t01
    (w_a, rec_a), (w_b, rec_b) = tiles[0], tiles[1]
    assert (rec_a.path.endswith("t00.fits"), rec_b.path.endswith("t01.fits")) == (True, True)
    x_b, _ = w_b.world_to_pixel(w_a.pixel_to_world(1023.5, 511.5))
    assert 55 < x_b + 0.5 < 65


def test_deep_epochs_are_rotated_and_dithered(demo_index: ArchiveIndex) -> None:
    angles, centres = [], []
    for rec in images_of(demo_index, "DEMO-DEEP"):
        header = fits.getheader(demo_index.path_of(rec), rec.hdu)
        angles.append(round(float(np.degrees(np.arctan2(-header["CD2_1"], header["CD2_2"]))), 6))
        centres.append((header["CRVAL1"], header["CRVAL2"]))
    assert angles == [0.0, 15.0, 30.0]
    assert len(set(centres)) == 3


def test_pole_patch_straddles_ra_zero(demo_index: ArchiveIndex) -> None:
    ras = np.concatenate([r.footprint[:, 0] for r in images_of(demo_index, "DEMO-POLE")])
    assert np.any(ras > 359.7) and np.any(ras < 0.3) and not np.any((ras > 1) & (ras < 359))


def test_one_sky_every_bright_star_lands_on_its_catalogue_position(demo_index: ArchiveIndex,
                                                                   demo_archive: Path) -> None:
    """Centroids and fluxes of bright isolated stars agree with the catalogue in every image."""
    catalogue = Table.read(demo_archive / "catalogue.ecsv")
    coords = SkyCoord(catalogue["ra"], catalogue["dec"], unit="deg")
    stars = catalogue[(catalogue["kind"] == "star") & (catalogue["mag_r"] < 17.5) & (catalogue["dec"] > 0)]
    checked = 0
    for rec in images_of(demo_index, "DEMO-WIDE") + images_of(demo_index, "DEMO-DEEP"):
        with fits.open(demo_index.path_of(rec)) as hdul:
            data, header = hdul[rec.hdu].data.astype(float), hdul[rec.hdu].header
        w = WCS(header)
        sigma_px = header["SEEING"] / 2.3548 / rec.scale
        r_ap = int(np.ceil(4 * sigma_px))
        for star, (x, y) in zip(stars, w.all_world2pix(np.c_[stars["ra"], stars["dec"]], 0), strict=True):
            ix, iy = int(round(x)), int(round(y))
            if not (r_ap + 2 <= ix < rec.shape[1] - r_ap - 2 and r_ap + 2 <= iy < rec.shape[0] - r_ap - 2):
                continue
            here = SkyCoord(star["ra"], star["dec"], unit="deg")
            near = coords.separation(here).arcsec < 3 * r_ap * rec.scale
            if near.sum() > 1:  # not isolated
                continue
            stamp = data[iy - r_ap:iy + r_ap + 1, ix - r_ap:ix + r_ap + 1] - header["SKYLEVEL"]
            yy, xx = np.mgrid[-r_ap:r_ap + 1, -r_ap:r_ap + 1]
            inside = xx**2 + yy**2 <= r_ap**2
            flux = stamp[inside].sum()
            cx = (stamp * xx)[inside].sum() / flux + ix
            cy = (stamp * yy)[inside].sum() / flux + iy
            assert abs(cx - x) < 0.2 and abs(cy - y) < 0.2, (rec.path, star["id"], cx - x, cy - y)
            expected = 10 ** (-0.4 * (star[f"mag_{rec.band}"] - header["MAGZERO"]))
            assert flux == pytest.approx(expected, rel=0.05), (rec.path, star["id"])
            checked += 1
    assert checked >= 40


def test_background_noise_matches_the_header(demo_index: ArchiveIndex) -> None:
    rec = images_of(demo_index, "DEMO-WIDE", "r")[5]
    with fits.open(demo_index.path_of(rec)) as hdul:
        data, header = hdul[0].data, hdul[0].header
    expected = np.sqrt(header["SKYLEVEL"] / header["GAIN"] + (header["RDNOISE"] / header["GAIN"]) ** 2)
    values = data[np.isfinite(data)]
    mad_sigma = 1.4826 * np.median(np.abs(values - np.median(values)))
    assert mad_sigma == pytest.approx(expected, rel=0.1)
    assert np.median(values) == pytest.approx(header["SKYLEVEL"], abs=2 * expected)


def test_dead_columns_are_nan_in_band_i_only(demo_index: ArchiveIndex) -> None:
    for band, expect_nan in (("i", True), ("g", False)):
        rec = images_of(demo_index, "DEMO-WIDE", band)[0]
        data = fits.getdata(demo_index.path_of(rec))
        assert bool(np.isnan(data).any()) == expect_nan
        if expect_nan:
            assert np.isnan(data).all(axis=0).sum() == 1


def test_generation_is_deterministic(demo_archive: Path) -> None:
    settings = load_settings(DEMO_SETTINGS)
    first, second = make_catalogue(settings), make_catalogue(settings)
    assert np.array_equal(first["ra"], second["ra"]) and np.array_equal(first["mag_g"], second["mag_g"])
    spec = next(s for s in plan_images(settings) if s.survey["name"] == "DEMO-POLE")
    a, header = render_image(spec, first, settings["seed"])
    b, _ = render_image(spec, second, settings["seed"])
    np.testing.assert_array_equal(a, b)
    on_disk = fits.getdata(demo_archive / spec.relpath)
    np.testing.assert_array_equal(a, on_disk)
    assert header["SURVEY"] == "DEMO-POLE"
