"""SIAP 1.0 metadata of a product: the values of one row of a SIAP query response.

`COLUMNS` declares the response's columns once (name, UCD, datatype, array size,
unit); `product_metadata` computes a row's values from a cutout's header, and the
table writers render them.
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

from cutout.scan import ImageRecord
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
           "C: pixels copied from the parent; F: resampled (mosaics, stacks); V: a visualisation"),
    Column("coord_frame", "VOX:STC_CoordRefFrame", "char", "*", None, "celestial frame"),
    Column("equinox", "VOX:STC_CoordEquinox", "double", None, "yr", "equinox"),
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
    Column("collection", "meta.id;obs.collection", "char", "*", None, "collection of the parent"),
    Column("parent_id", "meta.id;meta.dataset", "char", "*", None, "archive id of the parent image"),
    Column("field", "meta.id;obs.field", "int", None, None, "index of the POS in the request"),
    Column("field_ra", "pos.eq.ra", "double", None, "deg", "RA of the requested POS"),
    Column("field_dec", "pos.eq.dec", "double", None, "deg", "Dec of the requested POS"),
    Column("result_id", "meta.id", "char", "*", None, "UWS result id"),
)

#: Effective wavelength and FWHM limits (metres) of common optical bands (SDSS-like).
BANDPASSES: dict[str, tuple[float, float, float]] = {
    "u": (3.55e-7, 3.25e-7, 3.85e-7), "g": (4.77e-7, 4.05e-7, 5.50e-7), "r": (6.23e-7, 5.62e-7, 6.95e-7),
    "i": (7.63e-7, 6.95e-7, 8.44e-7), "z": (9.13e-7, 8.26e-7, 1.0e-6),
}


def band_order(bands: Iterable[str]) -> list[str]:
    """Bands from blue to red: known bands by wavelength, then the others by name."""
    return sorted(bands, key=lambda b: (BANDPASSES[b.lower()][0] if b.lower() in BANDPASSES else math.inf, b))


def product_metadata(header: fits.Header, shape: tuple[int, int], record: ImageRecord, field: Field,
                     field_index: int, mime: str, filesize: int | None, result_id: str | None) -> dict[str, Any]:
    """The SIAP row values of one product cut from ``record`` for ``field``.

    The access URL is left out: it depends on where the service is reached.
    """
    band = BANDPASSES.get(record.band.lower())
    return _row(header, shape, field, field_index, mime, filesize, result_id,
                title=f"{record.collection} {record.band} {record.id} field {field_index}", pixflags="C",
                band=record.band, bandpass=band, mjd=record.mjd, collection=record.collection, parent_id=record.id)


def generated_metadata(header: fits.Header, shape: tuple[int, int], records: Sequence[ImageRecord], field: Field,
                       field_index: int, mime: str, filesize: int | None, result_id: str | None) -> dict[str, Any]:
    """The SIAP row values of a mosaic or stack of ``records`` (the inputs) on the grid of ``header``.

    The pixels are resampled (PixFlags ``F``), and a preview is a visualisation (``FV``).
    The bands and the parent ids list every input; the bandpass spans them all, and the
    MJD is their mean.
    """
    bands = band_order({r.band for r in records})
    known = [BANDPASSES[b.lower()] for b in bands if b.lower() in BANDPASSES]
    bandpass = None
    if known and len(known) == len(bands):
        bandpass = (known[0][0] if len(known) == 1 else None, min(k[1] for k in known), max(k[2] for k in known))
    mjds = [r.mjd for r in records if r.mjd is not None]
    collections = ",".join(sorted({r.collection for r in records}))
    kind = "stack" if len(bands) > 1 else "mosaic"
    return _row(header, shape, field, field_index, mime, filesize, result_id,
                title=f"{collections} {','.join(bands)} {kind} of {len(records)} images field {field_index}",
                pixflags="F" if mime == "image/fits" else "FV", band=",".join(bands), bandpass=bandpass,
                mjd=float(np.mean(mjds)) if mjds else None, collection=collections,
                parent_id=",".join(r.id for r in records))


def _row(header: fits.Header, shape: tuple[int, int], field: Field, field_index: int, mime: str,
         filesize: int | None, result_id: str | None, *, title: str, pixflags: str, band: str,
         bandpass: tuple[float | None, float, float] | None, mjd: float | None, collection: str,
         parent_id: str) -> dict[str, Any]:
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
        "coord_frame": frame.name.upper(), "equinox": float(header.get("EQUINOX", 2000.0)),
        "projection": wcs.wcs.ctype[0][5:8], "crpix": [float(v) for v in wcs.wcs.crpix],
        "crval": [float(v) for v in wcs.wcs.crval], "cd": [float(v) for v in wcs.pixel_scale_matrix.ravel()],
        "bandpass_id": band, "bandpass_unit": "m" if bandpass else None,
        "bandpass_refvalue": bandpass[0] if bandpass else None, "bandpass_lolimit": bandpass[1] if bandpass else None,
        "bandpass_hilimit": bandpass[2] if bandpass else None, "mjd_obs": mjd, "filesize": filesize,
        "instrument": str(header.get("INSTRUME", "")).strip() or None, "collection": collection,
        "parent_id": parent_id, "field": field_index, "field_ra": field.ra, "field_dec": field.dec,
        "result_id": result_id,
    }
