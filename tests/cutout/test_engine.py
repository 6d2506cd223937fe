"""Cutouts checked against the parent's own pixels and WCS, read independently with astropy."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import astropy
import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from cutout.engine import ParentCache, ParentImage, cut, cutout, cutout_header
from cutout.errors import ArchiveError, NoOverlapError, ParentChangedError
from cutout.index import ArchiveIndex
from cutout.sky import Field
from tests.cutout.brute import box_wcs

ASTROPY = Path(astropy.__file__).parent
M13 = ASTROPY / "io/fits/hdu/compressed/tests/data/m13.fits"
M13_RICE = ASTROPY / "io/fits/hdu/compressed/tests/data/m13_rice.fits"
SIP = ASTROPY / "nddata/tests/data/sip-wcs.fits"
CARRIED = ("FILTER", "MJD-OBS", "DATE-OBS", "BUNIT", "TELESCOP", "INSTRUME", "EXPTIME", "SURVEY", "RADESYS")


class Parents:
    """Parent pixels and WCS as astropy reads them (whole file, physical values), cached."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int], tuple[np.ndarray, fits.Header]] = {}

    def __call__(self, path: Path, hdu: int) -> tuple[np.ndarray, fits.Header]:
        key = (os.fspath(path), hdu)
        if key not in self._cache:
            with fits.open(path) as hdul:
                self._cache[key] = (np.array(hdul[hdu].data), hdul[hdu].header.copy())
        return self._cache[key]


@pytest.fixture(scope="module")
def parents() -> Parents:
    return Parents()


def check_cutout(data: bytes, parent_path: Path, hdu: int, field: Field, parents: Parents,
                 parent_id: str = "") -> fits.PrimaryHDU:
    """Every property of a cutout that the issue promises, against independent truth."""
    with fits.open(io.BytesIO(data)) as hdul:
        hdul.verify("exception")
        out = hdul[0]
        out_data, header = np.array(out.data), out.header.copy()
    parent, parent_header = parents(parent_path, hdu)
    ny, nx = parent.shape
    h, w = out_data.shape
    assert header["LTM1_1"] == 1 and header["LTM2_2"] == 1
    x0, y0 = -header["LTV1"], -header["LTV2"]
    assert 0 <= x0 and x0 + w <= nx and 0 <= y0 and y0 + h <= ny
    # every pixel: cutout[j, i] == parent[j - LTV2, i - LTV1]
    np.testing.assert_array_equal(out_data, parent[y0:y0 + h, x0:x0 + w])
    # the WCS gives the same sky position as the parent's at the same parent pixel
    rng = np.random.default_rng(0)
    i = np.concatenate([[0, w - 1, 0, w - 1, (w - 1) / 2], rng.uniform(-0.5, w - 0.5, 40)])
    j = np.concatenate([[0, 0, h - 1, h - 1, (h - 1) / 2], rng.uniform(-0.5, h - 0.5, 40)])
    sky_cut = SkyCoord(*WCS(header).all_pix2world(i, j, 0), unit="deg")
    parent_wcs = WCS(parent_header, fobj=fits.open(parent_path) if parent_header.get("A_ORDER") else None)
    sky_parent = SkyCoord(*parent_wcs.all_pix2world(i + x0, j + y0, 0), unit="deg")
    assert np.max(sky_cut.separation(sky_parent).arcsec) < 1e-5
    # the smallest rectangle holding the box's part on the image
    bw, bshape = box_wcs(field.ra, field.dec, field.width, field.height)
    gx, gy = np.meshgrid(np.linspace(-0.5, bshape[1] - 0.5, 121), np.linspace(-0.5, bshape[0] - 0.5, 121))
    box_sky = SkyCoord(*bw.all_pix2world(gx.ravel(), gy.ravel(), 0), unit="deg", frame="icrs")
    px, py = parent_wcs.world_to_pixel(box_sky)  # converts ICRS to the parent's frame (FK5 for m13)
    on = (px >= -0.5) & (px <= nx - 0.5) & (py >= -0.5) & (py <= ny - 0.5)
    assert on.any()
    ix, iy = np.floor(px[on] + 0.5).clip(0, nx - 1), np.floor(py[on] + 0.5).clip(0, ny - 1)
    assert x0 <= ix.min() and ix.max() <= x0 + w - 1 and y0 <= iy.min() and iy.max() <= y0 + h - 1
    # no wider than the box: each edge within a pixel of the samples, or on the image's edge,
    # where the box was clipped (the samples are sparser than a pixel there)
    assert x0 >= ix.min() - 1 or x0 == 0
    assert x0 + w - 1 <= ix.max() + 1 or x0 + w == nx
    assert y0 >= iy.min() - 1 or y0 == 0
    assert y0 + h - 1 <= iy.max() + 1 or y0 + h == ny
    # provenance and carried keywords
    assert header["ORIGHDU"] == hdu
    if parent_id:
        assert header["PARENTID"] == parent_id
    assert (header["REQ_RA"], header["REQ_DEC"], header["REQ_W"], header["REQ_H"]) == (
        field.ra, field.dec, field.width, field.height)
    for key in CARRIED:
        if key in parent_header:
            assert header[key] == parent_header[key]
    return out


