"""SIAP 1.0 metadata of a product: the values of one row of a SIAP query response.

`COLUMNS` declares the response's columns once (name, UCD, datatype, array size,
unit). `cutout_metadata` computes a cutout's row from the index record of its parent and
the cutout's pixel rectangle alone: no file is opened, so ``/sia`` and a job's ``table``
describe a cutout the same way, at the cost of a few WCS evaluations per row.
`generated_metadata` describes a mosaic or stack from its grid.

**PixFlags** (SIAP 1.0, VOX:Image_PixFlags): ``C`` pixels copied from the parent
(cutouts); ``F`` resampled through an interpolator (mosaics and stacks, with ``Z`` too
when the resampling conserves flux); ``V`` a visualisation, for display only (every PNG
and JPEG preview).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales, wcs_to_celestial_frame

from cutout.geometry import Geometry
from cutout.scan import ImageRecord, bandpass
from cutout.sky import Field


@dataclass(frozen=True)
class Column:
    """One column of the SIAP table."""

    name: str
    ucd: str | None
    datatype: str
    arraysize: str | None = None
    unit: str | None = None
    description: str = ""


COLUMNS: tuple[Column, ...] = (
    Column("title", "VOX:Image_Title", "char", "*", None, "product title"),
    Column("ra", "POS_EQ_RA_MAIN", "double", None, "deg", "ICRS RA of the product centre"),
    Column("dec", "POS_EQ_DEC_MAIN", "double", None, "deg", "ICRS Dec of the product centre"),
    Column("naxes", "VOX:Image_Naxes", "int", None, None, "number of image axes"),
    Column("naxis", "VOX:Image_Naxis", "int", "*", None, "pixels along each axis"),
    Column("scale", "VOX:Image_Scale", "double", "*", "deg", "pixel scale along each axis"),
    Column("format", "VOX:Image_Format", "char", "*", None, "MIME type of the product"),
    Column("access_url", "VOX:Image_AccessReference", "char", "*", None, "URL of the product"),
    Column("pixflags", "VOX:Image_PixFlags", "char", "*", None,
           "C: pixels copied from the parent; F: resampled by an interpolator (mosaics, stacks); "
           "Z: flux conserved; V: a visualisation (previews)"),
    Column("coord_frame", "VOX:STC_CoordRefFrame", "char", "*", None,
           "celestial frame of the product's WCS: ICRS, FK5, FK4, ECL, GAL or SGAL"),
    Column("equinox", "VOX:STC_CoordEquinox", "double", None, "yr",
           "equinox of the frame (Julian for FK5, Besselian for FK4); empty for frames without one"),
    Column("projection", "VOX:WCS_CoordProjection", "char", "*", None, "WCS projection code"),
    Column("crpix", "VOX:WCS_CoordRefPixel", "double", "*", "pix", "reference pixel (1-based)"),
    Column("crval", "VOX:WCS_CoordRefValue", "double", "*", "deg", "reference value"),
    Column("cd", "VOX:WCS_CDMatrix", "double", "*", "deg", "CD matrix, row by row"),
    Column("bandpass_id", "VOX:BandPass_ID", "char", "*", None, "band"),
    Column("bandpass_unit", "VOX:BandPass_Unit", "char", "*", None, "unit of the bandpass values"),
    Column("bandpass_refvalue", "VOX:BandPass_RefValue", "double", None, "m", "effective wavelength"),
    Column("bandpass_hilimit", "VOX:BandPass_HiLimit", "double", None, "m", "upper wavelength limit"),
    Column("bandpass_lolimit", "VOX:BandPass_LoLimit", "double", None, "m", "lower wavelength limit"),
    Column("mjd_obs", "VOX:Image_MJDateObs", "double", None, "d", "MJD of the observation"),
    Column("filesize", "VOX:Image_FileSize", "long", None, "byte", "size of the product file"),
    Column("instrument", "INST_ID", "char", "*", None, "instrument"),
    Column("collection", "meta.id", "char", "*", None, "collection of the parent"),
    Column("parent_id", "meta.id;meta.dataset", "char", "*", None, "archive id of the parent image"),
    Column("field", "meta.id;obs.field", "int", None, None, "index of the POS in the request"),
    Column("field_ra", "pos.eq.ra", "double", None, "deg", "RA of the requested POS"),
    Column("field_dec", "pos.eq.dec", "double", None, "deg", "Dec of the requested POS"),
    Column("result_id", "meta.id;meta.main", "char", "*", None, "UWS result id"),
)

#: SIAP 1.0 names of astropy's celestial frames (VOX:STC_CoordRefFrame)
FRAME_NAMES = {"icrs": "ICRS", "fk5": "FK5", "fk4": "FK4", "fk4noeterms": "FK4", "galactic": "GAL",
               "supergalactic": "SGAL", "geocentricmeanecliptic": "ECL", "barycentricmeanecliptic": "ECL",
               "heliocentricmeanecliptic": "ECL", "geocentrictrueecliptic": "ECL", "barycentrictrueecliptic": "ECL",
               "heliocentrictrueecliptic": "ECL", "heliocentriceclipticiau76": "ECL",
               "custombarycentricecliptic": "ECL"}


def frame_name(frame: str) -> str:
    """The SIAP 1.0 name of an astropy frame name."""
    return FRAME_NAMES.get(frame.lower(), frame.upper())


def frame_equinox(frame: object) -> float | None:
    """The equinox of an astropy frame as a year (Besselian for FK4, Julian otherwise); None if it has none."""
    equinox = getattr(frame, "equinox", None)
    if equinox is None:
        return None
    name = getattr(frame, "name", "")
    return float(equinox.byear if name.startswith("fk4") else equinox.jyear)


def band_order(bands: Iterable[str]) -> list[str]:
    """Bands from blue to red: known bands by wavelength, then the others by name."""
    def key(b: str) -> tuple[float, str]:
        known = bandpass(b)
        return (known[0] if known else math.inf, b)

    return sorted(bands, key=key)


def pixflags(mime: str, resampled: bool = False, flux: bool = False) -> str:
    """VOX:Image_PixFlags of a product (see the module docstring)."""
    if mime != "image/fits":
        return "V"
    return ("F" + ("Z" if flux else "")) if resampled else "C"


#: the columns of a cutout's row that change from one cutout of an image to another
CUTOUT_VARIABLES = ("title", "ra", "dec", "naxis", "crpix", "filesize", "field", "field_ra", "field_dec",
                    "result_id", "access_url")


def cutout_constants(record: ImageRecord, geometry: Geometry, mime: str) -> dict[str, Any]:
    """The values of a cutout's row that are the same for every cutout of ``record`` in ``mime``."""
    wcs = geometry.wcs
    known = bandpass(record.band)
    em = (record.em_min, record.em_max) if record.em_min is not None else None
    return {
        "naxes": 2, "scale": [float(v) for v in geometry.scales()], "format": mime, "pixflags": pixflags(mime),
        "coord_frame": frame_name(record.frame), "equinox": frame_equinox(geometry.frame),
        "projection": wcs.wcs.ctype[0][5:8], "crval": [float(v) for v in wcs.wcs.crval],
        "cd": [float(v) for v in geometry.cd().ravel()], "bandpass_id": record.band,
        "bandpass_unit": "m" if em else None,
        "bandpass_refvalue": (known[0] if known else (em[0] + em[1]) / 2) if em else None,
        "bandpass_lolimit": em[0] if em else None, "bandpass_hilimit": em[1] if em else None,
        "mjd_obs": record.mjd, "instrument": record.instrument, "collection": record.collection,
        "parent_id": record.id,
    }


