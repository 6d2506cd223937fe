"""The archive index: scanning, persistence, and lookups checked against brute force."""

from __future__ import annotations

import gzip
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from cutout.index import ArchiveIndex
from cutout.scan import ImageRecord, record_for
from cutout.sky import Field, Intersect
from tests.cutout.brute import robust_relations

MODES = list(Intersect)


def tan_wcs(ra: float, dec: float, scale_arcsec: float, shape: tuple[int, int], rotation: float = 0.0) -> WCS:
    """A TAN WCS centred on (ra, dec)."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(shape[1] + 1) / 2, (shape[0] + 1) / 2]
    s, t = scale_arcsec / 3600, np.radians(rotation)
    w.wcs.cd = [[-s * np.cos(t), -s * np.sin(t)], [-s * np.sin(t), s * np.cos(t)]]
    w.wcs.set()
    return w


def synthetic_index(tmp_path: Path) -> tuple[ArchiveIndex, dict[str, tuple[WCS, tuple[int, int]]]]:
    """Images around the north pole, straddling RA 0 on the equator and at Dec +60."""
    images = []
    for k, ra in enumerate(np.arange(0, 360, 45.0)):
        images.append((tan_wcs(ra, 89.6, 3.0, (600, 600), rotation=7 * k), (600, 600)))
    images.append((tan_wcs(123.0, 90.0, 2.0, (700, 500), rotation=20), (700, 500)))
    for dec in (0.0, 60.0, -45.0):
        for ra in (359.8, 0.0, 0.15):
            images.append((tan_wcs(ra, dec, 1.5, (400, 600), rotation=33), (400, 600)))
    records, truth = [], {}
    for i, (w, shape) in enumerate(images):
        rec = record_for(w, shape, f"synthetic/img{i:03d}.fits", 0, collection="SYN", band="x")
        records.append(rec)
        truth[rec.id] = (w, shape)
    return ArchiveIndex(tmp_path, records), truth


def demo_truth(index: ArchiveIndex) -> dict[str, tuple[WCS, tuple[int, int]]]:
    """Each demo image's WCS read straight from its FITS header (not from the index)."""
    truth = {}
    for rec in index.records:
        header = fits.getheader(index.path_of(rec), rec.hdu)
        truth[rec.id] = (WCS(header), (header["NAXIS2"], header["NAXIS1"]))
    return truth


def random_fields(rng: np.random.Generator, n: int, ra0: float, dec0: float, spread: float,
                  sizes: tuple[float, float] = (0.003, 0.6)) -> list[Field]:
    """Fields around (ra0, dec0), sizes log-uniform in ``sizes`` (degrees), some not square."""
    fields = []
    lo, hi = np.log(sizes[0]), np.log(sizes[1])
    for _ in range(n):
        dec = float(np.clip(dec0 + rng.uniform(-spread, spread), -90, 90))
        ra = float((ra0 + rng.uniform(-spread, spread) / max(np.cos(np.radians(dec)), 0.05)) % 360)
        w = float(np.exp(rng.uniform(lo, hi)))
        h = w if rng.uniform() < 0.6 else float(np.exp(rng.uniform(lo, hi)))
        fields.append(Field(ra, dec, w, h))
    if ra0 == 0.0 or dec0 >= 89:
        fields.append(Field(0.0, dec0, 0.2, 0.1))
    return fields


def compare(index: ArchiveIndex, truth: dict, fields: list[Field]) -> tuple[dict[str, int], int]:
    """Assert the index agrees with brute force.

    Returns the number of decided matches per mode, and of borderline cases skipped.
    """
    centres = SkyCoord([w.wcs_pix2world([[(s[1] - 1) / 2, (s[0] - 1) / 2]], 0)[0] for w, s in truth.values()],
                       unit="deg")
    radii = np.array([np.max(SkyCoord(w.calc_footprint(axes=(s[1], s[0])), unit="deg").separation(centre).deg)
                      for (w, s), centre in zip(truth.values(), centres, strict=True)])
    positives = dict.fromkeys((m.value for m in MODES), 0)
    decided = borderline = 0
    for field in fields:
        found = {mode: {r.id for r in index.lookup(field, mode)} for mode in MODES}
        diagonal = float(np.hypot(field.width, field.height)) / 2 * 1.1
        far = SkyCoord(field.ra, field.dec, unit="deg").separation(centres).deg > diagonal + radii + 0.01
        for (image_id, (w, shape)), too_far in zip(truth.items(), far, strict=True):
            if too_far:
                expected = dict.fromkeys(("OVERLAPS", "COVERS", "ENCLOSED", "CENTER"), False)
            else:
                expected = robust_relations((field.ra, field.dec, field.width, field.height), w, shape)
            for mode in MODES:
                if expected[mode.value] is None:
                    borderline += 1
                    continue
                decided += 1
                positives[mode.value] += expected[mode.value]
                assert (image_id in found[mode]) == expected[mode.value], (field, image_id, mode)
    assert borderline < 0.02 * decided
    return positives, borderline


