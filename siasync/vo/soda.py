"""SODA 1.0 cutouts of archive images: ``/soda/sync`` (one at once) and ``/soda/async`` (UWS jobs).

A request names datasets by ``ID`` (a publisher DID from SIA 2.0 or DataLink, or a bare
image id) and regions by ``POS`` (``CIRCLE``/``RANGE``/``POLYGON``), ``CIRCLE`` or
``POLYGON`` (ICRS degrees). The cutout of a region is the one ``/sia/cutout`` makes for
the smallest north-up box on the tangent plane that holds the region: the parent's own
pixels, never resampled. ``BAND`` (metres) and ``TIME`` (MJD) are filters: an image whose
band or observation misses them has no data for the request.

* **sync** takes one ID and one region. No pixels of the image in the region: HTTP 204,
  no body (SODA 1.0, 5.1). Several values: ``MultiValuedParamNotSupported``.
* **async** takes many IDs and many regions; every (region, ID) combination is one
  result, staged progressively by the job engine as ``/async`` jobs are, with a growing
  ``table``. The regions are the job's fields, numbered POS values first, then CIRCLE,
  then POLYGON, each in the order given. A combination with no pixels is a text/plain result saying so (SODA 1.0, 6).
  BAND and TIME are single-valued there.

Errors are text/plain, starting with a SODA error label (``UsageError``, ``Error``...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from cutout.regions import Circle, Polygon, Range, RegionError, parse_shape
from cutout.scan import ImageRecord
from cutout.sky import Field, footprint_circle
from siasync.errors import MultiValuedParamNotSupported, UnknownDataset, UsageError
from siasync.uws.params import JobControl, Limits, RawParams, StagingRequest, parse_control
from siasync.vo.obscore import Datasets
from siasync.vo.sia2 import parse_interval
from siasync.vo.votable import Param, service_descriptor

SYNC_ID = "ivo://ivoa.net/std/SODA#sync-1.0"
ASYNC_ID = "ivo://ivoa.net/std/SODA#async-1.0"
#: the region parameters, each repeatable in async requests
REGIONS = ("POS", "CIRCLE", "POLYGON")
#: what an async SODA job accepts besides the regions and IDs (the UWS settings of a job)
_CONTROL = ("RUNID", "EXECUTIONDURATION", "DESTRUCTION", "START", "PHASE")
_FORMATS = ("application/fits", "image/fits")
#: every parameter of an async SODA job
JOB_PARAMETERS = ("ID", *REGIONS, "BAND", "TIME", "POL", "RESPONSEFORMAT", *_CONTROL)


@dataclass(frozen=True)
class SodaCutout:
    """A parsed ``/soda/sync`` request: one image, one region (as the box cut), and its filters."""

    record: ImageRecord
    field: Field
    #: False when BAND or TIME exclude the image: there is no data, whatever the region
    selected: bool = True


def _values(raw: RawParams) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for name, value in raw:
        values.setdefault(name, []).append(value)
    return values


def _single(values: Mapping[str, list[str]], name: str) -> str | None:
    given = values.get(name, [])
    if len(given) > 1:
        raise MultiValuedParamNotSupported(name, f"given {len(given)} times; this service takes one value")
    return given[0] if given else None


def parse_region(param: str, text: str) -> Circle | Polygon | Range:
    """A region parameter: POS is a DALI shape, CIRCLE and POLYGON their numbers alone."""
    try:
        if param == "POS":
            return parse_shape(text)
        return Circle.parse(text) if param == "CIRCLE" else Polygon.parse(text)
    except RegionError as exc:
        raise UsageError(param, f"{str(exc).removeprefix(param + ': ')} in {text!r}") from None


def _box(param: str, region: Circle | Polygon | Range, limits: Limits) -> Field:
    """The field cut for a region, no larger than the service's largest SIZE."""
    try:
        field = region.field()
    except RegionError as exc:
        raise UsageError(param, str(exc).removeprefix(param + ": ")) from None
    if max(field.width, field.height) > limits.max_size_deg:
        raise UsageError(param, f"the region spans {max(field.width, field.height):.4g} deg; the largest cutout "
                                f"is {limits.max_size_deg:g} deg across")
    return field


def _regions(values: Mapping[str, list[str]], limits: Limits) -> list[Field]:
    """The boxes of the request's regions: POS values, then CIRCLE, then POLYGON, each in the order given
    (a job's fields are numbered so; a form body keeps the order of one name's values, not across names)."""
    return [_box(name, parse_region(name, text), limits) for name in REGIONS for text in values.get(name, [])]


def _format(values: Mapping[str, list[str]]) -> None:
    fmt = _single(values, "RESPONSEFORMAT")
    if fmt is not None and fmt.split(";")[0].strip().lower() not in _FORMATS:
        raise UsageError("RESPONSEFORMAT", f"{fmt!r} is not offered; cutouts are FITS (application/fits)")
    if values.get("POL"):
        raise UsageError("POL", "these images have no polarization axis; leave POL out")


def _selected(record: ImageRecord, values: Mapping[str, list[str]]) -> bool:
    """Whether BAND and TIME (single values, when given) let the image through."""
    band_text, time_text = _single(values, "BAND"), _single(values, "TIME")
    if band_text is not None:
        lo, hi = parse_interval("BAND", band_text)
        if record.em_min is None or record.em_max is None or record.em_max < lo or record.em_min > hi:
            return False
    if time_text is not None:
        lo, hi = parse_interval("TIME", time_text)
        start = record.t_min if record.t_min is not None else record.mjd
        end = record.t_max if record.t_max is not None else start
        if start is None or end < lo or start > hi:
            return False
    return True


