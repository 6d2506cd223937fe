"""Job parameters: declared once, parsed and validated once, then plain data.

Parameter names are case-insensitive (DALI). Values arrive from the query string,
a form-encoded body or a multipart body, in any mix; `gather` merges them into one
ordered list of ``(NAME, value)`` pairs, and `parse_job` turns that list into a
`StagingRequest` (what to stage, sent to workers as a plain spec) and a
`JobControl` (the UWS job settings). Unknown names are ignored, as DALI asks.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import repeat
from typing import Any

from cutout.mosaic import COMBINES, FRAMES, PROJECTIONS, GridSpec
from cutout.sky import Field, Intersect
from siasync.errors import UsageError
from siasync.uws.uploads import Upload, read_fields
from siasync.vocabulary import FORMATS, MODES

_NUMBER = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$")
_SEPARATORS = re.compile(r"[;\r\n]+")
_INTEGER = re.compile(r"^\s*[+-]?\d+\s*$")

RawParams = list[tuple[str, str]]


@dataclass(frozen=True)
class Limits:
    """What the archive and the settings allow."""

    collections: frozenset[str]
    bands: frozenset[str]
    max_fields: int
    max_size_deg: float
    destruction_default_s: int
    destruction_max_s: int
    execution_default_s: int
    execution_max_s: int
    owner_active_jobs: int = 20
    owner_queued_fields: int = 100_000
    #: URL prefixes an UPLOAD may be fetched from (none: uploads come in the request)
    upload_urls: tuple[str, ...] = ()
    #: pixels of one generated image (MODE=mosaic or stack), per band
    max_output_pixels: int = 4096 * 4096
    #: archive images co-added into one generated product
    max_coadd_inputs: int = 32
    #: the finest pixel scale in the archive: the default CDELT can be no finer
    finest_scale_deg: float = 1 / 3600
    #: an uploaded table's columns, and the bytes it may take in memory once parsed
    max_upload_columns: int = 1000
    max_upload_table_bytes: int = 64 * 1024 * 1024
    #: per owner: the bytes of uploaded tables stored with their jobs
    owner_upload_bytes: int = 256 * 1024 * 1024
    #: the estimated output of one job, and of all of an owner's unfinished jobs, in bytes
    max_job_bytes: int = 100 * 1000**3
    owner_output_bytes: int = 500 * 1000**3


@dataclass(frozen=True)
class StagingRequest:
    """What a job stages: fields (POS x SIZE), matching rules and products."""

    positions: tuple[tuple[float, float], ...]
    #: SIZE, for every field without a size of its own (None: every field has one)
    size: tuple[float, float] | None
    format: str = "image/fits"
    intersect: str = Intersect.OVERLAPS.value
    collections: tuple[str, ...] = ()
    bands: tuple[str, ...] = ()
    #: each field's own size: a square's side from an upload's size column, or (width, height) of a
    #: SODA region's box; None where it has none; empty when no field has one
    sizes: tuple[float | tuple[float, float] | None, ...] = ()
    #: ``cutout`` (pixels copied), ``mosaic`` (one co-add per band) or ``stack`` (every band, one grid)
    mode: str = "cutout"
    #: the output grid of a mosaic or stack, as requested
    grid: GridSpec = GridSpec()
    #: how a mosaic combines overlapping images: mean, median or sum
    combine: str = "mean"
    #: whether a mosaic matches the images' backgrounds
    match_background: bool = False
    #: SODA: the datasets (image ids) every field is cut from, each (field, image) combination one
    #: result, a text/plain explanation where they do not overlap; empty: the images the lookup finds
    ids: tuple[str, ...] = ()

    def _extent(self, own: float | tuple[float, float] | None) -> tuple[float, float]:
        if own is None:
            return self.size
        return (own, own) if isinstance(own, (int, float)) else (own[0], own[1])

    def fields(self, start: int = 0, stop: int | None = None) -> list[Field]:
        """One `Field` per position (from ``start`` to ``stop``), each with its size."""
        if not self.sizes:
            return [Field(ra, dec, *self.size) for ra, dec in self.positions[start:stop]]
        return [Field(ra, dec, *self._extent(s))
                for (ra, dec), s in zip(self.positions[start:stop], self.sizes[start:stop], strict=True)]

    def field(self, index: int) -> Field:
        """The field of position ``index``."""
        return Field(*self.positions[index], *self._extent(self.sizes[index] if self.sizes else None))

    @property
    def products(self) -> tuple[str, ...]:
        """MIME types of the files made per (field, image), or per (field, band) of a mosaic, per field of a stack.

        A stack in FITS comes with a colour preview (when it has three bands or more).
        """
        return products_of(self.mode, self.format)

    def to_spec(self) -> dict[str, Any]:
        """Plain JSON-able data, as stored and as sent to workers."""
        return {"positions": [list(p) for p in self.positions], "size": self.size and list(self.size),
                "format": self.format, "intersect": self.intersect, "collections": list(self.collections),
                "bands": list(self.bands), "sizes": list(self.sizes), "mode": self.mode,
                "grid": self.grid.to_spec(), "combine": self.combine, "match_background": self.match_background,
                **({"ids": list(self.ids)} if self.ids else {})}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> StagingRequest:
        """Inverse of `to_spec` (specs stored before mosaics are cutout requests)."""
        return cls(positions=tuple(map(tuple, spec["positions"])), size=spec["size"] and tuple(spec["size"]),
                   format=spec["format"], intersect=spec["intersect"], collections=tuple(spec["collections"]),
                   bands=tuple(spec["bands"]), mode=spec.get("mode", "cutout"), ids=tuple(spec.get("ids", ())),
                   sizes=tuple(tuple(s) if isinstance(s, list) else s for s in spec.get("sizes", ())),
                   grid=GridSpec.from_spec(spec["grid"]) if "grid" in spec else GridSpec(),
                   combine=spec.get("combine", "mean"), match_background=spec.get("match_background", False))


def products_of(mode: str, format: str) -> tuple[str, ...]:
    """MIME types made per (field, image) of a cutout, per band of a mosaic, per field of a stack, for a FORMAT.

    A stack in FITS comes with a colour preview (when it has three bands or more).
    """
    if mode == "stack" and format in ("image/fits", "ALL"):
        return ("image/fits", "image/png")
    return FORMATS[format]


@dataclass(frozen=True)
class JobControl:
    """The UWS settings of a job, clamped to the service's limits."""

    run_id: str | None = None
    execution_duration: int = 0
    destruction: datetime = field(default_factory=lambda: datetime.now(UTC))
    start: datetime | None = None
    run: bool = False


