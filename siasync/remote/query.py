"""Asking a remote which images lie in a sky region: SIA 2.0 and SIAP 1.0 through pyvo (or astroquery).

One query is one attempt (`siasync.remote.faults.retrying` tries again); it blocks, so the
server runs it in a thread. Each row of the answer becomes a `RemoteImage`:

* **SIA 2.0** (`pyvo.dal.SIA2Service`, or astroquery's ``Irsa.query_sia`` for IRSA): only
  rows of ``dataproduct_type`` image whose ``access_format`` is FITS or a DataLink document;
  the id comes from ``obs_publisher_did`` (else the access URL); the footprint from
  ``s_region``, else ``s_ra``, ``s_dec`` and ``s_fov``; the band from a ``band`` column where
  the service has one (siasync's), else the collection's ``band``, else ``unknown``.
* **SIAP 1.0** (`pyvo.dal.SIAService`, VERB=2, FORMAT=image/fits): the id comes from the
  access reference, the footprint from the row's WCS (or its centre, size and scale), the
  band from ``VOX:BandPass_ID``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import numpy as np

from siasync.remote.config import RemoteSpec
from siasync.remote.faults import RemoteError, TimeoutSession
from siasync.remote.images import RemoteImage, circle_polygon, digest, make_id, region_footprint, wcs_footprint

_FITS = ("application/fits", "image/fits", "application/x-fits", "image/x-fits")
_DATALINK = "content=datalink"


def query(spec: RemoteSpec, ra: float, dec: float, radius: float) -> list[RemoteImage]:
    """The remote's images meeting the circle (ICRS degrees) of one query.

    Raises
    ------
    RemoteError, pyvo.dal.DALServiceError, pyvo.dal.DALQueryError, requests.RequestException
        What went wrong (`siasync.remote.faults.classify` says whether to try again).
    """
    with warnings.catch_warnings():  # pyvo's warnings on the remote's documents: noise in our log
        warnings.simplefilter("ignore")
        return _query(spec, ra, dec, radius)


def _query(spec: RemoteSpec, ra: float, dec: float, radius: float) -> list[RemoteImage]:
    if spec.protocol == "sia2":
        rows = _sia2_rows(spec, ra, dec, radius)
        return _unique(image for row in rows if (image := sia2_image(spec, row)) is not None)
    if spec.protocol == "siap":
        from pyvo.dal import SIAService

        service = SIAService(spec.url, session=TimeoutSession(spec.timeout_s))
        side = 2 * radius
        results = service.search(pos=(ra, dec), size=(side, side), format="image/fits", intersect="overlaps",
                                 verbosity=2, maxrec=spec.maxrec, **dict(spec.params))
        return _unique(image for record in results if (image := siap_image(spec, record)) is not None)
    raise RemoteError(f"a {spec.protocol} collection is not queried", retryable=False)


def _sia2_rows(spec: RemoteSpec, ra: float, dec: float, radius: float) -> Iterable[Any]:
    collections = list(spec.remote_collections) or None
    if spec.client == "astroquery.ipac.irsa":
        import astropy.units as u
        from astropy.coordinates import SkyCoord

        irsa = _irsa(TimeoutSession(spec.timeout_s))
        irsa.sia_url = spec.url
        table = irsa.query_sia(pos=(SkyCoord(ra, dec, unit="deg"), radius * u.deg), collection=collections,
                               maxrec=spec.maxrec, **dict(spec.params))
        return [_TableRow(row) for row in table]
    from pyvo.dal import SIA2Service

    service = SIA2Service(_sia2_endpoint(spec.url, spec.timeout_s), session=TimeoutSession(spec.timeout_s),
                          check_baseurl=False)
    return list(service.search(pos=(ra, dec, radius), collection=collections, maxrec=spec.maxrec,
                               **dict(spec.params)))


@lru_cache(maxsize=64)
def _sia2_endpoint(url: str, timeout: float) -> str:
    """A SIA 2.0 service's query endpoint, from its capabilities (read once per service, not per query)."""
    from pyvo.dal import SIA2Service

    return SIA2Service(url, session=TimeoutSession(timeout)).query_ep


def _irsa(session: TimeoutSession) -> Any:
    """astroquery's IRSA client on a session of ours (with its timeout): astroquery keeps a session already set."""
    from astroquery.ipac.irsa import IrsaClass

    class Irsa(IrsaClass):
        def __init__(self) -> None:
            self._session = session
            super().__init__()

    return Irsa()


class _TableRow:
    """A row of an astropy Table, read like a pyvo record: ``get(name)`` is None for a missing or masked value."""

    def __init__(self, row: Any) -> None:
        self._row = row

    def get(self, name: str, default: Any = None, decode: bool = False) -> Any:
        if name not in self._row.colnames:
            return default
        value = self._row[name]
        return default if np.ma.is_masked(value) else value


def _value(row: Any, name: str) -> Any:
    """A column's value as plain Python (None when missing, masked or NaN)."""
    try:
        return _plain(row.get(name))
    except (KeyError, ValueError):
        return None


def _plain(value: Any) -> Any:
    """A cell as plain Python: None when masked, NaN or empty; bytes decoded and text stripped."""
    if value is None or np.ma.is_masked(value):
        return None
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, np.ma.MaskedArray):
        value = value.data
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str):
        return value.strip() or None
    return value


