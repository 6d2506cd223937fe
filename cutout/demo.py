"""A deterministic synthetic survey archive: one sky, several surveys, bands and epochs.

`generate_archive` reads the settings in ``data/demo-survey.toml``: a source
catalogue (stars and small elliptical galaxies, fixed seed) is drawn once and
rendered into every image through that image's own TAN WCS, with a Gaussian PSF
per survey and band, sky background and noise. Every source therefore appears at
the same ICRS position in every survey, band and epoch, which makes alignment and
co-addition checkable against the catalogue (``catalogue.ecsv``).
"""

from __future__ import annotations

import os
import tomllib
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time
from astropy.wcs import WCS

from cutout.sky import from_plane, to_plane

#: Sub-pixel samples per axis when integrating a source profile over a pixel.
SUPERSAMPLE = 5
#: Profiles are truncated at this many sigma (flux lost < 1e-5).
TRUNCATE_SIGMA = 4.5
_FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


@dataclass(frozen=True)
class ImageSpec:
    """Everything needed to render one archive image."""

    relpath: str
    survey: dict[str, Any]
    band: str
    epoch: int
    tile: tuple[int, int]
    crval: tuple[float, float]


def load_settings(path: str | os.PathLike) -> dict[str, Any]:
    """Read generator settings from a TOML file."""
    with open(path, "rb") as f:
        return tomllib.load(f)


def make_catalogue(settings: dict[str, Any]) -> Table:
    """Draw the source catalogue: positions, type, shape and a magnitude per band."""
    rng = np.random.default_rng(settings["seed"])
    cat = settings["catalogue"]
    parts = []
    for region in cat["regions"]:
        area = 2 * np.pi * (1 - np.cos(np.radians(region["radius"]))) * (180 / np.pi) ** 2
        n = rng.poisson(area * region["density"])
        # uniform on the spherical cap: cos(distance) uniform, position angle uniform
        dist = np.degrees(np.arccos(rng.uniform(np.cos(np.radians(region["radius"])), 1.0, n)))
        pa = rng.uniform(0, 2 * np.pi, n)
        x, y = np.tan(np.radians(dist)) * np.sin(pa), np.tan(np.radians(dist)) * np.cos(pa)
        ra, dec = from_plane(region["ra"], region["dec"], np.degrees(x), np.degrees(y))
        parts.append((ra, dec))
    ra, dec = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    n = len(ra)
    lo, hi = cat["r_mag"]
    # inverse CDF of dN/dm ∝ 10**(slope m) on [lo, hi]
    k = cat["slope"] * np.log(10)
    r_mag = np.log(np.exp(k * lo) + rng.uniform(0, 1, n) * (np.exp(k * hi) - np.exp(k * lo))) / k
    galaxy = rng.uniform(0, 1, n) < cat["galaxy_fraction"]
    sigma = np.where(galaxy, rng.uniform(*cat["galaxy_sigma"], n), 0.0)
    ratio = np.where(galaxy, rng.uniform(*cat["galaxy_axis_ratio"], n), 1.0)
    theta = np.where(galaxy, rng.uniform(0, 180, n), 0.0)
    table = Table({"id": np.arange(n), "ra": ra, "dec": dec,
                   "kind": np.where(galaxy, "galaxy", "star"), "sigma_arcsec": sigma,
                   "axis_ratio": ratio, "pa_deg": theta})
    for band, (c_lo, c_hi) in settings["colours"].items():
        table[f"mag_{band}"] = r_mag + rng.uniform(c_lo, c_hi, n)
    table.meta["seed"] = settings["seed"]
    return table


def plan_images(settings: dict[str, Any]) -> list[ImageSpec]:
    """Every image the settings describe: survey x band x epoch x tile."""
    specs = []
    for survey in settings["survey"]:
        ny, nx = survey["shape"]
        rows, cols = survey["grid"]
        step_x = (nx * survey["scale"] - survey["overlap"]) / 3600.0
        step_y = (ny * survey["scale"] - survey["overlap"]) / 3600.0
        for band in survey["bands"]:
            for e, epoch in enumerate(survey["epochs"]):
                for r in range(rows):
                    for c in range(cols):
                        x = (c - (cols - 1) / 2) * step_x + epoch["dither"][0] / 3600.0
                        y = (r - (rows - 1) / 2) * step_y + epoch["dither"][1] / 3600.0
                        ra, dec = from_plane(*survey["centre"], np.array([-x]), np.array([y]))
                        stem = f"{survey['name'].lower()}_{band}_e{e + 1}_t{r}{c}"
                        ext = ".fits.fz" if survey["compress"] else ".fits"
                        specs.append(ImageSpec(f"{survey['name']}/{band}/{stem}{ext}", survey, band, e,
                                               (r, c), (float(ra[0]), float(dec[0]))))
    return specs


