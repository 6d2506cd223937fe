"""Reading archive files into index records: one record per 2-D image HDU with a celestial WCS.

A record holds everything the service needs to find an image, describe it in a SIAP row
and (later) in an ObsCore row, without opening the file again: where it is (path, HDU,
size and modification time), what it observed (band and wavelength interval, start and
end time, exposure, instrument, telescope, target, unit), and where it lies (its WCS as
wcslib understood it, its footprint, and for *wide* images a HEALPix coverage).

Metadata is read from the image's own header first, then from the file's primary header
(multi-extension cameras keep FILTER, MJD-OBS and INSTRUME there), whatever INHERIT says.
No file can stop a scan: each one that cannot be indexed is returned as `Skipped`, with
its cause, and logged once.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.time import Time
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales
from astropy_healpix import HEALPix

from cutout.errors import ArchiveError
from cutout.fitsio import BLOCK, CARD
from cutout.geometry import Geometry
from cutout.layout import Layout, canonical_wcs, describe, tables_fits, wcs_from_cards
from cutout.sky import footprint_circle, to_plane

log = logging.getLogger(__name__)

#: File names the scanner looks at; ``.gz`` is listed so that it can be refused with a reason.
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fz", ".gz")
#: Boundary points per image edge in the footprint polygon of an ordinary image.
FOOTPRINT_PER_EDGE = 4
#: Boundary points per edge sampled to check that the polygon follows the edges, and kept for wide images.
DENSE_PER_EDGE = 32
#: A polygon whose edges stray more than this many pixels from the image's edges makes the image *wide*.
EDGE_TOLERANCE_PX = 0.05
#: Images whose enclosing circle is larger than this (degrees) are *wide*.
WIDE_RADIUS_DEG = 20.0
#: HEALPix order (NESTED) of a wide image's coverage: cells of about 0.9 degrees.
COVERAGE_ORDER = 6
_COVERAGE = HEALPix(nside=2**COVERAGE_ORDER, order="nested")
_MAX_SAMPLES = 1_000_000
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: Causes of skipped files, as the summary counts them.
CAUSES = ("not FITS", "gzip-compressed", "truncated", "no celestial image", "unreadable")


@dataclass(frozen=True)
class ImageRecord:
    """What the index knows of one archive image, without opening it.

    The first fields are the image's identity and what a cutout needs; the observation
    fields follow the ObsCore model's names where one exists (``t_min``, ``em_min``...).
    """

    #: URL-safe id, stable across re-indexing (derived from path and HDU)
    id: str
    #: path relative to the archive root, with forward slashes
    path: str
    #: index of the HDU in the file
    hdu: int
    #: the collection (SURVEY or COLLECT card, else the first directory, else TELESCOP)
    collection: str
    #: the band as the header names it (FILTER and its kin; DECam's long strings cut to the band), or "unknown"
    band: str
    #: MJD of the observation (MJD-OBS, else DATE-OBS, else the start), or None
    mjd: float | None
    #: (ny, nx) in numpy order
    shape: tuple[int, int]
    #: mean pixel scale, arcsec per pixel
    scale: float
    #: the celestial WCS as a cutout writes it (wcslib's reading, by astropy, CRPIX included)
    wcs_header: str
    #: sky polygon of the image boundary, ICRS degrees, shape (M, 2); for a wide image the
    #: densified rim, without the points that are off the sky
    footprint: np.ndarray
    #: file size in bytes
    filesize: int
    #: whether the HDU is tile-compressed
    compressed: bool
    #: modification time of the file, nanoseconds since the epoch (incremental indexing)
    mtime_ns: int = 0
    #: the WCS's distortion lookup tables (CPDIS/D2IM) as a FITS file, or empty
    wcs_tables: bytes = b""
    #: whether the footprint is not a small convex polygon (all-sky, hemisphere, curved edges): such
    #: an image is found through `coverage` and matched exactly through its WCS
    wide: bool = False
    #: a wide image's HEALPix cells (NESTED, order `COVERAGE_ORDER`) holding any of its pixels, and their neighbours
    coverage: np.ndarray | None = None
    #: the celestial frame as astropy names it (icrs, fk5, fk4, galactic, ...)
    frame: str = "icrs"
    #: the equinox as the header writes it (EQUINOX, else EPOCH), or None
    equinox: float | None = None
    #: INSTRUME (ObsCore instrument_name)
    instrument: str | None = None
    #: TELESCOP (ObsCore facility_name)
    facility: str | None = None
    #: OBJECT (ObsCore target_name)
    target: str | None = None
    #: exposure time in seconds (EXPTIME, EXPOSURE, ...; ObsCore t_exptime)
    exptime: float | None = None
    #: start and end of the observation, MJD (ObsCore t_min, t_max)
    t_min: float | None = None
    t_max: float | None = None
    #: the band's wavelength interval in metres (ObsCore em_min, em_max), where known
    em_min: float | None = None
    em_max: float | None = None
    #: BUNIT
    bunit: str | None = None
    #: BITPIX of a cutout's data
    bitpix: int = -32
    #: characters of a cutout's header cards (without END): the same for every cutout of the image
    cutout_head: int = 0
    #: bytes of a cutout's extensions (the lookup tables)
    cutout_tail: int = 0

    def wcs(self) -> WCS:
        """The image's celestial WCS, parsed from the stored header (lookup tables included)."""
        return wcs_from_cards(self.wcs_header, self.wcs_tables)

    @property
    def indexed(self) -> tuple[int, int]:
        """The file's size and modification time (ns) when it was indexed: what `cutout.engine.ParentImage` checks
        the file against before it serves its pixels."""
        return self.filesize, self.mtime_ns

    def cutout_filesize(self, shape: tuple[int, int]) -> int:
        """Size in bytes of the FITS file of a cutout of ``shape`` (ny, nx) of this image."""
        header = self.cutout_head + CARD
        data = shape[0] * shape[1] * abs(self.bitpix) // 8
        return header + (-header % BLOCK) + data + (-data % BLOCK) + self.cutout_tail


