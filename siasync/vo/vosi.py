"""VOSI 1.0: the capabilities and availability documents.

``/capabilities`` (VOSICapabilities 1.0, with VOResource 1.1, VODataService 1.1 and the
SIA 1.1 registry extension) lists the SIAP 1.0 query at ``/sia``, the UWS 1.1 job list at
``/async``, SIA 2.0 at ``/sia2/query``, DataLink at ``/datalink``, SODA at ``/soda/sync``
and ``/soda/async``, and these two VOSI endpoints. ``/availability`` (VOSIAvailability 1.0) says
whether the archive can be read, and since when the service is up.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cutout.fitsio import BLOCK
from cutout.index import ArchiveIndex
from cutout.sky import footprint_circle
from siasync.uws.params import Limits
from siasync.vo.sia_votable import InputParam
from storage.table import MIME as VOTABLE
from storage.table import escape, quoteattr

SIA_STANDARD = "ivo://ivoa.net/std/SIA"
#: UWS 1.1 has no registry extension of its own. The IVOA's standard record for UWS
#: (ivo://ivoa.net/std/UWS) names its REST binding per version, and UWS servers register
#: their job lists under ``#rest-1.1`` in practice (OPUS, for one). The async endpoints of
#: TAP or SODA have standardIDs of their own, but /async is neither, so those would mislead.
UWS_STANDARD = "ivo://ivoa.net/std/UWS#rest-1.1"
VOSI_CAPABILITIES = "ivo://ivoa.net/std/VOSI#capabilities"
VOSI_AVAILABILITY = "ivo://ivoa.net/std/VOSI#availability"
_NAMESPACES = {
    "vosi": "http://www.ivoa.net/xml/VOSICapabilities/v1.0", "vr": "http://www.ivoa.net/xml/VOResource/v1.0",
    "vs": "http://www.ivoa.net/xml/VODataService/v1.1", "sia": "http://www.ivoa.net/xml/SIA/v1.1",
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
}
_AVAILABILITY = "http://www.ivoa.net/xml/VOSIAvailability/v1.0"
#: VODataService's simple data types of the VOTable types of input parameters
_DATA_TYPES = {"char": ("string", ' arraysize="*"'), "int": ("integer", ""), "double": ("real", ' arraysize="*"')}
SIA2_STANDARD = "ivo://ivoa.net/std/SIA#query-2.0"
DATALINK_STANDARD = "ivo://ivoa.net/std/DataLink#links-1.1"
SODA_SYNC_STANDARD = "ivo://ivoa.net/std/SODA#sync-1.0"
SODA_ASYNC_STANDARD = "ivo://ivoa.net/std/SODA#async-1.0"
_DATALINK_MIME = "application/x-votable+xml;content=datalink"
#: the input parameters of SIA 2.0, DataLink and SODA, as capabilities declare them
SIA2_PARAMS = (
    InputParam("POS", "char", "CIRCLE lon lat r, RANGE lon1 lon2 lat1 lat2 or POLYGON lon1 lat1 ... (ICRS deg)",
               "deg", "pos.outline;obs"),
    InputParam("BAND", "double", "wavelength interval", "m", "em.wl;stat.interval"),
    InputParam("TIME", "double", "time interval (MJD)", "d", "time.interval;obs.exposure"),
    InputParam("POL", "char", "polarization states", None, "meta.code;phys.polarization"),
    InputParam("FOV", "double", "field of view (diameter) interval", "deg", "phys.angSize;instr.fov"),
    InputParam("SPATRES", "double", "spatial resolution interval", "arcsec", "pos.angResolution"),
    InputParam("EXPTIME", "double", "exposure time interval", "s", "time.duration;obs.exposure"),
    InputParam("ID", "char", "publisher dataset identifiers", None, "meta.ref.ivoid"),
    InputParam("COLLECTION", "char", "collections", None, "meta.id"),
    InputParam("FACILITY", "char", "facilities", None, "meta.id;instr.tel"),
    InputParam("INSTRUMENT", "char", "instruments", None, "meta.id;instr"),
    InputParam("DPTYPE", "char", "data product types", None, "meta.code.class"),
    InputParam("CALIB", "int", "calibration levels", None, "meta.code;obs.calib"),
    InputParam("TARGET", "char", "target names", None, "meta.id;src"),
    InputParam("FORMAT", "char", "access formats", None, "meta.code.mime"),
    InputParam("MAXREC", "int", "most rows of the answer"),
)
DATALINK_PARAMS = (InputParam("ID", "char", "datasets: publisher DIDs or image ids", None, "meta.id;meta.main",
                              required=True),)
SODA_PARAMS = (
    InputParam("ID", "char", "the dataset: a publisher DID or an image id", None, "meta.ref.url;meta.curation",
               required=True),
    InputParam("POS", "char", "a region: CIRCLE, RANGE or POLYGON (ICRS deg)", "deg", "pos.outline;obs"),
    InputParam("CIRCLE", "double", "a circle: lon lat radius", "deg", "pos.outline;obs"),
    InputParam("POLYGON", "double", "a polygon: lon1 lat1 lon2 lat2 ...", "deg", "pos.outline;obs"),
    InputParam("BAND", "double", "wavelength interval", "m", "em.wl;stat.interval"),
    InputParam("TIME", "double", "time interval (MJD)", "d", "time.interval;obs.exposure"),
)


@dataclass(frozen=True)
class SiaLimits:
    """The limits a SIA capability declares."""

    #: largest SIZE, degrees (maxQueryRegionSize and maxImageExtent)
    max_size_deg: float
    #: longest image axis in pixels (a cutout is never larger than its parent); 0 for an empty archive
    max_image_pixels: int
    #: an upper bound of a FITS cutout's size in bytes; 0 for an empty archive
    max_file_bytes: int
    #: most rows of a query
    max_records: int
    #: centre of an archive image, for the test query (None for an empty archive)
    test_pos: tuple[float, float] | None


def sia_limits(index: ArchiveIndex, limits: Limits, max_records: int) -> SiaLimits:
    """The SIA capability's limits, from the settings and the archive.

    The file size bound: a cutout holds at most its parent's pixels, and its header at most
    one block more than the parent's; a tile-compressed parent's pixels are bounded by 8
    bytes each (its BITPIX is not in the index).
    """
    pixels = max((max(r.shape) for r in index.records), default=0)
    file_bytes = max((r.filesize + BLOCK + (r.shape[0] * r.shape[1] * 8 if r.compressed else 0)
                      for r in index.records), default=0)
    centre = footprint_circle(index.records[0].footprint)[0] if index.records else None
    test_pos = (round(centre[0], 6), round(centre[1], 6)) if centre else None
    return SiaLimits(limits.max_size_deg, pixels, file_bytes, max_records, test_pos)


def _interface(url: str, use: str, params: Sequence[InputParam] = (), result_type: str | None = None,
               version: str = "1.0", methods: Sequence[str] = ("GET",)) -> str:
    rendered = []
    for p in params:
        data_type, arraysize = _DATA_TYPES[p.datatype]
        rendered.append(f'<param use="{"required" if p.required else "optional"}" std="{str(p.standard).lower()}">'
                        f"<name>{escape(p.name)}</name><description>{escape(p.description)}</description>"
                        + (f"<unit>{escape(p.unit)}</unit>" if p.unit else "")
                        + (f"<ucd>{escape(p.ucd)}</ucd>" if p.ucd else "")
                        + f"<dataType{arraysize}>{data_type}</dataType></param>\n")
    return (f'<interface xsi:type="vs:ParamHTTP" role="std" version={quoteattr(version)}>\n'
            f"<accessURL use={quoteattr(use)}>{escape(url)}</accessURL>\n"
            + "".join(f"<queryType>{m}</queryType>\n" for m in methods)
            + (f"<resultType>{escape(result_type)}</resultType>\n" if result_type else "")
            + "".join(rendered) + "</interface>\n")


def _sky_size(tag: str, long: float, lat: float) -> str:
    return f"<{tag}><long>{long!r}</long><lat>{lat!r}</lat></{tag}>\n"


def capabilities_xml(base: str, sia: SiaLimits, params: Sequence[InputParam]) -> str:
    """The VOSI capabilities document of a service reached at ``base``.

    Parameters
    ----------
    base : str
        The service's absolute base URL, without a trailing slash.
    sia : SiaLimits
    params : sequence of InputParam
        The input parameters of ``/sia``.
    """
    size = sia.max_size_deg
    limits = _sky_size("maxQueryRegionSize", size, size) + _sky_size("maxImageExtent", size, size)
    if sia.max_image_pixels:
        limits += (f"<maxImageSize>{sia.max_image_pixels}</maxImageSize>\n"
                   f"<maxFileSize>{sia.max_file_bytes}</maxFileSize>\n")
    limits += f"<maxRecords>{sia.max_records}</maxRecords>\n"
    if sia.test_pos is not None:
        side = min(0.05, size)
        limits += ("<testQuery>" + _sky_size("pos", *sia.test_pos).rstrip("\n")
                   + _sky_size("size", side, side).rstrip("\n") + "</testQuery>\n")
    xmlns = " ".join(f"xmlns:{prefix}={quoteattr(uri)}" for prefix, uri in _NAMESPACES.items())
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<vosi:capabilities {xmlns}>\n"
            f'<capability standardID="{SIA_STANDARD}" xsi:type="sia:SimpleImageAccess">\n'
            "<description>SIAP 1.0 query of the archive: each row is a cutout of one image, made on request"
            "</description>\n"
            + _interface(base + "/sia", "base", params, VOTABLE)
            + "<imageServiceType>Cutout</imageServiceType>\n" + limits + "</capability>\n"
            f'<capability standardID="{UWS_STANDARD}">\n'
            "<description>UWS 1.1 job list: asynchronous image staging for any number of fields</description>\n"
            + _interface(base + "/async", "base", version="1.1", methods=("GET", "POST")) + "</capability>\n"
            f'<capability standardID="{SIA2_STANDARD}">\n'
            "<description>SIA 2.0 query of the archive: one ObsCore row per image, its access_url a DataLink "
            "document</description>\n"
            + _interface(base + "/sia2/query", "full", SIA2_PARAMS, VOTABLE, "2.0", ("GET", "POST"))
            + "</capability>\n"
            f'<capability standardID="{DATALINK_STANDARD}">\n'
            "<description>DataLink links of each image: its file, a preview, SODA cutouts</description>\n"
            + _interface(base + "/datalink", "full", DATALINK_PARAMS, _DATALINK_MIME, "1.1", ("GET", "POST"))
            + "</capability>\n"
            f'<capability standardID="{SODA_SYNC_STANDARD}">\n'
            "<description>SODA cutouts, one at once</description>\n"
            + _interface(base + "/soda/sync", "full", SODA_PARAMS, "application/fits", "1.0", ("GET", "POST"))
            + "</capability>\n"
            f'<capability standardID="{SODA_ASYNC_STANDARD}">\n'
            "<description>SODA cutouts of many regions and datasets as one UWS job, staged progressively"
            "</description>\n"
            + _interface(base + "/soda/async", "full", SODA_PARAMS, version="1.0", methods=("GET", "POST"))
            + "</capability>\n"
            f'<capability standardID="{VOSI_CAPABILITIES}">\n'
            + _interface(base + "/capabilities", "full", result_type="application/xml") + "</capability>\n"
            f'<capability standardID="{VOSI_AVAILABILITY}">\n'
            + _interface(base + "/availability", "full", result_type="application/xml") + "</capability>\n"
            "</vosi:capabilities>\n")


def archive_readable(index: ArchiveIndex) -> bool:
    """Whether the archive directory can be read (a quick check of the service's one dependency)."""
    return os.access(index.root, os.R_OK | os.X_OK) and index.root.is_dir()


def availability_xml(available: bool, up_since: datetime, notes: Sequence[str]) -> str:
    """The VOSI availability document."""
    since = up_since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<vosi:availability xmlns:vosi="{_AVAILABILITY}">\n'
            f"<vosi:available>{str(available).lower()}</vosi:available>\n"
            + (f"<vosi:upSince>{since}</vosi:upSince>\n" if available else "")
            + "".join(f"<vosi:note>{escape(note)}</vosi:note>\n" for note in notes)
            + "</vosi:availability>\n")