def image_header(spec: ImageSpec) -> fits.Header:
    """A survey-like header with a rotated TAN WCS (CD matrix)."""
    s = spec.survey
    ny, nx = s["shape"]
    epoch = s["epochs"][spec.epoch]
    theta = np.radians(epoch["rotation"])
    scale = s["scale"] / 3600.0
    mjd = epoch["mjd"] + 0.003 * (spec.tile[0] * s["grid"][1] + spec.tile[1]) + 0.0007 * s["bands"].index(spec.band)
    h = fits.Header()
    h["OBJECT"] = (f"{s['name']} tile {spec.tile[0]},{spec.tile[1]}", "field name")
    h["TELESCOP"] = s["telescope"]
    h["INSTRUME"] = s["instrument"]
    h["SURVEY"] = (s["name"], "survey / collection")
    h["FILTER"] = (spec.band, "filter band")
    h["BUNIT"] = ("adu", "pixel unit")
    h["EXPTIME"] = (s["exptime"], "[s] exposure time")
    h["GAIN"] = (s["gain"], "[e-/adu]")
    h["RDNOISE"] = (s["read_noise"], "[e-] read noise")
    h["SEEING"] = (s["seeing"][spec.band], "[arcsec] PSF FWHM")
    h["SKYLEVEL"] = (s["sky"][spec.band], "[adu] sky background")
    h["MAGZERO"] = (s["zeropoint"], "magnitude of 1 adu")
    h["MJD-OBS"] = (round(mjd, 6), "[d] start of observation")
    h["DATE-OBS"] = (Time(mjd, format="mjd", scale="utc").isot, "start of observation (UTC)")
    h["RADESYS"] = "ICRS"
    h["EQUINOX"] = 2000.0
    h["WCSAXES"] = 2
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CUNIT1"], h["CUNIT2"] = "deg", "deg"
    h["CRVAL1"], h["CRVAL2"] = spec.crval
    h["CRPIX1"], h["CRPIX2"] = (nx + 1) / 2.0, (ny + 1) / 2.0
    h["CD1_1"], h["CD1_2"] = -scale * np.cos(theta), -scale * np.sin(theta)
    h["CD2_1"], h["CD2_2"] = -scale * np.sin(theta), scale * np.cos(theta)
    h["ORIGIN"] = "siasync demo-archive"
    return h


def render_image(spec: ImageSpec, catalogue: Table, seed: int) -> tuple[np.ndarray, fits.Header]:
    """Render one image: sources through its WCS and PSF, plus sky and noise."""
    header = image_header(spec)
    s, band = spec.survey, spec.band
    ny, nx = s["shape"]
    wcs = WCS(header)
    scale = s["scale"]
    half_diag = np.hypot(nx, ny) * scale / 3600.0 / 2 + 0.01
    x, y, cosc = to_plane(*spec.crval, catalogue["ra"], catalogue["dec"])
    near = (cosc > 0) & (np.hypot(x, y) < half_diag)
    cat = catalogue[near]
    px, py = wcs.wcs_world2pix(cat["ra"], cat["dec"], 0)
    flux = 10 ** (-0.4 * (np.asarray(cat[f"mag_{band}"]) - s["zeropoint"]))
    # source covariance on the sky (east, north; arcsec^2), then in pixels through CD^-1
    sig_major = np.asarray(cat["sigma_arcsec"])
    sig_minor = sig_major * np.asarray(cat["axis_ratio"])
    pa = np.radians(np.asarray(cat["pa_deg"]))  # east of north
    u_e, u_n = np.sin(pa), np.cos(pa)
    cov_sky = (sig_major[:, None, None] ** 2 * np.einsum("ni,nj->nij", np.c_[u_e, u_n], np.c_[u_e, u_n])
               + sig_minor[:, None, None] ** 2 * np.einsum("ni,nj->nij", np.c_[u_n, -u_e], np.c_[u_n, -u_e]))
    psf_sigma = s["seeing"][band] * _FWHM_TO_SIGMA
    cov_sky += psf_sigma**2 * np.eye(2)
    # intermediate world x grows to the east, as the sky frame here; pixels = CD^-1 (deg)
    to_pix = np.linalg.inv(wcs.wcs.cd) / 3600.0
    cov_pix = np.einsum("ij,njk,lk->nil", to_pix, cov_sky, to_pix)
    image = np.zeros((ny, nx))
    _add_sources(image, px, py, flux, cov_pix)
    rng = np.random.default_rng([seed, zlib.crc32(spec.relpath.encode())])
    sky = s["sky"][band]
    variance = (np.clip(image, 0, None) + sky) / s["gain"] + (s["read_noise"] / s["gain"]) ** 2
    image += sky + rng.standard_normal(image.shape) * np.sqrt(variance)
    image = image.astype(np.float32)
    for _ in range(s["nan_columns"].get(band, 0)):
        image[:, rng.integers(0, nx)] = np.nan
    return image, header