def gather(*sources: Iterable[tuple[str, str]]) -> RawParams:
    """Merge (name, value) pairs from several sources, names upper-cased, order kept."""
    return [(str(name).upper(), str(value)) for source in sources for name, value in source]


def parse_job(raw: RawParams, limits: Limits, now: datetime | None = None,
              uploads: Sequence[Upload] = ()) -> tuple[StagingRequest, JobControl]:
    """Validate a job's parameters; ``uploads`` are the tables its UPLOAD values name, resolved.

    The fields are the POS positions, then each uploaded table's rows in order.

    Raises
    ------
    UsageError
        Naming the first parameter at fault.
    """
    now = now or datetime.now(UTC)
    values, one = grouped(raw, _SINGLE)
    positions = list(parse_positions(values.get("POS", [])))
    sizes: list[float | None] = [None] * len(positions)
    for upload in uploads:
        table = read_fields(upload, limits.max_size_deg, limits.max_fields, limits.max_upload_columns,
                            limits.max_upload_table_bytes)
        positions += table.positions
        sizes += table.sizes
    if not positions:
        raise UsageError("POS", "required: give at least one POS=ra,dec (ICRS degrees), or an UPLOAD table")
    if len(positions) > limits.max_fields:
        raise UsageError("UPLOAD" if uploads else "POS",
                         f"{len(positions)} fields exceed the limit of {limits.max_fields}")
    if "SIZE" not in one and None in sizes:
        raise UsageError("SIZE", "required: give SIZE=s or SIZE=w,h in degrees"
                         + (" (or a size for every row of the upload)" if uploads else ""))
    size = parse_size(one["SIZE"], limits.max_size_deg) if "SIZE" in one else None
    request = StagingRequest(
        positions=tuple(positions),
        size=size,
        sizes=tuple(sizes) if any(s is not None for s in sizes) else (),
        format=parse_format(one.get("FORMAT", "image/fits")),
        intersect=parse_choice("INTERSECT", one.get("INTERSECT", "OVERLAPS"), [m.value for m in Intersect]),
        collections=parse_members("COLLECTION", values.get("COLLECTION", []), limits.collections),
        bands=parse_members("BAND", values.get("BAND", []), limits.bands),
        **parse_generation(one, limits, {(s, s) for s in sizes if s is not None} | ({size} if size else set())),
    )
    return request, parse_control(one, limits, now)