def test_random_fields_on_the_demo_archive(demo_index: ArchiveIndex, parents: Parents) -> None:
    rng = np.random.default_rng(2026)
    cache = ParentCache(maxsize=8)
    fields = [Field(150.1 + rng.uniform(-0.6, 0.6), 2.2 + rng.uniform(-0.6, 0.6),
                    rng.uniform(0.005, 0.15), rng.uniform(0.005, 0.15)) for _ in range(30)]
    fields += [Field((0.05 + rng.uniform(-0.35, 0.35)) % 360, -30 + rng.uniform(-0.3, 0.3),
                     rng.uniform(0.01, 0.2), rng.uniform(0.01, 0.2)) for _ in range(10)]
    checked = set()
    for field in fields:
        for rec in demo_index.lookup(field):
            parent = cache.get(demo_index.path_of(rec), rec.hdu, rec.id, rec.path)
            result = cut(parent, field)
            out = check_cutout(result.to_fits(), demo_index.path_of(rec), rec.hdu, field, parents, rec.id)
            assert out.header["ORIGFILE"] == rec.path
            np.testing.assert_array_equal(result.data, out.data)
            checked.add(rec.collection)
    assert checked == {"DEMO-WIDE", "DEMO-DEEP", "DEMO-POLE"}
    assert len(cache) == 8


def test_compressed_parent_reads_only_the_section(demo_index: ArchiveIndex, parents: Parents) -> None:
    rec = next(r for r in demo_index.records if r.compressed)
    field = Field(150.1, 2.2, 0.02, 0.03)
    with ParentImage(demo_index.path_of(rec), rec.hdu, rec.id, rec.path) as parent:
        assert parent.compressed
        check_cutout(cut(parent, field).to_fits(), demo_index.path_of(rec), rec.hdu, field, parents)


def test_field_across_ra_zero(demo_index: ArchiveIndex, parents: Parents) -> None:
    field = Field(0.0, -30.0, 0.12, 0.12)
    records = demo_index.lookup(field, collections=["DEMO-POLE"])
    centres = [r.wcs().wcs.crval[0] for r in records]
    assert any(c > 359 for c in centres) and any(c < 1 for c in centres)
    for rec in records:
        with ParentImage(demo_index.path_of(rec), rec.hdu) as parent:
            check_cutout(cut(parent, field).to_fits(), demo_index.path_of(rec), rec.hdu, field, parents)


def test_partial_overlap_is_clipped_to_the_image(demo_index: ArchiveIndex, parents: Parents) -> None:
    rec = next(r for r in demo_index.records if r.collection == "DEMO-WIDE")
    ra, dec = rec.wcs().all_pix2world([[-0.5, -0.5]], 0)[0]  # a corner of the image
    field = Field(float(ra), float(dec), 0.05, 0.05)
    with ParentImage(demo_index.path_of(rec), rec.hdu) as parent:
        result = cut(parent, field)
        out = check_cutout(result.to_fits(), demo_index.path_of(rec), rec.hdu, field, parents)
    assert (result.x0, result.y0) == (0, 0)
    assert 80 < out.data.shape[0] < 100 and 80 < out.data.shape[1] < 100  # a quarter of 180 px