def _number(row: Any, name: str) -> float | None:
    value = _value(row, name)
    if value is None or isinstance(value, (str, bool)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def sia2_image(spec: RemoteSpec, row: Any) -> RemoteImage | None:
    """The remote image of a SIA 2.0 (ObsCore) row; None for a row that is not a FITS image placed on the sky."""
    kind = _value(row, "dataproduct_type")
    url = _value(row, "access_url")
    fmt = (_value(row, "access_format") or "").lower()
    if (kind is not None and str(kind).lower() != "image") or not url:
        return None
    datalink = _DATALINK in fmt.replace(" ", "")
    if not datalink and fmt and not fmt.startswith(_FITS):
        return None
    footprint = region_footprint(_raw(row, "s_region"))
    if footprint is None:
        ra, dec, fov = _number(row, "s_ra"), _number(row, "s_dec"), _number(row, "s_fov")
        if ra is None or dec is None or not fov:
            return None
        footprint = circle_polygon(ra % 360.0, dec, fov / 2)
    did = _value(row, "obs_publisher_did")
    identity = str(did or url)
    label = str(_value(row, "obs_id") or identity.rsplit("?", 1)[-1].rsplit("/", 1)[-1])
    scale = _number(row, "s_pixel_scale")
    if scale is None:
        fov, nx, ny = _number(row, "s_fov"), _number(row, "s_xel1"), _number(row, "s_xel2")
        scale = fov * 3600 / max(nx, ny) if fov and nx and ny else None
    em_min, em_max = _number(row, "em_min"), _number(row, "em_max")
    size = _number(row, "access_estsize")
    band = spec.band or _value(row, "band") or "unknown"
    return RemoteImage(
        id=make_id(spec.name, label, identity), remote=spec.name, band=str(band),
        title=str(_value(row, "obs_title") or label), footprint=_points(footprint), url=str(url), datalink=datalink,
        key=digest("sia2", spec.url, identity), did=str(did) if did else None, mjd=_number(row, "t_min"),
        scale_arcsec=scale, size=int(size * 1000) if size else None,
        em=(em_min, em_max) if em_min is not None and em_max is not None and em_max > em_min else None,
        instrument=_text(row, "instrument_name"), facility=_text(row, "facility_name"),
        target=_text(row, "target_name"))


def siap_image(spec: RemoteSpec, record: Any) -> RemoteImage | None:
    """The remote image of a SIAP 1.0 row (a pyvo `SIARecord`); None for a row that is not a FITS image."""
    url = _ucd(record, "VOX:Image_AccessReference")
    fmt = str(_ucd(record, "VOX:Image_Format") or "").lower()
    if not url or (fmt and not fmt.startswith(_FITS)):
        return None
    naxis = _ucd(record, "VOX:Image_Naxis")
    scale = _ucd(record, "VOX:Image_Scale")
    crpix, crval = _ucd(record, "VOX:WCS_CoordRefPixel"), _ucd(record, "VOX:WCS_CoordRefValue")
    cd, projection = _ucd(record, "VOX:WCS_CDMatrix"), _ucd(record, "VOX:WCS_CoordProjection")
    ra, dec = _ucd(record, "POS_EQ_RA_MAIN"), _ucd(record, "POS_EQ_DEC_MAIN")
    try:
        naxis = [int(n) for n in np.ravel(naxis)][:2] if naxis is not None else None
        if naxis and crpix is not None and crval is not None and cd is not None:
            footprint = wcs_footprint(np.ravel(crpix), np.ravel(crval), np.ravel(cd), naxis, str(projection or "TAN"))
        elif naxis and scale is not None and ra is not None and dec is not None:
            scales = np.abs(np.ravel(scale).astype(float))
            side = float(max(naxis[0] * scales[0], naxis[-1] * scales[-1]))
            footprint = circle_polygon(float(ra) % 360.0, float(dec), side / math.sqrt(2))
        else:
            return None
    except (TypeError, ValueError):
        return None
    title = str(_ucd(record, "VOX:Image_Title") or url)
    band = spec.band or _ucd(record, "VOX:BandPass_ID") or "unknown"
    mjd = _ucd(record, "VOX:Image_MJDateObs")
    size = _ucd(record, "VOX:Image_FileSize")
    pixel = float(np.abs(np.ravel(scale).astype(float)).mean()) * 3600 if scale is not None else None
    return RemoteImage(
        id=make_id(spec.name, title, str(url)), remote=spec.name, band=str(band), title=title,
        footprint=_points(footprint), url=str(url), key=digest("siap", spec.url, url),
        mjd=float(mjd) if mjd is not None else None, scale_arcsec=pixel,
        size=int(size) if size is not None else None, instrument=_text_ucd(record, "INST_ID"))


def _ucd(record: Any, ucd: str) -> Any:
    """The value of the column with this UCD (None when absent, masked or empty)."""
    try:
        return _plain(record.getbyucd(ucd))
    except (KeyError, ValueError):
        return None


def _text_ucd(record: Any, ucd: str) -> str | None:
    value = _ucd(record, ucd)
    return str(value) if value is not None else None


def _raw(row: Any, name: str) -> Any:
    try:
        return row.get(name)
    except (KeyError, ValueError):
        return None


def _text(row: Any, name: str) -> str | None:
    value = _value(row, name)
    return str(value) if value is not None else None


def _points(footprint: np.ndarray) -> tuple[tuple[float, float], ...]:
    return tuple((float(ra), float(dec)) for ra, dec in footprint)


def _unique(images: Iterable[RemoteImage]) -> list[RemoteImage]:
    """The images, each id once, in the order of the answer."""
    return list({image.id: image for image in images}.values())
