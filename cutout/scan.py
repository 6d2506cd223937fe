"""Reading archive files into index records: one record per 2-D image HDU with a celestial WCS."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.coordinates import ICRS, SkyCoord
from astropy.io import fits
from astropy.time import Time
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales, wcs_to_celestial_frame

from cutout.errors import ArchiveError
from cutout.sky import MAX_FIELD_DEG, footprint_circle

log = logging.getLogger(__name__)

#: File names the scanner looks at; ``.gz`` is listed so that it can be refused with a reason.
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fz", ".gz")
#: Boundary points per image edge in a stored footprint polygon.
FOOTPRINT_PER_EDGE = 4
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class ImageRecord:
    """What the index knows of one archive image, without opening it."""

    #: URL-safe id, stable across re-indexing (derived from path and HDU)
    id: str
    #: path relative to the archive root, with forward slashes
    path: str
    #: index of the HDU in the file
    hdu: int
    collection: str
    band: str
    #: MJD of the observation, or None when the header has none
    mjd: float | None
    #: (ny, nx) in numpy order
    shape: tuple[int, int]
    #: mean pixel scale, arcsec per pixel
    scale: float
    #: celestial WCS as a FITS header string (SIP included where present)
    wcs_header: str
    #: sky polygon of the image boundary, ICRS degrees, shape (M, 2)
    footprint: np.ndarray
    #: file size in bytes
    filesize: int
    #: whether the HDU is tile-compressed
    compressed: bool

    def wcs(self) -> WCS:
        """The image's celestial WCS, parsed from the stored header."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            return WCS(fits.Header.fromstring(self.wcs_header))


@dataclass(frozen=True)
class Skipped:
    """A file the scanner did not index, and why."""

    path: str
    reason: str


def image_id(relpath: str, hdu: int) -> str:
    """A URL-safe id for an HDU, readable and stable for the same path and HDU."""
    stem = relpath.rsplit("/", 1)[-1]
    for suffix in (".gz", ".fz", ".fits", ".fit", ".fts"):
        stem = stem.removesuffix(suffix)
    slug = _UNSAFE.sub("_", stem).strip("._-")[:48] or "image"
    digest = hashlib.sha256(f"{relpath}#{hdu}".encode()).hexdigest()[:8]
    return f"{slug}-h{hdu}-{digest}"


