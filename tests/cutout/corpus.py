"""A corpus of real-world FITS layouts: the sample files installed packages ship, and generated ones.

`build_corpus` writes an archive directory holding:

- **shipped**: sample images that astropy, reproject and pyvo install with their tests,
  located at run time from the installed packages (gzip-compressed ones are unpacked, as an
  operator would, since gzip files cannot be cut without reading them whole); and images
  made from the sample *headers* they ship (the 27 projections of Calabretta's 1904-66
  maps, TPV, SIP, ZPN...), with generated pixels;
- **generated**: every layout that archives hold in quantity and that broke the engine
  once: an all-sky CAR map, a ZEA hemisphere, fpack-style tile-compressed uint16 with
  BSCALE/BZERO/BLANK and DECam-like primary-header metadata (INHERIT = T), UKIDSS and HST
  ACS multi-extension files, radio images with degenerate FREQ/STOKES axes, every frame
  astropy knows, a 20x10 degree CAR strip, BLANK pixels, a parent with its own LTV/LTM,
  truncated and non-FITS files.

Nothing is downloaded and no binary is committed. Each file comes with a `Layout` saying
what indexing must make of it: the records it must give (with band, time, instrument and
frame), or the cause it must be skipped with.
"""

from __future__ import annotations

import gzip
import importlib.util
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS


@dataclass
class Layout:
    """What indexing must make of one corpus file."""

    path: str
    #: where it comes from: a package's sample file or header, or "generated"
    source: str
    #: HDUs that must be indexed (empty: the file must be skipped)
    hdus: tuple[int, ...] = ()
    #: the skip cause (`cutout.scan.CAUSES`) when it must be skipped; None: any cause
    cause: str | None = None
    #: expected metadata per indexed record (band, mjd, instrument, frame...), where the layout is about them
    meta: dict = field(default_factory=dict)
    #: whether the footprint must be wide (all-sky, hemisphere, curved edges)
    wide: bool | None = None
    #: a layout named in issue 15's list of files that broke the engine
    named: bool = False