def _add_sources(image: np.ndarray, px: np.ndarray, py: np.ndarray, flux: np.ndarray, cov: np.ndarray) -> None:
    """Add pixel-integrated Gaussian sources, grouped by stamp size for vectorisation."""
    sig_max = np.sqrt(np.max(np.linalg.eigvalsh(cov), axis=1)) if len(flux) else np.zeros(0)
    half = np.ceil(TRUNCATE_SIGMA * sig_max).astype(int)
    for h in np.unique(half):
        for chunk in np.array_split(np.flatnonzero(half == h), max(1, int(np.sum(half == h)) // 200)):
            _add_stamps(image, px[chunk], py[chunk], flux[chunk], cov[chunk], int(h))


def _add_stamps(image: np.ndarray, px: np.ndarray, py: np.ndarray, flux: np.ndarray,
                cov: np.ndarray, half: int) -> None:
    ny, nx = image.shape
    cx, cy = np.round(px).astype(int), np.round(py).astype(int)
    offsets = np.arange(-half, half + 1)
    sub = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE - 0.5
    grid = (offsets[:, None] + sub[None, :]).ravel()  # sub-pixel sample positions
    dx = grid[None, None, :] + (cx - px)[:, None, None]
    dy = grid[None, :, None] + (cy - py)[:, None, None]
    inv = np.linalg.inv(cov)
    q = inv[:, 0, 0, None, None] * dx**2 + 2 * inv[:, 0, 1, None, None] * dx * dy + inv[:, 1, 1, None, None] * dy**2
    norm = flux / (2 * np.pi * np.sqrt(np.linalg.det(cov)) * SUPERSAMPLE**2)
    samples = np.exp(-0.5 * q) * norm[:, None, None]
    k = 2 * half + 1
    stamps = samples.reshape(len(px), k, SUPERSAMPLE, k, SUPERSAMPLE).sum(axis=(2, 4))
    rows = cy[:, None, None] + offsets[None, :, None]
    cols = cx[:, None, None] + offsets[None, None, :]
    rows, cols = np.broadcast_arrays(rows, cols)
    inside = (rows >= 0) & (rows < ny) & (cols >= 0) & (cols < nx)
    np.add.at(image, (rows[inside], cols[inside]), stamps[inside])


def write_image(path: Path, image: np.ndarray, header: fits.Header, compress: bool, seed: int) -> None:
    """Write an image atomically; compressed images use RICE_1 tiles with a fixed dither seed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if compress:
        hdul = fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(
            image, header, compression_type="RICE_1", quantize_level=16.0,
            quantize_method=1, dither_seed=1 + seed % 10000)])
    else:
        hdul = fits.HDUList([fits.PrimaryHDU(image, header)])
    hdul.writeto(tmp, overwrite=True, checksum=True)
    os.replace(tmp, path)


def _render_and_write(args: tuple[Path, ImageSpec, Table, int]) -> int:
    out, spec, catalogue, seed = args
    image, header = render_image(spec, catalogue, seed)
    path = out / spec.relpath
    write_image(path, image, header, spec.survey["compress"], seed)
    return path.stat().st_size


def generate_archive(out: str | os.PathLike, settings_path: str | os.PathLike,
                     workers: int | None = None) -> dict[str, Any]:
    """Generate the demo archive into ``out``.

    Parameters
    ----------
    out : path-like
        Target directory (created).
    settings_path : path-like
        The generator settings (``data/demo-survey.toml``); copied into ``out``.
    workers : int, optional
        Processes to render with (default: the core count).

    Returns
    -------
    dict
        ``images`` (count), ``bytes`` (total written) and ``sources`` (catalogue size).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = load_settings(settings_path)
    catalogue = make_catalogue(settings)
    specs = plan_images(settings)
    jobs = [(out, spec, catalogue, settings["seed"]) for spec in specs]
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        sizes = list(pool.map(_render_and_write, jobs))
    catalogue.write(out / "catalogue.ecsv", overwrite=True)
    (out / "demo-survey.toml").write_bytes(Path(settings_path).read_bytes())
    return {"images": len(specs), "bytes": int(sum(sizes)), "sources": len(catalogue)}