def test_lookup_agrees_with_brute_force_on_demo_archive(demo_index: ArchiveIndex) -> None:
    rng = np.random.default_rng(7)
    fields = (random_fields(rng, 150, 150.1, 2.2, 0.8) + random_fields(rng, 50, 0.05, -30.0, 0.5)
              + random_fields(rng, 40, 150.1, 2.2, 0.5, sizes=(0.3, 1.5)))
    positives, _ = compare(demo_index, demo_truth(demo_index), fields)
    assert min(positives.values()) >= 20, positives  # every mode is exercised by matches


def test_lookup_agrees_with_brute_force_near_pole_and_ra0(tmp_path: Path) -> None:
    index, truth = synthetic_index(tmp_path)
    rng = np.random.default_rng(11)
    fields = (random_fields(rng, 120, 0.0, 89.7, 0.3) + random_fields(rng, 40, 0.0, 0.0, 0.3)
              + random_fields(rng, 40, 0.0, 60.0, 0.4) + random_fields(rng, 40, 0.0, -45.0, 0.3))
    fields += random_fields(rng, 30, 0.0, 89.7, 0.3, sizes=(0.4, 1.5))
    fields += [Field(0.0, 90.0, 0.5, 0.5), Field(359.99, 90.0, 0.05, 0.05), Field(180.0, 89.95, 0.3, 0.02)]
    positives, _ = compare(index, truth, fields)
    assert min(positives.values()) >= 20, positives
    # a small field on the pole lies inside the image centred on it, whatever its RA
    assert any(r.id.startswith("img008") for r in index.lookup(Field(359.99, 90.0, 0.05, 0.05), Intersect.COVERS))


def test_lookup_filters_by_collection_and_band(demo_index: ArchiveIndex) -> None:
    field = Field(150.1, 2.2, 0.1, 0.1)
    everything = demo_index.lookup(field)
    assert {r.collection for r in everything} == {"DEMO-WIDE", "DEMO-DEEP"}
    wide_g = demo_index.lookup(field, collections=["DEMO-WIDE"], bands=["g"])
    assert wide_g and all(r.collection == "DEMO-WIDE" and r.band == "g" for r in wide_g)
    assert {r.id for r in wide_g} == {r.id for r in everything if r.collection == "DEMO-WIDE" and r.band == "g"}
    r_band = demo_index.lookup(field, bands=["r"])
    assert {r.collection for r in r_band} == {"DEMO-WIDE", "DEMO-DEEP"}
    assert demo_index.lookup(field, collections=["NOPE"]) == []
    assert demo_index.lookup(Field(10.0, 10.0, 0.1, 0.1)) == []


def test_records_describe_the_files(demo_index: ArchiveIndex) -> None:
    assert len(demo_index) == 55
    assert demo_index.collections == ["DEMO-DEEP", "DEMO-POLE", "DEMO-WIDE"]
    assert demo_index.bands == ["g", "i", "r"]
    for rec in demo_index.records:
        assert re.fullmatch(r"[A-Za-z0-9._-]+", rec.id)
        path = demo_index.path_of(rec)
        assert rec.filesize == path.stat().st_size
        with fits.open(path) as hdul:
            hdu = hdul[rec.hdu]
            assert rec.compressed == isinstance(hdu, fits.CompImageHDU)
            assert rec.shape == hdu.data.shape
            assert rec.mjd == pytest.approx(hdu.header["MJD-OBS"])
            assert rec.band == hdu.header["FILTER"] and rec.collection == hdu.header["SURVEY"]
            expected = WCS(hdu.header).calc_footprint()
        corners = rec.wcs().calc_footprint(axes=rec.shape[::-1])
        np.testing.assert_allclose(corners, expected, atol=1e-9)
        assert rec.scale == pytest.approx(1.0 if rec.collection != "DEMO-DEEP" else 0.5)


