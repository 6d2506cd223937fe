"""The OpenAPI description of the parameters and answers that handlers read and write themselves.

A handler reads its parameters from the query string and the body together (DALI: names are
case-insensitive, and a POST may carry them in either), so Litestar cannot see them in its
signature. Each route names them here, once: `documented` makes an `Operation` class that adds
them to the route's OpenAPI operation (query parameters for GET, a form-encoded or multipart body
for POST), gives the real media types of its answer, and the ``text/plain`` error answers
(``UsageError: PARAM: what is wrong``) instead of Litestar's JSON validation error.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from litestar.enums import ParamType
from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    RequestBody,
    Schema,
)

from cutout.mosaic import COMBINES, FRAMES, PROJECTIONS
from cutout.sky import Intersect
from siasync.uws.params import JOB_PARAMETERS
from siasync.vocabulary import FORMATS, MODES, PHASES
from siasync.web.http import TEXT

_STRING = Schema(type=OpenAPIType.STRING)
_ERRORS = {400: "UsageError: PARAM: what is wrong (a malformed or out-of-range parameter)",
           401: "AuthenticationError: no valid credentials (with a WWW-Authenticate challenge)",
           403: "PermissionDenied: another owner's job, or a change its phase does not allow",
           404: "NotFound: no such job, result or image (UsageError: ID: for an unknown SODA dataset)",
           413: "UsageError: request body: larger than the limit",
           416: "UsageError: Range: the byte range is not within the file",
           503: "ServiceUnavailable: an archive image cannot be read now"}
#: a DALI error VOTable (QUERY_STATUS ERROR), the error answer of SIA 2.0 and DataLink
VOTABLE_ERROR = "a VOTable whose QUERY_STATUS INFO is ERROR, with the message"


@dataclass(frozen=True)
class Param:
    """One parameter as clients see it."""

    name: str
    description: str
    schema: Schema = _STRING
    example: str | None = None
    #: given several times (as ``NAME=a&NAME=b``)
    repeat: bool = False
    #: where a GET carries it (a POST carries every parameter in its body)
    where: ParamType = ParamType.QUERY

    def as_schema(self) -> Schema:
        schema = Schema(type=self.schema.type, format=self.schema.format, enum=self.schema.enum,
                        minimum=self.schema.minimum, description=self.description,
                        examples=[self.example] if self.example is not None else None)
        return Schema(type=OpenAPIType.ARRAY, items=schema, description=self.description) if self.repeat else schema


def _choices(values: Iterable[str]) -> Schema:
    return Schema(type=OpenAPIType.STRING, enum=list(values))


_INSTANT = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.DATE_TIME)
POS = Param("POS", "a field centre, ra,dec in ICRS degrees; several in one value separated by ';' or new lines",
            example="150.1,2.2", repeat=True)
SIZE = Param("SIZE", "the field's width[,height] in degrees (at most the service's limit); 0: the whole images "
             "that contain POS (SIAP 1.0 SIZE=0)", example="0.01")
FORMAT = Param("FORMAT", "products per (field, image); case-insensitive", _choices(FORMATS), "image/fits")
INTERSECT = Param("INTERSECT", "how an image must meet the field", _choices(m.value for m in Intersect), "OVERLAPS")
COLLECTION = Param("COLLECTION", "only images of these collections (comma-separated or repeated)", repeat=True)
BAND = Param("BAND", "only images in these bands (comma-separated or repeated)", repeat=True)
#: MODE and the SIAP 1.0 image-generation parameters (MODE=mosaic or stack only)
GENERATION = (
    Param("MODE", "cutout (each image), mosaic (a co-add per band) or stack (every band on one grid)",
          _choices(m.upper() for m in MODES), "MOSAIC"),
    Param("NAXIS", "output pixels: nx[,ny]", example="512,512"),
    Param("CFRAME", "frame of the output grid", _choices(FRAMES), "ICRS"),
    Param("EQUINOX", "equinox of CFRAME=FK5 (Julian) or FK4 (Besselian)", example="2000"),
    Param("CRPIX", "reference pixel x,y (1-based)", example="256.5,256.5"),
    Param("CRVAL", "reference point lon,lat in CFRAME, degrees", example="150.1,2.2"),
    Param("CDELT", "degrees per pixel: s (east left) or CDELT1,CDELT2", example="0.0002"),
    Param("ROTANG", "position angle of the image's +y axis, degrees east of north", example="30"),
    Param("PROJ", "WCS projection of the output grid", _choices(PROJECTIONS), "TAN"),
    Param("COMBINE", "how overlapping images are combined", _choices(c.upper() for c in COMBINES), "MEAN"),
    Param("BACKGROUND", "MATCH: remove a constant offset per image so overlaps agree", _choices(["NONE", "MATCH"]),
          "MATCH"))
#: a job's parameters by name; names another part of the service adds to JOB_PARAMETERS get a plain description
_JOB = {p.name: p for p in (
    POS, SIZE, FORMAT, INTERSECT, COLLECTION, BAND,
    Param("UPLOAD", "a table of positions: name,URI with URI param:PART (a multipart file part) or an allowed "
          "URL; or a multipart file part named UPLOAD", example="fields,param:fields", repeat=True),
    Param("RUNID", "a label for the client, printable, at most 255 characters", example="night-1"),
    Param("EXECUTIONDURATION", "seconds the job may run (0: the longest allowed)", Schema(
        type=OpenAPIType.INTEGER, minimum=0), "3600"),
    Param("DESTRUCTION", "when the job and its results are deleted (ISO 8601)", _INSTANT),
    Param("START", "do not start before this instant (ISO 8601)", _INSTANT),
    Param("PHASE", "RUN: queue the job at once", _choices(["RUN"]), "RUN"), *GENERATION)}
JOB_PARAMS = tuple(_JOB.get(name, Param(name, f"the job parameter {name}")) for name in JOB_PARAMETERS)
SIA = (POS, SIZE, INTERSECT, Param("FORMAT", "formats of the products, comma-separated; METADATA describes the "
                                   "service", example="ALL"),
       Param("VERB", "columns: 0 the required ones to 3 all", _choices("0123"), "1"), COLLECTION, BAND, *GENERATION)
CUTOUT = (Param("ID", "the archive image id of a /sia row (several, with MODE=mosaic or stack)", example="demo",
                repeat=True), POS, SIZE, FORMAT, COLLECTION, BAND, *GENERATION,
          Param("PRODUCT", "with MODE=mosaic or stack: which of the field's products (mosaic-BAND or stack), as a "
                "/sia row's access reference names it", example="mosaic-r"))
_INTERVAL = "an interval 'lo hi' or one value, -Inf and +Inf for open ends"
SIA2 = (Param("POS", "CIRCLE lon lat r, RANGE lon1 lon2 lat1 lat2 or POLYGON lon1 lat1 lon2 lat2 ... (ICRS deg)",
              example="CIRCLE 150.1 2.2 0.05", repeat=True),
        *(Param(name, f"{what}: {_INTERVAL}", repeat=True, example=example) for name, what, example in (
            ("BAND", "wavelength in metres", "6e-7 7e-7"), ("TIME", "MJD", "55000 60000"),
            ("FOV", "field of view (diameter) in degrees", "0.1 1"), ("SPATRES", "resolution in arcsec", "0 2"),
            ("EXPTIME", "exposure in seconds", "0 +Inf"), ("TIMERES", "time resolution in seconds", "0 +Inf"),
            ("SPECRP", "spectral resolving power", "1 +Inf"))),
        Param("POL", "polarization states", repeat=True), Param("ID", "publisher DIDs (obs_publisher_did)",
                                                                repeat=True),
        *(Param(name, f"{name.lower()} names, exact", repeat=True) for name in
          ("COLLECTION", "FACILITY", "INSTRUMENT", "TARGET")),
        Param("DPTYPE", "data product types", _choices(["image", "cube"]), "image", repeat=True),
        Param("CALIB", "calibration levels", Schema(type=OpenAPIType.INTEGER, minimum=0), "2", repeat=True),
        Param("FORMAT", "access formats (MIME types)", repeat=True),
        Param("MAXREC", "most rows of the answer", Schema(type=OpenAPIType.INTEGER, minimum=0), "100"),
        Param("RESPONSEFORMAT", "votable (the only format)", example="votable"))
DATALINK = (Param("ID", "datasets: publisher DIDs or image ids", repeat=True),
            Param("RESPONSEFORMAT", "votable (the only format)", example="votable"))
#: SODA's parameters; async jobs also take the UWS settings of /async
SODA = (Param("ID", "the dataset: a publisher DID or an image id", repeat=True),
        Param("POS", "CIRCLE lon lat r, RANGE lon1 lon2 lat1 lat2 or POLYGON lon1 lat1 ... (ICRS deg)",
              example="CIRCLE 150.1 2.2 0.01", repeat=True),
        Param("CIRCLE", "lon lat radius (ICRS deg)", example="150.1 2.2 0.01", repeat=True),
        Param("POLYGON", "lon1 lat1 lon2 lat2 ... (ICRS deg)", repeat=True),
        Param("BAND", f"wavelength in metres: {_INTERVAL}"), Param("TIME", f"MJD: {_INTERVAL}"),
        Param("RESPONSEFORMAT", "application/fits (the only format)", example="application/fits"))
JOB_LIST = (Param("PHASE", "only jobs in these phases", _choices(PHASES), "COMPLETED", repeat=True),
            Param("AFTER", "only jobs created after this instant (ISO 8601)", _INSTANT),
            Param("LAST", "only the newest N jobs", Schema(type=OpenAPIType.INTEGER, minimum=1), "10"))
WAIT = (Param("WAIT", "block up to this many seconds while the job is active (-1: the longest allowed)",
              Schema(type=OpenAPIType.INTEGER, minimum=-1), "10"),
        Param("PHASE", "with WAIT: block only while the job is in this phase", _choices(PHASES), "EXECUTING"))
#: the job page's own parameters (HTML only)
PAGE_VIEW = (Param("PAGE", "HTML page: the page of fields to show (25 fields a page)",
                   Schema(type=OpenAPIType.INTEGER, minimum=1), "2"),
             Param("BAND", "HTML page: only the products of this band"),
             Param("COLLECTION", "HTML page: only the products of this collection"),
             Param("VIEW", "HTML page: a list or a thumbnail grid", _choices(["LIST", "GRID"]), "GRID"))
TABLE_VIEW = (Param("RESPONSEFORMAT", "VOTABLE (the default but for browsers) or HTML", _choices(["VOTABLE", "HTML"]),
                    "VOTABLE"),
              Param("PAGE", "HTML: the page of rows (200 a page)", Schema(type=OpenAPIType.INTEGER, minimum=1), "2"),
              Param("FIELD", "HTML: only the rows of this field", Schema(type=OpenAPIType.INTEGER, minimum=0), "0"))
EVENTS = (Param("AFTER", "the sequence number of the last result seen", Schema(type=OpenAPIType.INTEGER, minimum=0)),
          Param("Last-Event-ID", "the same, as a reconnecting EventSource sends it", where=ParamType.HEADER))
DOWNLOAD = tuple(Param(name, text, where=ParamType.HEADER) for name, text in (
    ("Range", "one byte range, bytes=first-last"), ("If-None-Match", "an ETag of the file"),
    ("If-Range", "an ETag: the range only while the file has it")))


def documented(*params: Param, body: bool = False, answers: Iterable[str] = (TEXT,),
               errors: Iterable[int] = (400, 401, 404), file: bool = False,
               usage_errors: str = TEXT) -> type[Operation]:
    """An `Operation` class declaring a route's parameters, answer media types and error answers.

    Parameters
    ----------
    params : Param
        What the route reads: from the query string and headers (``body`` False) or from a
        form-encoded or multipart body (``body`` True; headers stay headers).
    answers : iterable of str
        Media types of a successful answer (none for a redirect).
    errors : iterable of int
        Error statuses the route answers, each ``text/plain``.
    file : bool
        Whether the multipart body may carry an UPLOAD file part.
    usage_errors : str
        The media type of a 400 answer: text/plain, or a VOTable (`VOTABLE_ERROR`) for DALI queries.
    """
    answers, statuses = tuple(answers), sorted(set(errors))

    @dataclass
    class Documented(Operation):
        def __post_init__(self) -> None:
            query = [p for p in params if not body or p.where is ParamType.HEADER]
            self.parameters = [*(self.parameters or []), *(
                Parameter(name=p.name, param_in=p.where, schema=p.as_schema(), description=p.description,
                          required=False, style="form" if p.repeat else None, explode=True if p.repeat else None)
                for p in query)] or None
            if body:
                self.request_body = _form([p for p in params if p.where is not ParamType.HEADER], file)
            # Litestar's own: the success answer (its media type replaced), and a JSON 400 dropped
            responses = {status: response for status, response in (self.responses or {}).items() if int(status) < 400}
            for response in responses.values():
                response.content = {t: OpenAPIMediaType(schema=_STRING) for t in answers} or None
            for status in statuses:
                if status == 400 and usage_errors != TEXT:
                    responses["400"] = OpenAPIResponse(description=VOTABLE_ERROR, content={
                        usage_errors: OpenAPIMediaType(schema=_STRING)})
                    continue
                responses[str(status)] = OpenAPIResponse(description=_ERRORS[status], content={
                    TEXT: OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING, pattern=r"^[A-Za-z]+: \S"))})
            self.responses = responses

    return Documented


def _form(params: list[Param], file: bool) -> RequestBody:
    """A form body holding ``params``, form-encoded or multipart."""
    fields = {p.name: p.as_schema() for p in params}
    multipart = dict(fields)
    if file:
        multipart["UPLOAD"] = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY,
                                     description="a CSV or VOTable of positions (columns ra, dec, optional size)")
    forms = (("application/x-www-form-urlencoded", fields), ("multipart/form-data", multipart))
    return RequestBody(required=False, content={
        media_type: OpenAPIMediaType(schema=Schema(type=OpenAPIType.OBJECT, properties=properties))
        for media_type, properties in forms})