@dataclass(frozen=True)
class Skipped:
    """A file the scanner did not index, and why."""

    path: str
    reason: str
    #: one of `CAUSES`
    cause: str = "unreadable"
    filesize: int = 0
    mtime_ns: int = 0


@dataclass
class FileScan:
    """What scanning one file gave: its records, or why it was skipped."""

    path: str
    records: list[ImageRecord] = field(default_factory=list)
    skipped: Skipped | None = None


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
    """Index every image HDU with a celestial WCS under ``root``, in this process.

    Files that cannot be indexed never stop the scan: each is logged once as a warning
    and returned in the second list. (`cutout.index.ArchiveIndex.build` scans on every
    core, and reuses what an earlier index knows.)
    """
    root = Path(root)
    records: list[ImageRecord] = []
    skipped: list[Skipped] = []
    for path in iter_fits_paths(root):
        result = scan_file(root, path.relative_to(root).as_posix())
        records += result.records
        if result.skipped:
            log.warning("skipped %s: %s", result.path, result.skipped.reason)
            skipped.append(result.skipped)
    return records, skipped


def scan_file(root: Path | str, relpath: str) -> FileScan:
    """Scan one file; never raises (a file that cannot be indexed is `FileScan.skipped`, for the caller to log)."""
    root = Path(root)
    try:
        stat = (root / relpath).stat()
        size, mtime = stat.st_size, stat.st_mtime_ns
    except OSError as exc:
        return _skip(relpath, f"cannot be read ({exc.strerror or exc})", "unreadable")
    try:
        records = read_file(root, relpath, size, mtime)
    except SkipError as exc:
        return _skip(relpath, exc.reason, exc.cause, size, mtime)
    except ArchiveError as exc:
        return _skip(relpath, str(exc), "unreadable", size, mtime)
    except Exception as exc:  # any unreadable file is skipped, never fatal to the scan
        return _skip(relpath, f"unreadable ({type(exc).__name__}: {exc})", "unreadable", size, mtime)
    return FileScan(relpath, records)