def test_ids_are_stable_and_the_index_is_relocatable(demo_archive: Path, demo_index: ArchiveIndex,
                                                      tmp_path: Path) -> None:
    copy = tmp_path / "moved"
    shutil.copytree(demo_archive / "DEMO-POLE", copy / "DEMO-POLE")
    shutil.copytree(demo_archive / "DEMO-DEEP", copy / "DEMO-DEEP")
    rebuilt, skipped = ArchiveIndex.build(copy)
    assert not skipped
    original = {r.path: r.id for r in demo_index.records}
    assert all(original[r.path] == r.id for r in rebuilt.records)
    rebuilt.save()
    moved_again = tmp_path / "elsewhere"
    shutil.move(copy, moved_again)
    loaded = ArchiveIndex.load(moved_again)
    assert loaded.root == moved_again.resolve()
    assert [r.id for r in loaded.records] == [r.id for r in rebuilt.records]
    field = Field(0.0, -30.0, 0.2, 0.2)
    assert [r.id for r in loaded.lookup(field)] == [r.id for r in rebuilt.lookup(field)]
    assert loaded.path_of(loaded.records[0]).is_file()


def test_save_and_load_round_trip(demo_archive: Path, demo_index: ArchiveIndex, tmp_path: Path) -> None:
    target = demo_index.save(tmp_path / "copy.sqlite")
    loaded = ArchiveIndex.load(target)
    assert loaded.root == demo_archive.resolve()
    for a, b in zip(loaded.records, demo_index.records, strict=True):
        assert (a.id, a.path, a.hdu, a.shape, a.mjd, a.wcs_header) == (b.id, b.path, b.hdu, b.shape, b.mjd,
                                                                        b.wcs_header)
        np.testing.assert_array_equal(a.footprint, b.footprint)
    rng = np.random.default_rng(3)
    for field in random_fields(rng, 30, 150.1, 2.2, 0.6):
        for mode in MODES:
            assert [r.id for r in loaded.lookup(field, mode)] == [r.id for r in demo_index.lookup(field, mode)]


def test_load_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="siasync archive index"):
        ArchiveIndex.load(tmp_path)


def test_unindexable_files_are_skipped_with_one_warning_each(tmp_path: Path, caplog) -> None:
    good = tan_wcs(10.0, 20.0, 1.0, (50, 60))
    fits.PrimaryHDU(np.zeros((50, 60), np.float32), good.to_header()).writeto(tmp_path / "good.fits")
    fits.PrimaryHDU(np.zeros((5, 5), np.float32)).writeto(tmp_path / "nowcs.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column("a", "E", array=np.ones(3))])]).writeto(tmp_path / "table.fits")
    (tmp_path / "notes.fits").write_text("this is not FITS at all\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "truncated.fits").write_bytes((tmp_path / "good.fits").read_bytes()[:1000])
    (tmp_path / "sub" / "zipped.fits.gz").write_bytes(gzip.compress((tmp_path / "good.fits").read_bytes()))
    (tmp_path / "sub" / "notes.txt.gz").write_bytes(gzip.compress(b"plain text"))
    (tmp_path / "README.txt").write_text("not looked at")
    with caplog.at_level(logging.WARNING, logger="cutout.scan"):
        index, skipped = ArchiveIndex.build(tmp_path)
    assert [r.path for r in index.records] == ["good.fits"]
    assert sorted(s.path for s in skipped) == ["notes.fits", "nowcs.fits", "sub/notes.txt.gz", "sub/truncated.fits",
                                               "sub/zipped.fits.gz", "table.fits"]
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 6
    assert any("notes.fits: not a FITS file" in m for m in warned)
    assert any("zipped.fits.gz: gzip-compressed FITS" in m for m in warned)
    assert any("notes.txt.gz: a gzip file that does not hold FITS" in m for m in warned)
    assert any("truncated.fits: truncated" in m for m in warned)
    assert {s.path: s.cause for s in skipped}["sub/truncated.fits"] == "truncated"
    assert any("nowcs.fits: no 2-D image HDU with a celestial WCS" in m for m in warned)


def test_every_image_hdu_of_a_multi_extension_file_is_indexed(tmp_path: Path) -> None:
    hdus = [fits.PrimaryHDU()]
    for k in range(3):
        hdus.append(fits.ImageHDU(np.zeros((40, 40), np.float32),
                                  tan_wcs(50.0 + k * 0.01, -10.0, 1.0, (40, 40)).to_header(), name=f"CCD{k}"))
    fits.HDUList(hdus).writeto(tmp_path / "mosaic.fits")
    index, _ = ArchiveIndex.build(tmp_path)
    assert [r.hdu for r in index.records] == [1, 2, 3]
    assert len({r.id for r in index.records}) == 3
    assert isinstance(index.records[0], ImageRecord)