def test_field_larger_than_the_image_gives_the_whole_image(demo_index: ArchiveIndex, parents: Parents) -> None:
    rec = next(r for r in demo_index.records if r.collection == "DEMO-POLE")
    centre = rec.wcs().all_pix2world([[511.5, 511.5]], 0)[0]
    field = Field(float(centre[0]), float(centre[1]), 1.0, 1.0)
    with ParentImage(demo_index.path_of(rec), rec.hdu) as parent:
        out = check_cutout(cut(parent, field).to_fits(), demo_index.path_of(rec), rec.hdu, field, parents)
    assert out.data.shape == (1024, 1024)


def test_no_overlap_raises(demo_index: ArchiveIndex) -> None:
    rec = next(r for r in demo_index.records if r.collection == "DEMO-WIDE")
    ra, dec = rec.wcs().all_pix2world([[-40.0, 500.0]], 0)[0]  # 40 px beyond the left edge
    with ParentImage(demo_index.path_of(rec), rec.hdu) as parent:
        with pytest.raises(NoOverlapError):
            cut(parent, Field(float(ra), float(dec), 20 / 3600, 20 / 3600))
        with pytest.raises(ValueError):  # NoOverlapError is a ValueError, as in astropy
            cut(parent, Field(200.0, -60.0, 0.1, 0.1))
        with pytest.raises(NoOverlapError):
            cut(parent, Field((rec.wcs().wcs.crval[0] + 180) % 360, -rec.wcs().wcs.crval[1], 1.0, 1.0))


def test_sip_parent(parents: Parents) -> None:
    if not SIP.exists():
        pytest.skip("astropy's sip-wcs.fits is not installed")
    header = fits.getheader(SIP)
    wcs = WCS(header)
    assert wcs.sip is not None
    for px, py, size in ((50, 25, 0.004), (5, 45, 0.01), (99, 0, 0.006), (50, 25, 0.2)):
        ra, dec = wcs.all_pix2world([[px, py]], 0)[0]
        field = Field(float(ra), float(dec), size, size * 0.7)
        with ParentImage(SIP, 0) as parent:
            out = check_cutout(cut(parent, field).to_fits(), SIP, 0, field, parents)
        assert out.header["CTYPE1"].endswith("-SIP") and out.header["A_ORDER"] == header["A_ORDER"]
        assert out.data.dtype.kind == "u" or out.header["BZERO"] == 32768  # scaled data kept exact


@pytest.mark.parametrize("path,hdu", [(M13, 0), (M13_RICE, 1)])
def test_real_dss_image_shipped_with_astropy(path: Path, hdu: int, parents: Parents) -> None:
    # m13 has no RADESYS and EQUINOX 2000: an FK5 frame, converted from ICRS per cutout
    for ra, dec, size in ((250.4226, 36.4602, 0.02), (250.37, 36.43, 0.03), (250.46, 36.50, 0.05)):
        field = Field(ra, dec, size, size)
        with ParentImage(path, hdu, origfile=path.name) as parent:
            result = cut(parent, field)
        check_cutout(result.to_fits(), path, hdu, field, parents)
    plain, rice = (cut(ParentImage(p, h), Field(250.4226, 36.4602, 0.02, 0.02)).data
                   for p, h in ((M13, 0), (M13_RICE, 1)))
    np.testing.assert_array_equal(plain, rice)  # RICE of integers is lossless


