"""SIA 2.0 queries (``/sia2/query``): the archive's images in the ObsCore model.

Every parameter may repeat: the values of one parameter are combined with OR, different
parameters with AND (SIA 2.0, 2.1). Numeric parameters take an interval, ``lo hi`` or one
value, with ``-Inf``/``+Inf`` for open ends; a bound is always included. A column with no
value never satisfies a constraint on it. Unknown parameters are ignored (DALI 1.1).

Errors are DALI error documents (a VOTable with QUERY_STATUS ERROR), answered with HTTP
400 for a malformed request.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

import numpy as np

from cutout.index import ArchiveIndex
from cutout.regions import Circle, Polygon, Range, RegionError, parse_shape
from cutout.scan import ImageRecord
from cutout.sky import MAX_FIELD_DEG, Field, Intersect
from siasync.errors import UsageError
from siasync.uws.params import RawParams, parse_int
from siasync.vo.obscore import COLUMNS, DATALINK_MIME, ObsCoreTable
from siasync.vo.votable import HEAD, TAIL, VOTABLE, Param, info, service_descriptor, status
from storage.table import with_base

STANDARD_ID = "ivo://ivoa.net/std/SIA#query-2.0"
#: interval parameters: the ObsCore arrays they are matched on, and whether an interval is tested against
#: an interval of the data (BAND, TIME: they must meet) or against one value (the range must include it)
INTERVALS: dict[str, tuple[str, ...]] = {
    "BAND": ("em_min", "em_max"), "TIME": ("t_min", "t_max"), "FOV": ("s_fov",), "SPATRES": ("s_resolution",),
    "EXPTIME": ("t_exptime",), "TIMERES": ("t_resolution",), "SPECRP": ("em_res_power",),
}
#: string parameters: the ObsCore column each must equal
STRINGS = {"COLLECTION": "obs_collection", "FACILITY": "facility_name", "INSTRUMENT": "instrument_name",
            "DPTYPE": "dataproduct_type", "TARGET": "target_name", "FORMAT": "access_format"}
POL_STATES = ("I", "Q", "U", "V", "RR", "LL", "RL", "LR", "XX", "YY", "XY", "YX", "POLI", "POLA")
_RESPONSE_FORMATS = ("votable", "application/x-votable+xml", "text/xml")


@dataclass(frozen=True)
class Sia2Query:
    """A parsed SIA 2.0 query: per parameter, the values any of which a row must satisfy."""

    regions: tuple[Circle | Polygon | Range, ...] = ()
    intervals: Mapping[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    strings: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    pol: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    calib: tuple[int, ...] = ()
    maxrec: int | None = None


def parse_interval(param: str, text: str) -> tuple[float, float]:
    """``lo hi`` or one value (``v`` means ``v v``); ``-Inf``/``+Inf`` open an end."""
    words = text.split()
    if len(words) not in (1, 2):
        raise UsageError(param, f"expected one number or two (an interval), got {text!r}")
    try:
        values = [float(w) for w in words]
    except ValueError:
        raise UsageError(param, f"not a number in {text!r}") from None
    if any(math.isnan(v) for v in values):
        raise UsageError(param, f"not a number in {text!r}")
    lo, hi = values[0], values[-1]
    if lo > hi:
        raise UsageError(param, f"the interval {text!r} is empty: its lower bound is above its upper bound")
    return lo, hi


def parse_sia2(raw: RawParams, max_records: int) -> Sia2Query:
    """Validate a SIA 2.0 query (names upper-cased, as `siasync.uws.params.gather` gives them).

    Raises
    ------
    UsageError
        Naming the first parameter at fault.
    """
    values: dict[str, list[str]] = {}
    for name, value in raw:
        values.setdefault(name, []).append(value)
    for name in ("MAXREC", "RESPONSEFORMAT"):
        if len(values.get(name, [])) > 1:
            raise UsageError(name, f"given {len(values[name])} times; give it once")
    regions = []
    for text in values.get("POS", []):
        try:
            regions.append(parse_shape(text))
        except RegionError as exc:
            raise UsageError("POS", f"{exc} in {text!r}") from None
    pol = tuple(values.get("POL", []))
    unknown = [p for p in pol if p not in POL_STATES]
    if unknown:
        raise UsageError("POL", f"unknown state {unknown[0]!r}; expected one of {', '.join(POL_STATES)}")
    calib = []
    for text in values.get("CALIB", []):
        level = parse_int("CALIB", text)
        if not 0 <= level <= 4:
            raise UsageError("CALIB", f"must be a calibration level from 0 to 4, got {level}")
        calib.append(level)
    maxrec = None
    if "MAXREC" in values:
        maxrec = parse_int("MAXREC", values["MAXREC"][0])
        if maxrec < 0:
            raise UsageError("MAXREC", f"must be 0 or more, got {maxrec}")
    if "RESPONSEFORMAT" in values:
        fmt = values["RESPONSEFORMAT"][0].split(";")[0].strip().lower()
        if fmt not in _RESPONSE_FORMATS:
            raise UsageError("RESPONSEFORMAT", f"{values['RESPONSEFORMAT'][0]!r} is not offered; "
                                               "the answer is a VOTable (votable, application/x-votable+xml)")
    return Sia2Query(
        regions=tuple(regions),
        intervals={name: tuple(parse_interval(name, t) for t in values[name]) for name in INTERVALS
                   if name in values},
        strings={name: tuple(values[name]) for name in STRINGS if name in values},
        pol=pol, ids=tuple(values.get("ID", [])), calib=tuple(calib),
        maxrec=min(maxrec, max_records) if maxrec is not None else max_records,
    )


def matching(table: ObsCoreTable, query: Sia2Query) -> np.ndarray:
    """Indices of the images (in index order) that satisfy every constraint of ``query``."""
    keep = np.ones(len(table.records), dtype=bool)
    for name, intervals in query.intervals.items():
        arrays = [getattr(table, column) for column in INTERVALS[name]]
        hit = np.zeros_like(keep)
        for lo, hi in intervals:
            with np.errstate(invalid="ignore"):  # NaN: no value, which no constraint is satisfied by
                hit |= (arrays[-1] >= lo) & (arrays[0] <= hi)
        keep &= hit
    for name, wanted in query.strings.items():
        keep &= np.isin(table.text[STRINGS[name]], list(wanted))
    if query.pol:  # a row matches a state it lists, as /I/Q/U/
        keep &= np.array([bool(s) and any(f"/{p}/" in s for p in query.pol) for s in table.text["pol_states"]])
    if query.ids:
        keep &= np.isin(table.did_lower, [i.strip().lower() for i in query.ids])
    if query.calib:
        keep &= np.isin(table.calib_level, query.calib)
    if query.regions:
        near = np.zeros_like(keep)
        for region in query.regions:
            near |= _in_region(table.datasets.index, region, keep)
        keep &= near
    return np.flatnonzero(keep)


def _in_region(index: ArchiveIndex, region: Circle | Polygon | Range, wanted: np.ndarray) -> np.ndarray:
    """Which images meet ``region``: candidates from the sky index when the region is small, then the exact test."""
    ra, dec, radius = region.cap()
    if radius < MAX_FIELD_DEG / 2 - 1:
        side = 2 * math.degrees(math.tan(math.radians(radius)))  # the box around the region's circle
        candidates = {r.id for r in index.lookup(Field(ra, dec, side, side), Intersect.OVERLAPS)}
        subset = np.array([wanted[i] and r.id in candidates for i, r in enumerate(index.records)], dtype=bool)
    else:
        subset = wanted.copy()
    hits = np.zeros_like(subset)
    chosen = [i for i in np.flatnonzero(subset) if not index.records[i].wide]
    if chosen:
        size = max(len(index.records[i].footprint) for i in chosen)
        footprints = np.stack([_padded(index.records[i].footprint, size) for i in chosen])
        hits[chosen] = region.meets(footprints)
    for i in np.flatnonzero(subset):  # all-sky maps, hemispheres: through their WCS
        if index.records[i].wide:
            hits[i] = _wide_meets(index, index.records[i], region)
    return hits


def _wide_meets(index: ArchiveIndex, record: ImageRecord, region: Circle | Polygon | Range) -> bool:
    """Whether a wide image (too large for a polygon) has a pixel at one of the region's points: its outline,
    its centre and a grid across it (an image wider than the region holds some of them if it meets it)."""
    ra, dec = region.samples()
    x, y = index.geometry(record).to_pixels(ra, dec)
    ny, nx = record.shape
    inside = np.isfinite(x) & np.isfinite(y) & (x >= -0.5) & (x <= nx - 0.5) & (y >= -0.5) & (y <= ny - 0.5)
    return bool(inside.any())


def _padded(polygon: np.ndarray, size: int) -> np.ndarray:
    """A polygon padded to ``size`` vertices by repeating its last one (a zero-length edge)."""
    return np.concatenate([polygon, np.repeat(polygon[-1:], size - len(polygon), axis=0)])


def answer(table: ObsCoreTable, query: Sia2Query, base: str, descriptors: Callable[[str], str],
           remote: Sequence[str] = (), failures: Sequence[str] = (), remote_overflow: bool = False) -> str:
    """The VOTable answering a query: the ObsCore rows (the archive's, then ``remote`` rows of remote
    collections), OVERFLOW past MAXREC, an INFO per remote collection that did not answer (``failures``),
    and the service descriptors."""
    found = matching(table, query)
    limit = query.maxrec if query.maxrec is not None else len(found) + len(remote)
    rows = found[:limit]
    extra = list(remote[:max(0, limit - len(found))])
    overflow = len(found) + len(remote) > limit or remote_overflow
    total = f"{len(found) + len(remote)}{' or more' if remote_overflow else ''}"
    message = (f"the answer stops at MAXREC={limit} of {total} matching images" if overflow else "")
    return (HEAD + '<RESOURCE type="results">\n'
            + "<DESCRIPTION>siasync SIA 2.0: archive images in the ObsCore model; access_url is each image's "
              "DataLink document (a remote collection's: the remote's own link)</DESCRIPTION>\n"
            + status("OK") + info("standardID", STANDARD_ID)
            + "".join(f'<INFO name="REMOTE" value="unavailable">{escape(text)}</INFO>\n' for text in failures)
            + "<TABLE>\n" + "".join(c.field() for c in COLUMNS) + "<DATA><TABLEDATA>\n"
            + with_base("".join(table.rows[i] for i in rows), base) + "".join(extra)
            + "</TABLEDATA></DATA>\n</TABLE>\n"
            + (status("OVERFLOW", message) if overflow else "")
            + "</RESOURCE>\n" + descriptors(base) + TAIL)


def self_descriptor(base: str) -> str:
    """The SIA 2.0 self-description (DataLink 1.1 ``adhoc:this``, given as ``adhoc:service`` named ``this``)."""
    intervals = [Param(name, "double", arraysize="*", unit=unit, xtype="interval")
                 for name, unit in (("BAND", "m"), ("TIME", "d"), ("FOV", "deg"), ("SPATRES", "arcsec"),
                                    ("EXPTIME", "s"), ("TIMERES", "s"), ("SPECRP", None))]
    return service_descriptor(
        "this", STANDARD_ID, f"{base}/sia2/query",
        [Param("POS", description="CIRCLE lon lat r, RANGE lon1 lon2 lat1 lat2 or POLYGON lon1 lat1 ... (ICRS deg)"),
         *intervals, Param("POL", options=POL_STATES), Param("ID"), Param("COLLECTION"), Param("FACILITY"),
         Param("INSTRUMENT"), Param("DPTYPE", options=("image", "cube")), Param("CALIB", "int", arraysize=None),
         Param("TARGET"), Param("FORMAT", options=(DATALINK_MIME,)), Param("MAXREC", "int", arraysize=None)])


#: the media type of SIA 2.0 answers
MIME = VOTABLE