def _dataset(datasets: Datasets, text: str) -> ImageRecord:
    record = datasets.resolve(text)
    if record is None:
        raise UnknownDataset("ID", f"no dataset {text!r} in this archive")
    return record


def parse_sync(raw: RawParams, datasets: Datasets, limits: Limits) -> SodaCutout:
    """Validate a ``/soda/sync`` request (names upper-cased).

    Raises
    ------
    UsageError, MultiValuedParamNotSupported, UnknownDataset
        Naming the parameter at fault.
    """
    values = _values(raw)
    identifier = _single(values, "ID")
    if identifier is None:
        raise UsageError("ID", "required: the dataset's publisher DID (obs_publisher_did) or image id")
    given = [name for name in REGIONS for _ in values.get(name, [])]
    if len(given) > 1:
        raise MultiValuedParamNotSupported(given[-1], "a synchronous cutout takes one region; give several "
                                                      "regions to /soda/async, each a result")
    if not given:
        raise UsageError("POS", "required: one region, as POS, CIRCLE or POLYGON (the whole file is the #this "
                                "link of /datalink)")
    _format(values)
    record = _dataset(datasets, identifier)
    field = _regions(values, limits)[0]
    return SodaCutout(record, field, _selected(record, values))


def parse_async(raw: RawParams, datasets: Datasets, limits: Limits,
                now: datetime | None = None) -> tuple[StagingRequest, JobControl]:
    """Validate an async SODA job: the (region, ID) combinations it stages, and its UWS settings.

    Raises
    ------
    UsageError, MultiValuedParamNotSupported, UnknownDataset
        Naming the parameter at fault.
    """
    values = _values(raw)
    for name in _CONTROL:
        _single(values, name)
    _format(values)
    identifiers = values.get("ID", [])
    if not identifiers:
        raise UsageError("ID", "required: one or more datasets (publisher DIDs or image ids)")
    records = list(dict.fromkeys(_dataset(datasets, text).id for text in identifiers))
    fields = _regions(values, limits)
    if not fields:
        raise UsageError("POS", "required: one or more regions, as POS, CIRCLE or POLYGON")
    if len(fields) * len(records) > limits.max_fields:
        raise UsageError("ID", f"{len(fields)} regions x {len(records)} datasets make {len(fields) * len(records)} "
                               f"cutouts, more than the limit of {limits.max_fields}")
    index = datasets.index
    kept = tuple(r for r in records if _selected(index.by_id[r], values))
    if not kept:
        raise UsageError("BAND" if values.get("BAND") else "TIME", "no dataset of the request is in this band and "
                                                                    "time; every cutout would be empty")
    request = StagingRequest(positions=tuple((f.ra, f.dec) for f in fields), size=None,
                             sizes=tuple((f.width, f.height) for f in fields), ids=kept)
    one = {name: values[name][0] for name in _CONTROL if name in values}
    return request, parse_control(one, limits, now or datetime.now(UTC))


def _inputs(identifier: Param, record: ImageRecord | None = None) -> list[Param]:
    """The input PARAMs of a SODA descriptor; with ``record``, the ranges that image covers."""
    circle = polygon = band = time = None
    if record is not None:
        (ra, dec), radius = footprint_circle(record.footprint)
        circle = f"{ra!r} {dec!r} {radius!r}"
        if not record.wide:  # an all-sky map's rim is no polygon of the sky
            polygon = " ".join(repr(float(c)) for point in record.footprint for c in point)
        if record.em_min is not None and record.em_max is not None:
            band = (repr(record.em_min), repr(record.em_max))
        start = record.t_min if record.t_min is not None else record.mjd
        if start is not None:
            time = (repr(start), repr(record.t_max if record.t_max is not None else start))
    return [
        identifier,
        Param("POS", ucd="pos.outline;obs", description="CIRCLE lon lat r, RANGE lon1 lon2 lat1 lat2, or "
                                                        "POLYGON lon1 lat1 ... (ICRS degrees)"),
        Param("CIRCLE", "double", arraysize="3", unit="deg", ucd="pos.outline;obs", xtype="circle",
              maximum=circle, description="the cutout holds this circle (lon lat radius)"),
        Param("POLYGON", "double", arraysize="*", unit="deg", ucd="pos.outline;obs", xtype="polygon",
              maximum=polygon, description="the cutout holds this polygon (lon1 lat1 lon2 lat2 ...)"),
        Param("BAND", "double", arraysize="2", unit="m", ucd="em.wl;stat.interval", xtype="interval",
              minimum=band[0] if band else None, maximum=band[1] if band else None),
        Param("TIME", "double", arraysize="2", unit="d", ucd="time.interval;obs.exposure", xtype="interval",
              minimum=time[0] if time else None, maximum=time[1] if time else None),
    ]


def descriptors(base: str, record: ImageRecord | None = None, did: str | None = None, key: str = "") -> str:
    """SODA sync and async service descriptors (resource IDs ``soda-sync`` and ``soda-async``, plus ``key``):
    for the ID column of a discovery answer (``ref``), or for one dataset (its DID fixed, and the bounds of
    its coverage)."""
    identifier = (Param("ID", value=did, ucd="meta.ref.url;meta.curation") if did is not None
                  else Param("ID", ref="obs_publisher_did", ucd="meta.ref.url;meta.curation"))
    inputs = _inputs(identifier, record)
    return (service_descriptor(f"soda-sync{key}", SYNC_ID, f"{base}/soda/sync", inputs,
                               "cutouts of the image: the parent's pixels holding a region, FITS")
            + service_descriptor(f"soda-async{key}", ASYNC_ID, f"{base}/soda/async", inputs,
                                 "many cutouts as one UWS job: every region of every ID, staged as they are made"))