def test_field_near_the_pole(tmp_path: Path, parents: Parents) -> None:
    rng = np.random.default_rng(5)
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [30.0, 89.9]
    w.wcs.crpix = [200.5, 100.5]  # puts the pole near pixel (146, 271)
    w.wcs.cd = [[-2 / 3600 * np.cos(0.3), -2 / 3600 * np.sin(0.3)], [-2 / 3600 * np.sin(0.3), 2 / 3600 * np.cos(0.3)]]
    path = tmp_path / "pole.fits"
    fits.PrimaryHDU(rng.normal(size=(300, 400)).astype(np.float32), w.to_header()).writeto(path)
    w.pixel_shape = (400, 300)
    assert w.footprint_contains(SkyCoord(0.0, 90.0, unit="deg"))  # the pole is on the image
    (ra1, dec1), (ra2, dec2) = w.all_pix2world([[350.0, 250.0], [20.0, 280.0]], 0)
    for field in (Field(0.0, 90.0, 0.05, 0.05), Field(123.0, 90.0, 0.5, 0.01),
                  Field(float(ra1), float(dec1), 0.08, 0.02), Field(float(ra2), float(dec2), 0.1, 0.1)):
        with ParentImage(path, 0) as parent:
            check_cutout(cut(parent, field).to_fits(), path, 0, field, parents)


def test_skycoord_and_quantity_at_the_boundary(demo_index: ArchiveIndex) -> None:
    rec = next(r for r in demo_index.records if r.collection == "DEMO-WIDE")
    centre = SkyCoord(*rec.wcs().all_pix2world([[300.0, 700.0]], 0)[0], unit="deg")
    with ParentImage(demo_index.path_of(rec), rec.hdu) as parent:
        by_field = cut(parent, Field(centre.ra.deg, centre.dec.deg, 2 / 60, 1 / 60))
        by_sky = cutout(parent, centre.galactic, [2, 1] * u.arcmin)
    np.testing.assert_array_equal(by_sky.data, by_field.data)
    assert (by_sky.x0, by_sky.y0) == (by_field.x0, by_field.y0)
    assert by_sky.wcs.has_celestial and by_sky.header["NAXIS1"] == by_sky.shape[1]


def test_parent_cache_is_bounded_and_reuses_open_parents(demo_index: ArchiveIndex) -> None:
    recs = [r for r in demo_index.records if r.collection == "DEMO-WIDE"][:3]
    cache = ParentCache(maxsize=2)
    first = cache.get(demo_index.path_of(recs[0]), recs[0].hdu)
    assert cache.get(demo_index.path_of(recs[0]), recs[0].hdu) is first
    cache.get(demo_index.path_of(recs[1]), recs[1].hdu)
    cache.get(demo_index.path_of(recs[2]), recs[2].hdu)
    assert len(cache) == 2
    with pytest.raises(TypeError):  # evicted parents are closed: no descriptor left to read
        first.read(0, 1, 0, 1)
    assert cache.get(demo_index.path_of(recs[0]), recs[0].hdu) is not first
    cache.clear()
    assert len(cache) == 0


def test_bad_parents_raise_archive_errors(tmp_path: Path) -> None:
    path = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column("a", "E", array=np.ones(3))])]).writeto(path)
    with pytest.raises(ArchiveError, match="not a 2-D image"):
        ParentImage(path, 1)
    with pytest.raises(ArchiveError, match="no image HDU 5"):
        ParentImage(path, 5)


def test_cutout_header_is_the_header_cut_writes(demo_index: ArchiveIndex) -> None:
    wide = next(r for r in demo_index.records if r.collection == "DEMO-WIDE")
    deep = next(r for r in demo_index.records if r.compressed)
    corner = wide.wcs().all_pix2world([[-0.5, -0.5]], 0)[0]  # a field clipped to the image
    cases = [(demo_index.path_of(wide), wide.hdu, Field(float(corner[0]), float(corner[1]), 0.05, 0.05)),
             (demo_index.path_of(deep), deep.hdu, Field(150.1, 2.2, 0.03, 0.02)),
             (M13, 0, Field(250.4226, 36.4602, 0.02, 0.02)), (M13_RICE, 1, Field(250.4226, 36.4602, 0.02, 0.02))]
    if SIP.exists():
        ra, dec = WCS(fits.getheader(SIP)).all_pix2world([[50, 25]], 0)[0]
        cases.append((SIP, 0, Field(float(ra), float(dec), 0.004, 0.003)))  # BZERO 32768: uint16
    for path, hdu, field in cases:
        with ParentImage(path, hdu, "an-id", "a/path.fits") as parent:
            head, piece = cutout_header(parent, field), cut(parent, field)
        assert head.cards == piece.cards, path
        assert head.shape == piece.shape and (head.y0, head.x0) == (piece.y0, piece.x0)
        assert head.filesize == len(piece.to_fits())
        assert head.header == piece.header and head.bitpix == piece.header["BITPIX"]