def package_dir(package: str) -> Path | None:
    """The installed directory of a package, or None when it is not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def shipped(package: str, relpath: str) -> Path | None:
    """A sample file an installed package ships, or None."""
    base = package_dir(package)
    path = base / relpath if base else None
    return path if path is not None and path.is_file() else None


def read_header(path: Path) -> fits.Header:
    """A header from a ``.hdr`` sample: card images with or without newlines."""
    text = path.read_text(errors="replace")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        if "\n" in text.strip():
            return fits.Header.fromstring(text, sep="\n")
        return fits.Header.fromstring(text)


def pattern(shape: tuple[int, int], dtype: str = ">f4", seed: int = 0) -> np.ndarray:
    """Pixels that tell positions apart (a ramp plus noise), of any dtype."""
    ny, nx = shape
    y, x = np.mgrid[0:ny, 0:nx]
    rng = np.random.default_rng(seed)
    kind = np.dtype(dtype).kind
    if kind == "f":
        return (x + 1000.0 * y + rng.normal(0, 0.5, shape)).astype(dtype)
    info = np.iinfo(np.dtype(dtype))
    span = min(int(info.max) - int(info.min), 60000)
    return (int(info.min) + (x * 7 + y * 13 + rng.integers(0, 50, shape)) % span).astype(dtype)


def tan_header(ra: float, dec: float, shape: tuple[int, int], scale_arcsec: float = 1.0, rotation: float = 0.0,
               ctype: tuple[str, str] = ("RA---TAN", "DEC--TAN")) -> fits.Header:
    """A simple celestial WCS header."""
    w = WCS(naxis=2)
    w.wcs.ctype = list(ctype)
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(shape[1] + 1) / 2, (shape[0] + 1) / 2]
    s, t = scale_arcsec / 3600, np.radians(rotation)
    w.wcs.cd = [[-s * np.cos(t), s * np.sin(t)], [s * np.sin(t), s * np.cos(t)]]
    return w.to_header()


def _write(root: Path, rel: str, hdul: fits.HDUList) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        hdul.writeto(path, overwrite=True, output_verify="silentfix")


def _image_from_header(header: fits.Header, max_pixels: int = 600 * 600) -> fits.HDUList | None:
    """An image with generated pixels under a sample header (None when it describes no 2-D plane)."""
    header = header.copy()
    naxis = header.get("NAXIS", 0)
    if naxis < 2:
        return None
    shape = [header.get(f"NAXIS{k}", 1) for k in range(naxis, 0, -1)]  # numpy order
    if any(s > 1 for s in shape[:-2]) or shape[-1] * shape[-2] > max_pixels:
        return None
    for key in ("SIMPLE", "BITPIX", "EXTEND", "BSCALE", "BZERO", "BLANK", "XTENSION", "PCOUNT", "GCOUNT"):
        header.remove(key, ignore_missing=True, remove_all=True)
    for k in range(naxis + 1):
        header.remove(f"NAXIS{k}" if k else "NAXIS", ignore_missing=True)
    data = pattern(tuple(shape[-2:]), ">f4").reshape(shape)
    return fits.HDUList([fits.PrimaryHDU(data, header)])


#: sample images shipped by installed packages: (package, path) -> what indexing must make of it
SHIPPED_IMAGES = {
    ("astropy", "nddata/tests/data/sip-wcs.fits"): dict(hdus=(0,), named=True, meta={
        "bitpix": 16, "bzero": 32768}),
    ("astropy", "wcs/tests/data/dist_lookup.fits.gz"): dict(hdus=(1,), named=True, meta={"tables": True}),
    ("astropy", "wcs/tests/data/dss.14.29.56-62.41.05.fits.gz"): dict(hdus=(0,), named=True, meta={
        "frame": "fk5"}),
    ("astropy", "wcs/tests/data/sip.fits"): dict(),
    ("astropy", "wcs/tests/data/sip2.fits"): dict(),
    ("astropy", "wcs/tests/data/j94f05bgq_flt.fits"): dict(),
    ("astropy", "wcs/tests/data/ie6d07ujq_wcs.fits"): dict(),
    ("astropy", "wcs/tests/data/dist.fits"): dict(),
    ("astropy", "modeling/tests/data/1904-66_AZP.fits"): dict(),
    ("astropy", "io/fits/hdu/compressed/tests/data/m13.fits"): dict(),
    ("astropy", "io/fits/hdu/compressed/tests/data/m13_rice.fits"): dict(),
    ("astropy", "io/fits/hdu/compressed/tests/data/m13_gzip.fits"): dict(),
    ("astropy", "io/fits/hdu/compressed/tests/data/m13_hcomp.fits"): dict(),
    ("astropy", "io/fits/hdu/compressed/tests/data/m13_plio.fits"): dict(),
    ("astropy", "io/fits/hdu/compressed/tests/data/compressed_with_nan.fits"): dict(),
    ("astropy", "io/fits/tests/data/blank.fits"): dict(),
    ("astropy", "io/fits/tests/data/scale.fits"): dict(),
    ("astropy", "io/fits/tests/data/o4sp040b0_raw.fits"): dict(),
    ("astropy", "io/fits/tests/data/comp.fits"): dict(),
    ("astropy", "io/fits/tests/data/test0.fits"): dict(),
    ("astropy", "io/fits/tests/data/tb.fits"): dict(cause="no celestial image"),
    ("reproject", "tests/data/galactic_2d.fits"): dict(hdus=(0,), meta={"frame": "galactic"}),
    ("reproject", "tests/data/image_with_distortion_map.fits"): dict(),
    ("reproject", "tests/data/aia_171_level1.fits"): dict(),
    ("reproject", "tests/data/secchi_l0_a.fits"): dict(),
    ("reproject", "tests/data/equatorial_3d.fits"): dict(),
    ("reproject", "healpix/tests/data/bayestar.fits.gz"): dict(cause="no celestial image"),
    ("pyvo", "dal/tests/data/querydata/image.fits"): dict(),
    ("numpy", "_core/tests/data/recarray_from_file.fits"): dict(cause="no celestial image"),
}
#: sample headers shipped by installed packages, imaged with generated pixels
SHIPPED_HEADERS = {
    ("astropy", "wcs/tests/data/tpvonly.hdr"): dict(),
    ("astropy", "wcs/tests/data/siponly.hdr"): dict(),
    ("astropy", "wcs/tests/data/irac_sip.hdr"): dict(),
    ("astropy", "wcs/tests/data/zpn-hole.hdr"): dict(),
    ("astropy", "wcs/tests/data/sip-broken.hdr"): dict(),
    ("astropy", "wcs/tests/data/2wcses.hdr"): dict(),
    ("astropy", "wcs/tests/data/outside_sky.hdr"): dict(),
    ("astropy", "wcs/tests/data/defunct_keywords.hdr"): dict(),
    ("astropy", "wcs/tests/data/nonstandard_units.hdr"): dict(),
    ("astropy", "wcs/tests/data/locale.hdr"): dict(),
    ("astropy", "wcs/tests/data/unit.hdr"): dict(),
    ("astropy", "modeling/tests/data/hst_sip.hdr"): dict(),
    ("reproject", "tests/data/gc_eq.hdr"): dict(),
    ("reproject", "tests/data/gc_ga.hdr"): dict(),
}
PROJECTIONS = ("AZP", "SZP", "TAN", "STG", "SIN", "ARC", "ZPN", "ZEA", "AIR", "CYP", "CEA", "CAR", "MER", "SFL",
               "PAR", "MOL", "AIT", "COP", "COE", "COD", "COO", "BON", "PCO", "TSC", "CSC", "QSC", "HPX")


def build_corpus(root: Path) -> list[Layout]:
    """Write the corpus into ``root``; return what indexing must make of each file."""
    root.mkdir(parents=True, exist_ok=True)
    layouts: list[Layout] = []
    for (package, rel), expect in SHIPPED_IMAGES.items():
        source = shipped(package, rel)
        if source is None:
            continue
        name = f"shipped/{package}/{Path(rel).name.removesuffix('.gz')}"
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".gz"):
            with gzip.open(source) as f:
                target.write_bytes(f.read())
        else:
            shutil.copyfile(source, target)
        layouts.append(Layout(name, f"{package}: {rel}", **expect))
    for (package, rel), expect in SHIPPED_HEADERS.items():
        source = shipped(package, rel)
        if source is None:
            continue
        hdul = _image_from_header(read_header(source))
        if hdul is None:
            continue
        name = f"headers/{package}/{Path(rel).stem}.fits"
        _write(root, name, hdul)
        layouts.append(Layout(name, f"{package}: {rel} (header)", **expect))
    for proj in PROJECTIONS:
        source = shipped("astropy", f"wcs/tests/data/maps/1904-66_{proj}.hdr")
        if source is None:
            continue
        hdul = _image_from_header(read_header(source))
        name = f"maps/1904-66_{proj}.fits"
        _write(root, name, hdul)
        layouts.append(Layout(name, f"astropy: wcs/tests/data/maps/1904-66_{proj}.hdr (header)", hdus=(0,)))
    layouts += _generated(root)
    return layouts


def _generated(root: Path) -> list[Layout]:
    out: list[Layout] = []

    def add(rel: str, hdul: fits.HDUList, **expect: object) -> None:
        _write(root, rel, hdul)
        out.append(Layout(rel, "generated", **expect))

    # 1. an all-sky CAR map (reproject's Milky Way panorama header, 10x coarser) with a degenerate third axis
    pan = shipped("reproject", "tests/data/mwpan2_RGB_3600.hdr")
    if pan is not None:
        h = read_header(pan)
        h["NAXIS1"], h["NAXIS2"], h["NAXIS3"] = 360, 180, 1
        for k in (1, 2):
            h[f"CRPIX{k}"] = (h[f"CRPIX{k}"] - 0.5) / 10 + 0.5
            for j in (1, 2):
                if f"CD{k}_{j}" in h:
                    h[f"CD{k}_{j}"] = h[f"CD{k}_{j}"] * 10
        hdul = _image_from_header(h)
        add("generated/allsky_car_galactic.fits", hdul, hdus=(0,), wide=True, named=True,
            meta={"frame": "galactic"})
    # 2. a ZEA hemisphere around the north celestial pole: corners off the sky
    h = tan_header(0.0, 90.0, (182, 182), 0.9 * 3600, ctype=("RA---ZEA", "DEC--ZEA"))
    add("generated/hemisphere_zea.fits", fits.HDUList([fits.PrimaryHDU(pattern((182, 182)), h)]), hdus=(0,),
        wide=True, named=True)
    # 3. fpack-style RICE uint16 with BSCALE/BZERO/BLANK, DECam-like metadata in the primary header (INHERIT = T)
    primary = fits.Header([("TELESCOP", "CTIO 4.0-m telescope"), ("INSTRUME", "DECam"),
                           ("FILTER", "r DECam SDSS c0002 6430.0 1450.0"), ("MJD-OBS", 58000.25),
                           ("EXPTIME", 90.0), ("OBJECT", "DES field"), ("OBSERVAT", "CTIO")])
    hdus = [fits.PrimaryHDU(header=primary)]
    for k, ccd in enumerate(("S1", "S2")):
        raw = pattern((300, 200), ">u2", seed=k).astype(np.int32) - 32768
        raw[10:14, 20:30] = -32768  # BLANK
        hdu = fits.CompImageHDU(raw.astype(np.int16), tan_header(30.0 + 0.06 * k, -20.0, (300, 200), 0.263),
                                compression_type="RICE_1", name=ccd)
        hdu.header["INHERIT"] = True
        hdu.header["BSCALE"], hdu.header["BZERO"], hdu.header["BLANK"] = 1.0, 32768.0, -32768
        hdu.header["CCDNUM"] = k + 1
        hdus.append(hdu)
    add("generated/decam_fpack_uint16.fits.fz", fits.HDUList(hdus), hdus=(1, 2), named=True,
        meta={"band": "r", "mjd": 58000.25, "instrument": "DECam", "em": (5.705e-7, 7.155e-7),
              "exptime": 90.0, "facility": "CTIO 4.0-m telescope", "target": "DES field", "blank": -32768})
    # 4. UKIDSS-like: metadata in the primary, an extension without INHERIT, ZPN projection
    primary = fits.Header([("TELESCOP", "UKIRT"), ("INSTRUME", "WFCAM"), ("FILTER", "K"), ("MJD-OBS", 54321.5),
                           ("EXP_TIME", 10.0)])
    h = tan_header(200.0, 5.0, (256, 256), 0.4)
    h["CTYPE1"], h["CTYPE2"], h["PV2_1"], h["PV2_3"] = "RA---ZPN", "DEC--ZPN", 1.0, 220.0
    add("generated/ukidss_like.fits", fits.HDUList([fits.PrimaryHDU(header=primary),
                                                    fits.ImageHDU(pattern((256, 256), ">i4"), h, name="CHIP1")]),
        hdus=(1,), named=True, meta={"band": "K", "mjd": 54321.5, "instrument": "WFCAM"})
    # 5. HST ACS-like: FILTER1/FILTER2 and EXPSTART/EXPEND in the primary, SCI extension with INHERIT = T
    primary = fits.Header([("TELESCOP", "HST"), ("INSTRUME", "ACS"), ("DETECTOR", "WFC"), ("FILTER1", "CLEAR1L"),
                           ("FILTER2", "F814W"), ("EXPSTART", 53000.1), ("EXPEND", 53000.11), ("EXPTIME", 500.0),
                           ("TARGNAME", "NGC 1234")])
    sci = fits.ImageHDU(pattern((200, 220), ">f4"), tan_header(50.0, -30.0, (200, 220), 0.05, 20.0), name="SCI")
    sci.header["INHERIT"] = True
    add("generated/hst_acs_like.fits", fits.HDUList([fits.PrimaryHDU(header=primary), sci]), hdus=(1,), named=True,
        meta={"band": "F814W", "mjd": 53000.1, "t_max": 53000.11, "instrument": "ACS"})
    # 6. radio images with degenerate axes: NAXIS = 2 with CTYPE3/4 (FIRST), NAXIS3 = NAXIS4 = 1 (VLASS)
    h = tan_header(150.0, 30.0, (128, 128), 1.8, ctype=("RA---SIN", "DEC--SIN"))
    h["WCSAXES"] = 4
    h["CTYPE3"], h["CRVAL3"], h["CDELT3"], h["CRPIX3"] = "FREQ", 1.4e9, 2.2e7, 1.0
    h["CTYPE4"], h["CRVAL4"], h["CDELT4"], h["CRPIX4"] = "STOKES", 1.0, 1.0, 1.0
    h["BUNIT"] = "JY/BEAM"
    add("generated/first_like_naxis2.fits", fits.HDUList([fits.PrimaryHDU(pattern((128, 128)), h)]), hdus=(0,),
        named=True, meta={"band": "1.4GHz"})
    h3 = h.copy()
    del h3["WCSAXES"]
    add("generated/vlass_like_naxis4.fits",
        fits.HDUList([fits.PrimaryHDU(pattern((128, 128)).reshape(1, 1, 128, 128), h3)]), hdus=(0,), named=True)
    # 7. frames: FK5 (another equinox), FK4 with and without EQUINOX, EPOCH only, galactic, ecliptic, supergalactic
    frames = {
        "fk5_j1990": ({"RADESYS": "FK5", "EQUINOX": 1990.0}, ("RA---TAN", "DEC--TAN"), "fk5"),
        "fk4_b1950": ({"RADESYS": "FK4", "EQUINOX": 1950.0}, ("RA---TAN", "DEC--TAN"), "fk4"),
        "fk4_no_equinox": ({"RADESYS": "FK4"}, ("RA---TAN", "DEC--TAN"), "fk4"),
        "epoch_1950": ({"EPOCH": 1950.0}, ("RA---TAN", "DEC--TAN"), "fk4"),
        "galactic": ({}, ("GLON-TAN", "GLAT-TAN"), "galactic"),
        "ecliptic": ({}, ("ELON-TAN", "ELAT-TAN"), None),
        "supergalactic": ({}, ("SLON-TAN", "SLAT-TAN"), "supergalactic"),
    }
    for name, (cards, ctype, frame) in frames.items():
        h = tan_header(120.0, 40.0, (150, 160), 2.0, 10.0, ctype=ctype)
        for key in ("RADESYS", "EQUINOX"):
            h.remove(key, ignore_missing=True)
        for key, value in cards.items():
            h[key] = value
        add(f"generated/frame_{name}.fits", fits.HDUList([fits.PrimaryHDU(pattern((150, 160)), h)]), hdus=(0,),
            named=name in ("ecliptic", "fk4_b1950", "galactic"), meta={"frame": frame} if frame else {})
    # 8. a 20 x 10 degree CAR strip at Dec 50..60 (edges are not great circles)
    h = fits.Header([("CTYPE1", "RA---CAR"), ("CTYPE2", "DEC--CAR"), ("CRVAL1", 150.0), ("CRVAL2", 0.0),
                     ("CDELT1", -0.05), ("CDELT2", 0.05), ("CRPIX1", 200.5), ("CRPIX2", 0.5 - 50 / 0.05),
                     ("RADESYS", "ICRS")])
    add("generated/car_strip_20x10.fits", fits.HDUList([fits.PrimaryHDU(pattern((200, 400)), h)]), hdus=(0,),
        wide=True, named=True)
    # 9. scaled integers with BLANK (BITPIX 16), and every other BITPIX
    h = tan_header(80.0, -10.0, (100, 120), 1.5)
    raw = pattern((100, 120), ">i2")
    raw[40:45, 50:60] = -32768
    hdu = fits.PrimaryHDU(raw, h, do_not_scale_image_data=True)
    hdu.header["BSCALE"], hdu.header["BZERO"], hdu.header["BLANK"] = 0.01, 100.0, -32768
    add("generated/int16_scaled_blank.fits", fits.HDUList([hdu]), hdus=(0,), named=True, meta={"blank": -32768})
    for dtype in (">u1", ">i4", ">i8", ">f8"):
        h = tan_header(81.0, -10.0, (90, 110), 1.5)
        add(f"generated/bitpix_{np.dtype(dtype).name}.fits",
            fits.HDUList([fits.PrimaryHDU(pattern((90, 110), dtype), h)]), hdus=(0,))
    # 10. a parent that is itself a cutout: its own LTV/LTM
    h = tan_header(82.0, -10.0, (80, 90), 1.5)
    h["LTV1"], h["LTV2"], h["LTM1_1"], h["LTM2_2"] = -100.0, -50.0, 1.0, 1.0
    add("generated/own_ltv.fits", fits.HDUList([fits.PrimaryHDU(pattern((80, 90)), h)]), hdus=(0,), named=True,
        meta={"ltv": (-100.0, -50.0)})
    # 11. band names: Johnson-Cousins R and I are not SDSS r and i
    for band in ("R", "I"):
        h = tan_header(83.0, -10.0, (60, 60), 1.5)
        h["FILTER"] = band
        add(f"generated/band_{band}.fits", fits.HDUList([fits.PrimaryHDU(pattern((60, 60)), h)]), hdus=(0,),
            named=True, meta={"band": band})
    # 12. tile compressions of integer and float data
    for kind, dtype in (("GZIP_1", ">f4"), ("GZIP_2", ">i2"), ("HCOMPRESS_1", ">i2"), ("PLIO_1", ">i2"),
                        ("RICE_1", ">f4")):
        h = tan_header(84.0, -10.0, (96, 80), 1.5)
        data = pattern((96, 80), dtype) if dtype != ">i2" or kind != "PLIO_1" else np.abs(pattern((96, 80), dtype))
        add(f"generated/tile_{kind.lower()}_{np.dtype(dtype).name}.fits.fz",
            fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, h, compression_type=kind)]), hdus=(1,))
    # 13. files that must be skipped: truncated, not FITS, gzip of FITS, gzip of text, a table only, a 3-D cube
    good = fits.HDUList([fits.PrimaryHDU(pattern((100, 100)), tan_header(85.0, -10.0, (100, 100)))])
    _write(root, "skip/whole.fits", good)
    whole = (root / "skip/whole.fits").read_bytes()
    (root / "skip/whole.fits").unlink()
    (root / "skip/truncated.fits").write_bytes(whole[:2880 * 3])
    out.append(Layout("skip/truncated.fits", "generated", cause="truncated", named=True))
    (root / "skip/truncated_odd.fits").write_bytes(whole[:5000])
    out.append(Layout("skip/truncated_odd.fits", "generated", cause="truncated", named=True))
    (root / "skip/notes.fits").write_text("SIMPLE? not at all\n")
    out.append(Layout("skip/notes.fits", "generated", cause="not FITS"))
    (root / "skip/archive.fits.gz").write_bytes(gzip.compress(whole))
    out.append(Layout("skip/archive.fits.gz", "generated", cause="gzip-compressed"))
    (root / "skip/readme.txt.gz").write_bytes(gzip.compress(b"not FITS at all"))
    out.append(Layout("skip/readme.txt.gz", "generated", cause="not FITS", named=True))
    add("skip/cube.fits", fits.HDUList([fits.PrimaryHDU(np.zeros((3, 20, 20), np.float32),
                                                        tan_header(85.0, -10.0, (20, 20)))]),
        cause="no celestial image")
    return out


def corpus_fields(record, geometry, fraction: float = 0.3) -> list[tuple[float, float, float]]:
    """Fields (ra, dec, size in degrees) to cut from a record: its centre, and one across a corner."""
    ny, nx = record.shape
    ra, dec = geometry.to_sky(np.array([(nx - 1) / 2, nx * 0.05]), np.array([(ny - 1) / 2, ny * 0.05]))
    size = float(np.clip(min(nx, ny) * fraction * record.scale / 3600, 1e-3, 1.5))
    return [(float(r), float(d), size) for r, d in zip(ra, dec, strict=True) if np.isfinite(r) and np.isfinite(d)]