def cutout_variables(record: ImageRecord, geometry: Geometry, box: tuple[int, int, int, int], field: Field,
                     field_index: int, mime: str, filesize: int | None, result_id: str | None) -> dict[str, Any]:
    """The values of a cutout's row that depend on the cutout (`CUTOUT_VARIABLES` but the access URL)."""
    y0, y1, x0, x1 = box
    ny, nx = y1 - y0, x1 - x0
    if (ny, nx) == geometry.shape:  # the whole image (SIZE=0, or an image inside the field)
        ra, dec = geometry.centre()
    else:
        ras, decs = geometry.to_sky(np.array([x0 + (nx - 1) / 2]), np.array([y0 + (ny - 1) / 2]))
        ra, dec = float(ras[0]), float(decs[0])
    crpix = geometry.crpix
    if filesize is None and mime == "image/fits":
        filesize = record.cutout_filesize((ny, nx))
    return {"title": f"{record.collection} {record.band} {record.id} field {field_index}", "ra": ra,
            "dec": dec, "naxis": [nx, ny], "crpix": [float(crpix[0] - x0), float(crpix[1] - y0)],
            "filesize": filesize, "field": field_index, "field_ra": field.ra, "field_dec": field.dec,
            "result_id": result_id}


def cutout_metadata(record: ImageRecord, geometry: Geometry, box: tuple[int, int, int, int], field: Field,
                    field_index: int, mime: str, filesize: int | None, result_id: str | None) -> dict[str, Any]:
    """The SIAP row values of the cutout ``box`` (y0, y1, x0, x1) of ``record`` for ``field``.

    ``geometry`` is the record's (`cutout.index.ArchiveIndex.geometry`); nothing is read
    from the file. For FITS, ``filesize`` None is the size the cutout's file will have.
    The access URL is left out: it depends on where the service is reached.
    """
    return {**cutout_constants(record, geometry, mime),
            **cutout_variables(record, geometry, box, field, field_index, mime, filesize, result_id)}


