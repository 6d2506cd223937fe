"""DataLink 1.1 ``{links}`` documents (``/datalink``): what can be done with each archive image.

For every ``ID`` (a publisher DID, or a bare image id), in the order given and with all of
an ID's rows together:

* ``#this``: the archive file holding the image (``/archive/{id}``, FITS);
* ``#preview``: a PNG of the whole image (``/archive/{id}/preview``);
* ``#cutout``, twice: the SODA sync and async services, as service descriptors with the
  dataset's ID fixed and the bounds of its coverage (circle, polygon, band, time).

An ID of no image of the archive gets one row with a ``NotFoundFault`` error message, as
DataLink 1.1 asks; the document is a normal answer all the same.
"""

from __future__ import annotations

from urllib.parse import quote

from cutout.scan import ImageRecord
from siasync.errors import UsageError
from siasync.uws.params import RawParams
from siasync.vo import soda
from siasync.vo.obscore import DATALINK_MIME, Datasets
from siasync.vo.votable import HEAD, TAIL, Col, Param, info, service_descriptor, status, table

STANDARD_ID = "ivo://ivoa.net/std/DataLink#links-1.1"
#: the DataLink 1.1 links table
COLUMNS: tuple[Col, ...] = (
    Col("ID", "char", "meta.id;meta.main", arraysize="*", description="the dataset asked for"),
    Col("access_url", "char", "meta.ref.url", arraysize="*"),
    Col("service_def", "char", "meta.ref", arraysize="*", description="the service descriptor of the link"),
    Col("error_message", "char", "meta.code.error", arraysize="*"),
    Col("description", "char", "meta.note", arraysize="*"),
    Col("semantics", "char", "meta.code", arraysize="*"),
    Col("content_type", "char", "meta.code.mime", arraysize="*"),
    Col("content_length", "long", "phys.size;meta.file", unit="byte"),
    Col("content_qualifier", "char", None, arraysize="*", description="product type of the linked content"),
)
#: most IDs one request resolves; beyond, QUERY_STATUS is OVERFLOW (never within one ID's rows)
MAX_IDS = 1000
_RESPONSE_FORMATS = ("votable", "application/x-votable+xml", "text/xml")


def parse_ids(raw: RawParams) -> list[str]:
    """The IDs of a links request (none is a valid, empty request).

    Raises
    ------
    UsageError
        For a RESPONSEFORMAT other than VOTable.
    """
    formats = [v for n, v in raw if n == "RESPONSEFORMAT"]
    if len(formats) > 1:
        raise UsageError("RESPONSEFORMAT", f"given {len(formats)} times; give it once")
    if formats and formats[0].split(";")[0].strip().lower() not in _RESPONSE_FORMATS:
        raise UsageError("RESPONSEFORMAT", f"{formats[0]!r} is not offered; the answer is a VOTable")
    return [v for n, v in raw if n == "ID"]


def descriptor(base: str, column: str) -> str:
    """The DataLink service descriptor of a discovery answer: each row's ID is in ``column`` (its FIELD's ID)."""
    return service_descriptor("datalink", STANDARD_ID, f"{base}/datalink",
                              [Param("ID", ref=column, ucd="meta.id;meta.main")],
                              "links of each image: the file, a preview, and SODA cutouts")


def archive_path(record: ImageRecord) -> str:
    """The URL path of an archive image's file."""
    return f"/archive/{quote(record.id, safe='')}"


def links(datasets: Datasets, ids: list[str], base: str) -> str:
    """The links document of ``ids``, links absolute from ``base``."""
    rows, descriptors = [], []
    for number, identifier in enumerate(ids[:MAX_IDS]):
        record = datasets.resolve(identifier)
        if record is None:
            rows.append((identifier, None, None, f"NotFoundFault: {identifier} is no dataset of this archive",
                         None, "#this", None, None, None))
            continue
        did = datasets.did(record)
        path = base + archive_path(record)
        rows += [
            (identifier, path, None, None, f"the FITS file holding image {record.id} (HDU {record.hdu})", "#this",
             "application/fits", record.filesize, "#image"),
            (identifier, path + "/preview", None, None, "a PNG preview of the whole image", "#preview",
             "image/png", None, "#image"),
            (identifier, None, f"soda-sync-{number}", None, "SODA cutout: the image's pixels in a region, now",
             "#cutout", "application/fits", None, "#image"),
            (identifier, None, f"soda-async-{number}", None, "SODA cutouts of many regions, as a UWS job",
             "#cutout", "application/fits", None, "#image"),
        ]
        descriptors.append(soda.descriptors(base, record, did, key=f"-{number}"))
    overflow = len(ids) > MAX_IDS
    return (HEAD + '<RESOURCE type="results">\n' + status("OK") + info("standardID", STANDARD_ID)
            + table(COLUMNS, rows)
            + (status("OVERFLOW", f"only the first {MAX_IDS} IDs are answered; ask again for the others")
               if overflow else "")
            + "</RESOURCE>\n" + "".join(descriptors) + TAIL)


#: the media type of links documents
MIME = DATALINK_MIME