def parse_control(one: Mapping[str, str], limits: Limits, now: datetime) -> JobControl:
    """The UWS settings of a new job: RUNID, EXECUTIONDURATION, DESTRUCTION, START and PHASE=RUN."""
    return JobControl(
        run_id=parse_run_id(one["RUNID"]) if "RUNID" in one else None,
        execution_duration=clamp_duration(parse_int("EXECUTIONDURATION", one["EXECUTIONDURATION"])
                                          if "EXECUTIONDURATION" in one else limits.execution_default_s, limits),
        destruction=clamp_destruction(parse_time("DESTRUCTION", one["DESTRUCTION"]) if "DESTRUCTION" in one
                                      else now + timedelta(seconds=limits.destruction_default_s), limits, now),
        start=parse_time("START", one["START"]) if "START" in one else None,
        run=parse_phase_on_create(one["PHASE"]) if "PHASE" in one else False,
    )


def grouped(raw: RawParams, single: tuple[str, ...]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Every parameter's values, and the value of each of ``single`` (given once at most)."""
    values: dict[str, list[str]] = {}
    for name, value in raw:
        values.setdefault(name, []).append(value)
    for name in single:
        if len(values.get(name, [])) > 1:
            raise UsageError(name, f"given {len(values[name])} times; give it once")
    return values, {name: values[name][0] for name in single if name in values}


# -- single values ----------------------------------------------------------------------


def parse_number(param: str, text: str) -> float:
    """A finite decimal number."""
    if not _NUMBER.match(text):
        raise UsageError(param, f"not a number: {text!r}")
    try:
        value = float(text)
    except ValueError:  # \s also matches separators float() refuses (\x1c-\x1f)
        raise UsageError(param, f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise UsageError(param, f"not a finite number: {text!r}")
    return value


def parse_int(param: str, text: str) -> int:
    """A whole number."""
    if not _INTEGER.match(text):
        raise UsageError(param, f"not an integer: {text!r}")
    try:
        return int(text)
    except ValueError:  # \s also matches separators int() refuses (\x1c-\x1f); int() refuses 4300+ digits
        problem = f"{len(text)} characters, too many digits" if len(text) > 4000 else repr(text)
        raise UsageError(param, f"not an integer: {problem}") from None


def parse_pos(text: str) -> tuple[float, float]:
    """``ra,dec`` in ICRS degrees."""
    parts = text.split(",")
    if len(parts) != 2:
        raise UsageError("POS", f"expected ra,dec in degrees, got {text!r}")
    try:
        ra, dec = (parse_number("POS", p) for p in parts)
    except UsageError as exc:
        raise UsageError("POS", f"{str(exc).removeprefix('POS: ')} in {text!r}") from None
    if not 0.0 <= ra < 360.0:
        raise UsageError("POS", f"RA must be in [0, 360), got {ra:g} in {text!r}")
    if not -90.0 <= dec <= 90.0:
        raise UsageError("POS", f"Dec must be in [-90, 90], got {dec:g} in {text!r}")
    return ra, dec


def parse_positions(values: Iterable[str]) -> tuple[tuple[float, float], ...]:
    """Every position in the POS values; a value may hold several, one per line or separated by ';'.

    A 10,000-field job is converted in bulk. ``float`` accepts a little more than
    `parse_number` (``nan``, ``inf``, ``1_0``), so those are ruled out before or after;
    a list with any fault in it goes line by line, to name the faulty value.
    """
    text = "\n".join(values)
    if ";" in text or "\r" in text:
        text = _SEPARATORS.sub("\n", text)
    lines = [line for line in text.split("\n") if line and not line.isspace()]
    joined = ",".join(lines)
    # one comma in every line, and no more commas than that and the joins
    if (lines and joined.count(",") == 2 * len(lines) - 1 and "_" not in joined
            and all(map(operator.contains, lines, repeat(",")))):
        try:
            numbers = list(map(float, joined.split(",")))
        except ValueError:
            numbers = [math.nan]
        ra, dec = numbers[0::2], numbers[1::2]
        if (all(map(math.isfinite, numbers)) and 0.0 <= min(ra) and max(ra) < 360.0
                and -90.0 <= min(dec) and max(dec) <= 90.0):
            return tuple(zip(ra, dec, strict=True))
    return tuple(parse_pos(p) for p in lines)


def parse_size(text: str, max_deg: float) -> tuple[float, float]:
    """``s`` or ``w,h`` in degrees, positive and at most ``max_deg``; or 0 (SIAP 1.0 SIZE=0).

    SIZE=0 is the special case SIAP 1.0 defines: for a cutout service, an image of a
    default size. Here that is the whole of each image that contains POS (``(0.0, 0.0)``).
    """
    parts = text.split(",")
    if len(parts) not in (1, 2):
        raise UsageError("SIZE", f"expected one or two numbers in degrees, got {text!r}")
    sizes = [parse_number("SIZE", p) for p in parts]
    if all(s == 0 for s in sizes):
        return 0.0, 0.0
    for s in sizes:
        if not 0 < s <= max_deg:
            raise UsageError("SIZE", f"must be positive and at most {max_deg:g} deg, got {s:g}")
    return (sizes[0], sizes[0]) if len(sizes) == 1 else (sizes[0], sizes[1])


def parse_format(text: str) -> str:
    """A FORMAT value (MIME types case-insensitive)."""
    for known in FORMATS:
        if text.strip().lower() == known.lower():
            return known
    raise UsageError("FORMAT", f"unknown value {text!r}; expected one of {', '.join(FORMATS)}")


def parse_choice(param: str, text: str, choices: list[str]) -> str:
    """One of a list of keywords, case-insensitive."""
    value = text.strip().upper()
    if value not in choices:
        raise UsageError(param, f"unknown value {text!r}; expected one of {', '.join(choices)}")
    return value


def parse_members(param: str, texts: list[str], known: frozenset[str]) -> tuple[str, ...]:
    """Repeatable names (also comma-separated) that must exist in the archive."""
    names = [n.strip() for t in texts for n in t.split(",")]
    if any(not n for n in names):
        raise UsageError(param, "empty value")
    unknown = sorted(set(names) - known)
    if unknown:
        raise UsageError(param, f"not in this archive: {', '.join(map(repr, unknown))}; "
                                f"known: {', '.join(sorted(known))}")
    return tuple(dict.fromkeys(names))


def parse_time(param: str, text: str) -> datetime:
    """An ISO 8601 instant; UTC when it has no zone."""
    try:
        value = datetime.fromisoformat(text.strip())
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except ValueError:
        raise UsageError(param, f"not an ISO 8601 instant: {text!r} (e.g. 2026-11-28T18:00:00Z)") from None
    except OverflowError:  # e.g. 0001-01-01T00:00+01:00 is before the first instant in UTC
        raise UsageError(param, f"{text!r} is out of the range of dates in UTC") from None


def parse_run_id(text: str) -> str:
    """A client label: printable, at most 255 characters."""
    if len(text) > 255 or not text.isprintable():
        raise UsageError("RUNID", "must be printable text of at most 255 characters")
    return text


def parse_generation(one: Mapping[str, str], limits: Limits, extents: Iterable[tuple[float, float]]) -> dict[str, Any]:
    """MODE, the output grid (SIAP 1.0 image generation), COMBINE and BACKGROUND.

    ``extents`` are the fields' (width, height) in degrees, for the output pixel count.
    The grid parameters apply only to MODE=mosaic or stack; the output pixels per band
    are capped at ``limits.max_output_pixels``.
    """
    mode = parse_choice("MODE", one.get("MODE", "cutout"), [m.upper() for m in MODES]).lower()
    if mode == "cutout":
        for name in GENERATION_PARAMETERS:
            if name in one:
                raise UsageError(name, "applies only to MODE=mosaic or MODE=stack")
        return {}
    extents = list(extents)
    if any(w == 0 and h == 0 for w, h in extents):
        raise UsageError("SIZE", f"SIZE=0 (the whole images that contain POS) applies to cutouts; MODE={mode} "
                                 "makes a new grid and needs its size on the sky")
    frame = parse_choice("CFRAME", one.get("CFRAME", "ICRS"), list(FRAMES))
    if "EQUINOX" in one and frame not in ("FK4", "FK5"):
        raise UsageError("EQUINOX", f"applies only to CFRAME=FK4 or FK5, not {frame}")
    naxis = parse_pair("NAXIS", one["NAXIS"], parse_int) if "NAXIS" in one else None
    if naxis is not None and min(naxis) < 1:
        raise UsageError("NAXIS", f"expected positive pixel counts, got {one['NAXIS']!r}")
    cdelt = parse_pair("CDELT", one["CDELT"], parse_number) if "CDELT" in one else None
    if cdelt is not None:
        if len(one["CDELT"].split(",")) == 1:
            cdelt = (-abs(cdelt[0]), abs(cdelt[0]))  # one scale: east to the left, north up
        if not all(1e-7 <= abs(c) <= 1.0 for c in cdelt):
            raise UsageError("CDELT", f"degrees per pixel must be between 1e-7 and 1 in size, got {one['CDELT']!r}")
    crval = parse_pair("CRVAL", one["CRVAL"], parse_number, single=False) if "CRVAL" in one else None
    if crval is not None and not (0.0 <= crval[0] < 360.0 and -90.0 <= crval[1] <= 90.0):
        raise UsageError("CRVAL", f"expected longitude in [0, 360) and latitude in [-90, 90], got {one['CRVAL']!r}")
    equinox = parse_number("EQUINOX", one["EQUINOX"]) if "EQUINOX" in one else None
    if equinox is not None and not 1000.0 <= equinox <= 3000.0:
        raise UsageError("EQUINOX", f"expected a year such as 2000, got {one['EQUINOX']!r}")
    grid = GridSpec(naxis=naxis, frame=frame, equinox=equinox, cdelt=cdelt, crval=crval,
                    crpix=parse_pair("CRPIX", one["CRPIX"], parse_number, single=False) if "CRPIX" in one else None,
                    rotang=parse_number("ROTANG", one["ROTANG"]) % 360.0 if "ROTANG" in one else 0.0,
                    proj=parse_choice("PROJ", one.get("PROJ", "TAN"), list(PROJECTIONS)))
    pixels = max((grid.pixels_bound(w, h, limits.finest_scale_deg) for w, h in extents), default=0)
    if pixels > limits.max_output_pixels:
        culprit = "NAXIS" if naxis else "CDELT" if cdelt else "SIZE"
        raise UsageError(culprit, f"the output would have {pixels} pixels per band, more than the limit of "
                                  f"{limits.max_output_pixels}; give a coarser CDELT, a smaller NAXIS or SIZE")
    return {"mode": mode, "grid": grid, "combine": parse_choice("COMBINE", one.get("COMBINE", "mean"),
                                                                [c.upper() for c in COMBINES]).lower(),
            "match_background": parse_choice("BACKGROUND", one.get("BACKGROUND", "none"), ["NONE", "MATCH"]) == "MATCH"}


def parse_pair(param: str, text: str, parse: Any, single: bool = True) -> tuple[Any, Any]:
    """``a,b``, or (when ``single``) ``a`` meaning ``a,a``."""
    parts = text.split(",")
    if len(parts) not in ((1, 2) if single else (2,)):
        raise UsageError(param, f"expected {'one or two values' if single else 'two values'} "
                                f"separated by a comma, got {text!r}")
    values = [parse(param, p) for p in parts]
    return (values[0], values[-1])


def parse_phase_on_create(text: str) -> bool:
    """Only PHASE=RUN is meaningful when a job is created."""
    if text.strip().upper() != "RUN":
        raise UsageError("PHASE", f"only RUN is allowed when creating a job, got {text!r}")
    return True


def clamp_duration(seconds: int, limits: Limits) -> int:
    """Execution duration in seconds; 0 (unlimited in UWS) and longer values become the maximum."""
    if seconds < 0:
        raise UsageError("EXECUTIONDURATION", f"must be 0 or more seconds, got {seconds}")
    return limits.execution_max_s if seconds == 0 else min(seconds, limits.execution_max_s)


def clamp_destruction(instant: datetime, limits: Limits, now: datetime, param: str = "DESTRUCTION") -> datetime:
    """A future destruction instant, no later than the maximum retention (``param``: its name in the request)."""
    if instant <= now:
        raise UsageError(param, f"{instant.isoformat()} is not in the future")
    return min(instant, now + timedelta(seconds=limits.destruction_max_s))


#: the SIAP 1.0 image-generation parameters, and how a mosaic combines its inputs
GENERATION_PARAMETERS = ("NAXIS", "CFRAME", "EQUINOX", "CRPIX", "CRVAL", "CDELT", "ROTANG", "PROJ", "COMBINE",
                         "BACKGROUND")
#: parameters that may be given at most once
_SINGLE = ("SIZE", "FORMAT", "INTERSECT", "RUNID", "EXECUTIONDURATION", "DESTRUCTION", "START", "PHASE", "MODE",
           *GENERATION_PARAMETERS)
#: every parameter a job accepts (POS, COLLECTION and BAND repeat)
JOB_PARAMETERS = ("POS", *_SINGLE, "COLLECTION", "BAND", "UPLOAD")