def generated_metadata(header: fits.Header, shape: tuple[int, int], records: Sequence[ImageRecord], field: Field,
                       field_index: int, mime: str, filesize: int | None, result_id: str | None,
                       flux: bool = False) -> dict[str, Any]:
    """The SIAP row values of a mosaic or stack of ``records`` (the inputs) on the grid of ``header``.

    The pixels are resampled (PixFlags ``F``, ``FZ`` when ``flux`` is conserved), and a
    preview is a visualisation (``V``). The bands and the parent ids list every input; the
    bandpass spans them all, and the MJD is their mean.
    """
    bands = band_order({r.band for r in records})
    limits = [(r.em_min, r.em_max) for r in records if r.em_min is not None]
    bandpass_ = None
    if limits and len(limits) == len(records):
        known = bandpass(bands[0]) if len(bands) == 1 else None
        lo, hi = min(lo for lo, _ in limits), max(hi for _, hi in limits)
        bandpass_ = (known[0] if known else (lo + hi) / 2, lo, hi)
    mjds = [r.mjd for r in records if r.mjd is not None]
    collections = ",".join(sorted({r.collection for r in records}))
    kind = "stack" if len(bands) > 1 else "mosaic"
    instruments = sorted({r.instrument for r in records if r.instrument})
    return _row(header, shape, field, field_index, mime, filesize, result_id,
                title=f"{collections} {','.join(bands)} {kind} of {len(records)} images field {field_index}",
                pixflags=pixflags(mime, resampled=True, flux=flux), band=",".join(bands), bandpass=bandpass_,
                mjd=float(np.mean(mjds)) if mjds else None, collection=collections,
                parent_id=",".join(r.id for r in records), instrument=",".join(instruments) or None)


def _row(header: fits.Header, shape: tuple[int, int], field: Field, field_index: int, mime: str,
         filesize: int | None, result_id: str | None, *, title: str, pixflags: str, band: str,
         bandpass: tuple[float | None, float, float] | None, mjd: float | None, collection: str,
         parent_id: str, instrument: str | None) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        wcs = WCS(header).celestial
    ny, nx = shape
    centre = wcs.pixel_to_world((nx - 1) / 2, (ny - 1) / 2).icrs
    frame = wcs_to_celestial_frame(wcs)
    scales = proj_plane_pixel_scales(wcs)  # along each axis, rotated or not
    return {
        "title": title, "ra": float(centre.ra.deg), "dec": float(centre.dec.deg), "naxes": 2, "naxis": [nx, ny],
        "scale": [float(s) for s in scales], "format": mime, "pixflags": pixflags,
        "coord_frame": frame_name(frame.name), "equinox": frame_equinox(frame),
        "projection": wcs.wcs.ctype[0][5:8], "crpix": [float(v) for v in wcs.wcs.crpix],
        "crval": [float(v) for v in wcs.wcs.crval], "cd": [float(v) for v in wcs.pixel_scale_matrix.ravel()],
        "bandpass_id": band, "bandpass_unit": "m" if bandpass else None,
        "bandpass_refvalue": bandpass[0] if bandpass else None, "bandpass_lolimit": bandpass[1] if bandpass else None,
        "bandpass_hilimit": bandpass[2] if bandpass else None, "mjd_obs": mjd, "filesize": filesize,
        "instrument": instrument, "collection": collection,
        "parent_id": parent_id, "field": field_index, "field_ra": field.ra, "field_dec": field.dec,
        "result_id": result_id,
    }