def test_cutout_header_reads_no_pixels(demo_index: ArchiveIndex) -> None:
    rec = next(r for r in demo_index.records if r.collection == "DEMO-WIDE")
    field = Field(*rec.wcs().all_pix2world([[300.0, 700.0]], 0)[0], 0.02, 0.02)
    with ParentImage(demo_index.path_of(rec), rec.hdu) as parent:
        expected = cut(parent, field).cards
    with ParentImage(demo_index.path_of(rec), rec.hdu) as parent:
        parent.read = None  # any pixel read would fail
        assert cutout_header(parent, field).cards == expected
    with ParentImage(demo_index.path_of(rec), rec.hdu) as parent, pytest.raises(NoOverlapError):
        cutout_header(parent, Field(200.0, -60.0, 0.1, 0.1))


def test_a_parent_changed_since_it_was_indexed_is_refused_until_reindexed(demo_index: ArchiveIndex,
                                                                           tmp_path: Path) -> None:
    """Rewritten in place (same size, new pixels) or grown, a parent is refused, open or cached, naming what changed;
    once indexed again its new pixels (as astropy reads them) are served."""
    source = demo_index.lookup(Field(150.1, 2.2, 0.01, 0.01))[0]
    (tmp_path / "a").mkdir()
    shutil.copy2(demo_index.path_of(source), tmp_path / "a" / "p.fits")
    index, _ = ArchiveIndex.build(tmp_path, workers=1)
    record = index.records[0]
    path, field = index.path_of(record), Field(150.1, 2.2, 0.01, 0.01)
    cache = ParentCache(maxsize=2)
    before = cut(cache.get(path, record.hdu, record.id, record.path, record.indexed), field).data
    with fits.open(path, mode="update") as hdul:  # the same bytes long, other pixels
        hdul[record.hdu].data += 1
    os.utime(path, ns=(record.mtime_ns + 10**9, record.mtime_ns + 10**9))
    with pytest.raises(ParentChangedError, match=r"^a/p\.fits changed since it was indexed \(its modification time "
                                                 r"from .*Z to .*Z\); it is not served until the archive is indexed "
                                                 r"again \(siasync archive index\)$"):
        cache.get(path, record.hdu, record.id, record.path, record.indexed)  # the cached one
    assert len(cache) == 0
    with pytest.raises(ParentChangedError, match="modification time"):
        ParentImage(path, record.hdu, record.id, record.path, record.indexed)
    with open(path, "ab") as f:
        f.write(b"\0" * 2880)
    with pytest.raises(ParentChangedError, match=rf"its size from {record.filesize} to {record.filesize + 2880} bytes"
                                                 r" and its modification time"):
        cache.get(path, record.hdu, record.id, record.path, record.indexed)

    again = ArchiveIndex.build(tmp_path, previous=index, workers=1)[0].records[0]
    piece = cut(cache.get(path, again.hdu, again.id, again.path, again.indexed), field)
    after = piece.data
    with fits.open(path) as hdul:
        pixels = np.asarray(hdul[again.hdu].data, dtype=np.float64)
    np.testing.assert_array_equal(after, pixels[piece.y0:piece.y0 + after.shape[0], piece.x0:piece.x0 + after.shape[1]])
    assert not np.array_equal(after, before)  # (a tile-compressed parent is quantised again: not exactly +1)