def iter_fits_paths(root: Path) -> list[Path]:
    """FITS-named files under ``root``, recursively, skipping hidden entries, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(FITS_SUFFIXES):
                found.append(Path(dirpath, name))
    return found


def scan_archive(root: str | os.PathLike) -> tuple[list[ImageRecord], list[Skipped]]:
    """Index every image HDU with a celestial WCS under ``root``.

    Files that cannot be indexed never stop the scan: each is logged once as a
    warning and returned in the second list.
    """
    root = Path(root)
    records: list[ImageRecord] = []
    skipped: list[Skipped] = []
    for path in iter_fits_paths(root):
        rel = path.relative_to(root).as_posix()
        try:
            found = read_file(root, rel)
        except ArchiveError as exc:
            found, reason = [], str(exc)
        except Exception as exc:  # any unreadable file is skipped, never fatal to the scan
            found, reason = [], f"unreadable ({type(exc).__name__}: {exc})"
        else:
            reason = "no 2-D image HDU with a celestial WCS"
        if found:
            records.extend(found)
        else:
            log.warning("skipped %s: %s", rel, reason)
            skipped.append(Skipped(rel, reason))
    return records, skipped


def read_file(root: Path, relpath: str) -> list[ImageRecord]:
    """Records for the image HDUs of one file; raises `ArchiveError` for a non-FITS file."""
    path = root / relpath
    with open(path, "rb") as f:
        magic = f.read(9)
    if magic[:2] == b"\x1f\x8b":
        raise ArchiveError("gzip-compressed FITS cannot be cut without reading it whole; "
                           "recompress it with fpack (tile compression) instead")
    if magic != b"SIMPLE  =":
        raise ArchiveError("not a FITS file")
    size = path.stat().st_size
    records = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        with fits.open(path, memmap=True, lazy_load_hdus=True) as hdul:
            for index, hdu in enumerate(hdul):
                record = _record(hdu, hdul, relpath, index, size)
                if record is not None:
                    records.append(record)
    return records


def _record(hdu, hdul, relpath: str, index: int, size: int) -> ImageRecord | None:
    header = hdu.header
    if not hdu.is_image or header.get("NAXIS") != 2:
        return None
    wcs = WCS(header, fobj=hdul)
    if not wcs.has_celestial or wcs.naxis != 2:
        return None
    return record_for(wcs, (int(header["NAXIS2"]), int(header["NAXIS1"])), relpath, index,
                      collection=_collection(header, relpath),
                      band=str(header.get("FILTER", header.get("BAND", "unknown"))).strip() or "unknown",
                      mjd=_mjd(header), filesize=size, compressed=isinstance(hdu, fits.CompImageHDU))


def record_for(wcs: WCS, shape: tuple[int, int], relpath: str, hdu: int, *, collection: str,
               band: str, mjd: float | None = None, filesize: int = 0,
               compressed: bool = False) -> ImageRecord:
    """The index record of an image with this WCS and shape (ny, nx).

    Raises
    ------
    ArchiveError
        When the image is too large for the sky index.
    """
    footprint = image_footprint(wcs, shape)
    if footprint_circle(footprint)[1] > MAX_FIELD_DEG:
        raise ArchiveError(f"HDU {hdu} spans more than {MAX_FIELD_DEG} deg; too large for the sky index")
    return ImageRecord(
        id=image_id(relpath, hdu), path=relpath, hdu=hdu, collection=collection, band=band, mjd=mjd,
        shape=shape, scale=float(np.mean(proj_plane_pixel_scales(wcs.celestial)) * 3600.0),
        wcs_header=wcs.to_header(relax=True).tostring(), footprint=footprint,
        filesize=filesize, compressed=compressed)


def image_footprint(wcs: WCS, shape: tuple[int, int]) -> np.ndarray:
    """ICRS polygon (M, 2) along the outer pixel edges of an image, anticlockwise in pixels."""
    ny, nx = shape
    t = np.linspace(0.0, 1.0, FOOTPRINT_PER_EDGE + 1)[:-1]
    lo_x, hi_x, lo_y, hi_y = -0.5, nx - 0.5, -0.5, ny - 0.5
    xs = np.concatenate([lo_x + t * nx, np.full_like(t, hi_x), hi_x - t * nx, np.full_like(t, lo_x)])
    ys = np.concatenate([np.full_like(t, lo_y), lo_y + t * ny, np.full_like(t, hi_y), hi_y - t * ny])
    world = wcs.celestial.all_pix2world(np.column_stack([xs, ys]), 0)
    lon, lat = world[:, wcs.celestial.wcs.lng], world[:, wcs.celestial.wcs.lat]
    ra, dec = native_to_icrs(wcs, lon, lat)
    return np.column_stack([ra, dec])


def native_to_icrs(wcs: WCS, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Convert coordinates in a WCS's celestial frame to ICRS degrees."""
    frame = wcs_to_celestial_frame(wcs)
    if isinstance(frame, ICRS):
        return np.asarray(lon) % 360.0, np.asarray(lat)
    icrs = SkyCoord(lon, lat, unit="deg", frame=frame).icrs
    return icrs.ra.deg, icrs.dec.deg


def _collection(header: fits.Header, relpath: str) -> str:
    for key in ("SURVEY", "COLLECT"):
        if str(header.get(key, "")).strip():
            return str(header[key]).strip()
    if "/" in relpath:
        return relpath.split("/", 1)[0]
    return str(header.get("TELESCOP", "archive")).strip() or "archive"


def _mjd(header: fits.Header) -> float | None:
    if "MJD-OBS" in header:
        try:
            return float(header["MJD-OBS"])
        except (TypeError, ValueError):
            pass
    if "DATE-OBS" in header:
        try:
            return float(Time(str(header["DATE-OBS"]).strip(), scale="utc").mjd)
        except ValueError:
            return None
    return None