def _skip(relpath: str, reason: str, cause: str, size: int = 0, mtime: int = 0) -> FileScan:
    reason = " ".join(reason.split())  # one line, whatever wcslib's messages hold
    return FileScan(relpath, skipped=Skipped(relpath, reason, cause, size, mtime))


class SkipError(ArchiveError):
    """A file that cannot be indexed: the reason, and its cause (one of `CAUSES`)."""

    def __init__(self, reason: str, cause: str) -> None:
        super().__init__(reason)
        self.reason, self.cause = reason, cause


def read_file(root: Path, relpath: str, size: int | None = None, mtime: int = 0) -> list[ImageRecord]:
    """Records for the image HDUs of one file.

    Raises
    ------
    SkipError
        With the reason and its cause (one of `CAUSES`), when the file cannot be indexed.
    """
    return _read(Path(root), relpath, size, mtime)


def _read(root: Path, relpath: str, size: int | None, mtime: int) -> list[ImageRecord]:
    path = root / relpath
    if size is None:
        stat = path.stat()
        size, mtime = stat.st_size, stat.st_mtime_ns
    with open(path, "rb") as f:
        magic = f.read(9)
    if magic[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as z:
                inner = z.read(9)
        except (OSError, EOFError):
            inner = b""
        if inner == b"SIMPLE  =":
            raise SkipError("gzip-compressed FITS cannot be cut without reading it whole; "
                        "recompress it with fpack (tile compression) instead", "gzip-compressed")
        raise SkipError("a gzip file that does not hold FITS", "not FITS")
    if magic != b"SIMPLE  =":
        raise SkipError("not a FITS file", "not FITS")
    records, reasons = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            hdul = fits.open(path, memmap=True, lazy_load_hdus=True, do_not_scale_image_data=True)
        except Exception as exc:
            if size % BLOCK:  # FITS files are whole 2880-byte blocks
                raise SkipError(f"truncated: {size} bytes, not a whole number of FITS blocks "
                                f"({type(exc).__name__}: {exc})", "truncated") from None
            raise SkipError(f"not readable as FITS ({type(exc).__name__}: {exc})", "unreadable") from None
        with hdul:
            primary = None
            index = 0
            while True:
                try:
                    hdu = hdul[index]
                except IndexError:
                    break
                except Exception as exc:  # a damaged header after the good ones
                    if records:
                        reasons.append(f"HDU {index}: {type(exc).__name__}: {exc}")
                        break
                    raise SkipError(f"truncated or damaged at HDU {index} ({type(exc).__name__}: {exc})",
                                "truncated") from None
                if index == 0:
                    primary = hdu.header
                info = hdu.fileinfo() or {}
                if info.get("datLoc", 0) + info.get("datSpan", 0) > size:
                    raise SkipError(f"truncated: HDU {index}'s data ends at byte "
                                f"{info['datLoc'] + info['datSpan']}, past the end of the file ({size} bytes)",
                                "truncated")
                try:
                    record = _record(hdu, hdul, primary if index else None, relpath, index, size, mtime)
                except ArchiveError as exc:
                    reasons.append(f"HDU {index}: {exc}")
                except Exception as exc:
                    reasons.append(f"HDU {index}: {type(exc).__name__}: {exc}")
                else:
                    if record is not None:
                        records.append(record)
                index += 1
    if not records:
        detail = [r for r in reasons if "not a 2-D image" not in r and "no celestial WCS" not in r]
        raise SkipError("no 2-D image HDU with a celestial WCS" + (f" ({'; '.join(detail)})" if detail else ""),
                    "no celestial image")
    return records


def _record(hdu, hdul, primary: fits.Header | None, relpath: str, index: int, size: int,
            mtime: int) -> ImageRecord | None:
    if not hdu.is_image or not hdu.header.get("NAXIS", 0) and not hdu.header.get("ZIMAGE"):
        return None
    layout = describe(hdu, hdul, primary)
    meta = observation(hdu.header, primary)
    return record_from_layout(layout, relpath, index, collection=_collection(hdu.header, primary, relpath),
                              filesize=size, mtime_ns=mtime, **meta)


def record_from_layout(layout: Layout, relpath: str, hdu: int, *, collection: str, band: str = "unknown",
                       mjd: float | None = None, filesize: int = 0, mtime_ns: int = 0, **meta) -> ImageRecord:
    """The index record of an image with this layout; ``meta`` are the observation fields of `ImageRecord`."""
    geometry = Geometry(layout.wcs, layout.shape, relpath)
    footprint, wide, coverage = footprint_of(geometry)
    head = _cutout_head_length(layout)
    crpix = "".join(f"{k:<8}= {v!r:>20}"[:CARD].ljust(CARD) for k, v in layout.crpix.items()
                    if k in ("CRPIX1", "CRPIX2"))
    frame = geometry.frame
    tables = tables_fits(layout.tables)
    return ImageRecord(
        id=image_id(relpath, hdu), path=relpath, hdu=hdu, collection=collection, band=band, mjd=mjd,
        shape=layout.shape, scale=float(np.mean(proj_plane_pixel_scales(layout.wcs)) * 3600.0),
        wcs_header=crpix + layout.wcs_cards, footprint=footprint, filesize=filesize,
        compressed=layout.compressed, mtime_ns=mtime_ns, wcs_tables=tables, wide=wide, coverage=coverage,
        frame=frame.name, equinox=meta.pop("equinox", None), bitpix=_cutout_bitpix(layout), cutout_head=head,
        cutout_tail=sum(len(t.extension(0, 0)) for t in layout.tables), bunit=layout.bunit, **meta)


def _cutout_bitpix(layout: Layout) -> int:
    return 8 if layout.bitpix == 8 else layout.bitpix


def _cutout_head_length(layout: Layout) -> int:
    """Characters of a cutout's header cards: structural, carried, WCS, LTV/LTM and provenance (see the engine)."""
    cards = 6 + len([k for k in layout.crpix]) + 4 + len([k for k in layout.ltm if k in ("LTM1_2", "LTM2_1")]) + 7
    return len(layout.carried) + len(layout.wcs_cards) + cards * CARD


def record_for(wcs: WCS, shape: tuple[int, int], relpath: str, hdu: int, *, collection: str,
               band: str, mjd: float | None = None, filesize: int = 0,
               compressed: bool = False) -> ImageRecord:
    """The index record of an image with this WCS and shape (ny, nx), for tests and benchmarks."""
    cards, crpix, tables = canonical_wcs(wcs)
    layout = Layout(shape=shape, wcs=wcs, wcs_cards=cards, crpix=crpix, carried="", ltv=(0.0, 0.0), ltm={},
                    tables=tables, compressed=compressed, bitpix=-32, scaling=(1.0, 0.0, None))
    return record_from_layout(layout, relpath, hdu, collection=collection, band=band, mjd=mjd, filesize=filesize)


# -- footprints ---------------------------------------------------------------------------


def _rim(nx: int, ny: int, per_edge: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates along the outer pixel edges, anticlockwise, ``per_edge`` per edge."""
    t = np.linspace(0.0, 1.0, per_edge + 1)[:-1]
    lo_x, hi_x, lo_y, hi_y = -0.5, nx - 0.5, -0.5, ny - 0.5
    xs = np.concatenate([lo_x + t * nx, np.full_like(t, hi_x), hi_x - t * nx, np.full_like(t, lo_x)])
    ys = np.concatenate([np.full_like(t, lo_y), lo_y + t * ny, np.full_like(t, hi_y), hi_y - t * ny])
    return xs, ys


def image_footprint(wcs: WCS, shape: tuple[int, int]) -> np.ndarray:
    """ICRS polygon (M, 2) along the outer pixel edges of an image, anticlockwise in pixels."""
    return footprint_of(Geometry(wcs, shape))[0]


def footprint_of(geometry: Geometry) -> tuple[np.ndarray, bool, np.ndarray | None]:
    """An image's footprint polygon, whether it is *wide*, and a wide image's coverage cells.

    An image is wide when any corner of its polygon is off the sky, when it is larger than
    `WIDE_RADIUS_DEG`, or when its edges stray from the polygon's straight (great-circle)
    sides by more than `EDGE_TOLERANCE_PX` (CAR, SIN, ZEA... images of some size, strong
    distortions). A wide image's footprint is its densified rim (the points on the sky);
    its coverage is the HEALPix cells that any of its pixels falls in, with their neighbours.
    """
    ny, nx = geometry.shape
    ra, dec = geometry.to_sky(*_rim(nx, ny, FOOTPRINT_PER_EDGE))
    polygon = np.column_stack([ra, dec])
    scale = float(np.mean(geometry.scales()))
    wide = not np.all(np.isfinite(polygon))
    if not wide:
        (ra0, dec0), radius = footprint_circle(polygon)
        wide = radius > WIDE_RADIUS_DEG or _strays(geometry, polygon, ra0, dec0, scale)
    if not wide:
        return polygon, False, None
    dra, ddec = geometry.to_sky(*_rim(nx, ny, DENSE_PER_EDGE))
    keep = np.isfinite(dra) & np.isfinite(ddec)
    if not keep.any():  # the whole rim is off the sky: stand for it by the centre
        dra, ddec = geometry.to_sky(np.array([(nx - 1) / 2]), np.array([(ny - 1) / 2]))
        keep = np.isfinite(dra) & np.isfinite(ddec)
        if not keep.any():
            raise ArchiveError("neither the rim nor the centre of the image is on the sky")
    return np.column_stack([dra[keep], ddec[keep]]), True, coverage_of(geometry, scale)


def _strays(geometry: Geometry, polygon: np.ndarray, ra0: float, dec0: float, scale: float) -> bool:
    """Whether the image's edges stray from the polygon's sides by more than `EDGE_TOLERANCE_PX`."""
    ny, nx = geometry.shape
    dra, ddec = geometry.to_sky(*_rim(nx, ny, DENSE_PER_EDGE))
    if not (np.all(np.isfinite(dra)) and np.all(np.isfinite(ddec))):
        return True
    px, py, cosc = to_plane(ra0, dec0, polygon[:, 0], polygon[:, 1])
    qx, qy, qc = to_plane(ra0, dec0, dra, ddec)
    if np.any(cosc <= 0.1) or np.any(qc <= 0.1):
        return True
    step = DENSE_PER_EDGE // FOOTPRINT_PER_EDGE
    side = np.arange(len(qx)) // step  # the polygon side each dense point lies on
    ax, ay = px[side], py[side]
    bx, by = np.roll(px, -1)[side], np.roll(py, -1)[side]
    length = np.hypot(bx - ax, by - ay)
    distance = np.abs((bx - ax) * (qy - ay) - (by - ay) * (qx - ax)) / np.where(length > 0, length, 1.0)
    return bool(np.max(distance) > EDGE_TOLERANCE_PX * scale)


def coverage_of(geometry: Geometry, scale_deg: float) -> np.ndarray:
    """The HEALPix cells (order `COVERAGE_ORDER`) holding any pixel of the image, and their neighbours."""
    ny, nx = geometry.shape
    cell = _COVERAGE.pixel_resolution.to_value("deg")
    step = max(1.0, cell / 3 / max(scale_deg, 1e-9))
    while (nx / step + 2) * (ny / step + 2) > _MAX_SAMPLES:
        step *= 1.5
    xs = np.unique(np.append(np.arange(-0.5, nx - 0.5, step), nx - 0.5))
    ys = np.unique(np.append(np.arange(-0.5, ny - 0.5, step), ny - 0.5))
    gx, gy = np.meshgrid(xs, ys)
    ra, dec = geometry.to_sky(gx.ravel(), gy.ravel())
    keep = np.isfinite(ra) & np.isfinite(dec)
    if not keep.any():
        return np.zeros(0, np.int64)
    import astropy.units as u

    cells = np.unique(_COVERAGE.lonlat_to_healpix(ra[keep] * u.deg, dec[keep] * u.deg))
    neighbours = _COVERAGE.neighbours(cells).ravel()
    return np.unique(np.concatenate([cells, neighbours[neighbours >= 0]])).astype(np.int64)


# -- observation metadata -----------------------------------------------------------------


def _get(key: str, header: fits.Header, primary: fits.Header | None) -> object:
    """A card's value from the image header, else from the primary header; None when absent or blank."""
    for h in (header, primary):
        if h is not None and key in h:
            value = h[key]
            if isinstance(value, str):
                value = value.strip()
            if value not in ("", None) and not isinstance(value, fits.card.Undefined):
                return value
    return None


def _text(key: str, header: fits.Header, primary: fits.Header | None) -> str | None:
    value = _get(key, header, primary)
    return None if value is None else str(value).strip() or None


def _float(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _date_mjd(text: object, time_of_day: object = None) -> float | None:
    if text is None:
        return None
    text = str(text).strip()
    if time_of_day and "T" not in text and len(text) <= 10:
        text = f"{text}T{str(time_of_day).strip()}"
    if re.match(r"^\d\d/\d\d/\d\d$", text):  # the old DD/MM/YY form
        day, month, year = text.split("/")
        text = f"19{year}-{month}-{day}"
    try:
        return float(Time(text, scale="utc").mjd)
    except (ValueError, TypeError):
        return None


def observation(header: fits.Header, primary: fits.Header | None = None) -> dict:
    """The observation fields of `ImageRecord` (band, times, instrument...) from an HDU's header and its primary."""
    get = lambda key: _get(key, header, primary)  # noqa: E731
    band, em = band_of(header, primary)
    exptime = next((v for v in (_float(get(k)) for k in ("EXPTIME", "EXPOSURE", "TEXPTIME", "ITIME", "EXPOSED",
                                                        "TELAPSE")) if v is not None), None)
    start = _float(get("MJD-OBS"))
    if start is None:
        start = _float(get("MJD-BEG"))
    if start is None:
        start = _float(get("EXPSTART"))  # HST
    if start is None:
        start = _date_mjd(get("DATE-OBS"), get("TIME-OBS") or get("UT") or get("UTSTART"))
    if start is None:
        start = _date_mjd(get("DATE-BEG"))
    end = _float(get("MJD-END"))
    if end is None:
        end = _float(get("EXPEND"))
    if end is None:
        end = _date_mjd(get("DATE-END"))
    if end is None and start is not None and exptime is not None:
        end = start + exptime / 86400.0
    equinox = _float(get("EQUINOX"))
    if equinox is None:
        equinox = _float(get("EPOCH"))
    return {"band": band, "mjd": start, "t_min": start, "t_max": end, "exptime": exptime,
            "instrument": _text("INSTRUME", header, primary),
            "facility": _text("TELESCOP", header, primary) or _text("OBSERVAT", header, primary),
            "target": _text("OBJECT", header, primary), "equinox": equinox,
            "em_min": em[0] if em else None, "em_max": em[1] if em else None}


#: Bands by name: (effective wavelength, lower, upper limit), metres. Lower case: SDSS-like
#: (also DECam, Pan-STARRS, LSST g r i z y); upper case: Johnson-Cousins U B V R I and the near infrared.
BANDPASSES: dict[str, tuple[float, float, float]] = {
    "u": (3.55e-7, 3.25e-7, 3.85e-7), "g": (4.77e-7, 4.05e-7, 5.50e-7), "r": (6.23e-7, 5.62e-7, 6.95e-7),
    "i": (7.63e-7, 6.95e-7, 8.44e-7), "z": (9.13e-7, 8.26e-7, 1.0e-6), "y": (1.0e-6, 9.4e-7, 1.06e-6),
    "U": (3.65e-7, 3.3e-7, 4.0e-7), "B": (4.45e-7, 3.9e-7, 5.0e-7), "V": (5.51e-7, 5.0e-7, 6.0e-7),
    "R": (6.58e-7, 5.7e-7, 7.5e-7), "I": (8.06e-7, 7.2e-7, 8.9e-7), "Y": (1.02e-6, 9.7e-7, 1.07e-6),
    "J": (1.25e-6, 1.1e-6, 1.4e-6), "H": (1.65e-6, 1.5e-6, 1.8e-6), "K": (2.2e-6, 2.0e-6, 2.4e-6),
    "Ks": (2.15e-6, 1.99e-6, 2.31e-6), "VR": (6.3e-7, 4.9e-7, 7.6e-7),
}
_HST = re.compile(r"^F(\d{3,4})(W|M|N|LP|X)$", re.IGNORECASE)
_WIDTHS = {"W": 0.25, "M": 0.1, "N": 0.02, "LP": 0.5, "X": 0.5}
_C = 299_792_458.0


def bandpass(band: str) -> tuple[float, float, float] | None:
    """(effective wavelength, lower, upper limit) in metres of a band name, where known.

    Names are case-sensitive where the photometric systems differ (``r``: SDSS, ``R``:
    Cousins); HST filter names (F814W) give their central wavelength and nominal width.
    """
    if band in BANDPASSES:
        return BANDPASSES[band]
    match = _HST.match(band)
    if match:
        digits, kind = match.group(1), match.group(2).upper()
        centre = float(digits) * (1e-8 if len(digits) == 3 and int(digits) < 200 else 1e-9)
        if len(digits) == 4:
            centre = float(digits) * 1e-9
        half = centre * _WIDTHS[kind] / 2
        return centre, centre - half, centre + half
    return None


def band_of(header: fits.Header, primary: fits.Header | None = None) -> tuple[str, tuple[float, float] | None]:
    """The band name of an image and its wavelength interval (metres), where known.

    FILTER (or BAND, FILTNAM1, HST's FILTER1/FILTER2 without CLEAR) names the band; a long
    name whose first word is a known band (DECam: ``r DECam SDSS c0002 6430.0 1450.0``) is cut
    to that word, and its wavelengths in Angstrom are read when the name gives them. A radio
    image with a frequency axis gets its frequency interval as wavelengths.
    """
    name = None
    for key in ("FILTER", "BAND", "FILTNAM1", "FILTNAME", "WAVEBAND"):
        value = _text(key, header, primary)
        if value and not value.upper().startswith("CLEAR"):
            name = value
            break
    if name is None:
        for key in ("FILTER1", "FILTER2"):  # HST ACS: one of the two wheels is CLEAR
            value = _text(key, header, primary)
            if value and not value.upper().startswith("CLEAR"):
                name = value
                break
    em = None
    if name is not None:
        words = name.split()
        if len(words) > 1 and (words[0] in BANDPASSES or _HST.match(words[0])):
            numbers = [_float(w) for w in words[1:] if _float(w) is not None]
            if len(numbers) >= 2 and 1000 < numbers[-2] < 30000 and 0 < numbers[-1] < numbers[-2]:
                centre, width = numbers[-2] * 1e-10, numbers[-1] * 1e-10  # DECam: centre and width in Angstrom
                em = (centre - width / 2, centre + width / 2)
            name = words[0]
        known = bandpass(name)
        if em is None and known:
            em = (known[1], known[2])
        return name, em
    for k in range(3, 5):  # a radio image's degenerate frequency axis
        ctype = str(header.get(f"CTYPE{k}", "")).upper()
        if ctype.startswith("FREQ"):
            nu, dnu = _float(header.get(f"CRVAL{k}")), abs(_float(header.get(f"CDELT{k}")) or 0.0)
            if nu:
                lo, hi = nu + dnu / 2, max(nu - dnu / 2, nu * 1e-3)
                return f"{nu / 1e9:g}GHz", (_C / lo, _C / hi)
    return "unknown", None


def _collection(header: fits.Header, primary: fits.Header | None, relpath: str) -> str:
    for key in ("SURVEY", "COLLECT"):
        value = _text(key, header, primary)
        if value:
            return value
    if "/" in relpath:
        return relpath.split("/", 1)[0]
    return _text("TELESCOP", header, primary) or "archive"


def scan_chunk(root: str, relpaths: list[str]) -> list[FileScan]:
    """Scan some files (a worker process's share of an index run)."""
    return [scan_file(root, rel) for rel in relpaths]
