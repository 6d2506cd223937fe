"""Representations of jobs: UWS 1.1 XML, JSON, and ISO 8601 text."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from xml.etree import ElementTree as ET

from cutout.index import ArchiveIndex
from siasync.auth import ANONYMOUS
from storage.jobs import Job, Result
from storage.table import MIME as TABLE_MIME
from storage.table import escape, quoteattr, xml_safe

#: the fixed result id of the growing SIAP table
TABLE_ID = "table"

UWS = "http://www.ivoa.net/xml/UWS/v1.0"
XLINK = "http://www.w3.org/1999/xlink"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
SIASYNC = "urn:siasync"
for prefix, uri in (("uws", UWS), ("xlink", XLINK), ("xsi", XSI), ("siasync", SIASYNC)):
    ET.register_namespace(prefix, uri)


def iso(instant: datetime | None) -> str:
    """ISO 8601 in UTC with a ``Z`` (empty for None)."""
    if instant is None:
        return ""
    return instant.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _el(parent: ET.Element, name: str, text: str | None = None, nil: bool = False, **attrs: str) -> ET.Element:
    """A UWS element; its text and attributes are made XML-safe (`storage.table.xml_safe`): they may echo
    what a client sent or what a file held."""
    element = ET.SubElement(parent, f"{{{UWS}}}{name}", {k: xml_safe(v) for k, v in attrs.items()})
    if nil:
        element.set(f"{{{XSI}}}nil", "true")
    elif text is not None:
        element.text = xml_safe(text)
    return element


def _document(root: ET.Element) -> bytes:
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def owner_id(job: Job) -> str | None:
    """The job's ownerId: None (nil) when nobody was authenticated."""
    return None if job.owner == ANONYMOUS else job.owner


#: the id prefix of SODA jobs: the kind of a job is part of its id
SODA_PREFIX = "soda-"


def job_path(job_id: str) -> str:
    """The URL path of a job: under ``/soda/async`` for a SODA job, ``/async`` for the others."""
    return f"/soda/async/{job_id}" if job_id.startswith(SODA_PREFIX) else f"/async/{job_id}"


def job_url(base: str, job_id: str) -> str:
    """Absolute URL of a job."""
    return base + job_path(job_id)


def result_url(base: str, job_id: str, result_id: str) -> str:
    """Absolute URL of a result."""
    return f"{job_url(base, job_id)}/results/{result_id}"


def jobs_xml(jobs: list[Job], base: str) -> bytes:
    """The UWS job list."""
    root = ET.Element(f"{{{UWS}}}jobs", {"version": "1.1"})
    for job in jobs:
        ref = _el(root, "jobref", id=job.id,
                  **{f"{{{XLINK}}}type": "simple", f"{{{XLINK}}}href": job_url(base, job.id)})
        _el(ref, "phase", job.phase)
        if job.run_id is not None:
            _el(ref, "runId", job.run_id)
        _el(ref, "ownerId", job.owner, nil=job.owner == ANONYMOUS)
        _el(ref, "creationTime", iso(job.creation_time))
    return _document(root)


#: the ``table`` entry listed first among a started job's results
TABLE_RESULT = Result(0, TABLE_ID, "", -1, TABLE_MIME)


def image_label(index: ArchiveIndex, image_id: str) -> tuple[str, str]:
    """(collection, band) of a table row's image; a co-add has no single collection (``mosaic-r``: band r)."""
    record = index.by_id.get(image_id)
    if record is not None:
        return record.collection, record.band
    if image_id.startswith("mosaic-"):
        return "", image_id.removeprefix("mosaic-")
    return "", ""


def result_xml(job_id: str, r: Result, base: str) -> str:
    """One ``uws:result`` element, built as text: a job can list tens of thousands."""
    size = f' size="{r.size}"' if r.size >= 0 else ""
    return (f"<uws:result id={quoteattr(r.result_id)}{size} mime-type={quoteattr(r.mime_type)}"
            f' xlink:type="simple" xlink:href={quoteattr(result_url(base, job_id, r.result_id))} />')


def result_json(job_id: str, r: Result, base: str) -> dict[str, Any]:
    """One result as JSON."""
    return {"id": r.result_id, "href": result_url(base, job_id, r.result_id),
            "size": r.size if r.size >= 0 else None, "mime-type": r.mime_type}


def upload_url(base: str, job_id: str, value: str) -> str:
    """Where the table of an UPLOAD value (``name,URI``) can be read back from this service."""
    return f"{job_url(base, job_id)}/parameters/{value.partition(',')[0].strip()}"


def _fill_parameters(container: ET.Element, job: Job, base: str) -> ET.Element:
    for name, value in job.parameters:
        if name == "UPLOAD":
            _el(container, "parameter", upload_url(base, job.id, value), id="upload", byReference="true")
        else:
            _el(container, "parameter", value, id=name.lower())
    return container


def job_xml_frame(job: Job, base: str) -> tuple[bytes, bytes, bytes]:
    """The UWS job document around its parameters and its results: the text before the parameters, between
    them and the results, and after the results (`parameters_items` and `result_xml` elements go in between)."""
    # xlink is used only by the results spliced in as text, so ElementTree would not declare it
    root = ET.Element(f"{{{UWS}}}job", {"version": "1.1", "xmlns:xlink": XLINK})
    _el(root, "jobId", job.id)
    if job.run_id is not None:
        _el(root, "runId", job.run_id)
    _el(root, "ownerId", job.owner, nil=job.owner == ANONYMOUS)
    _el(root, "phase", job.phase)
    _el(root, "quote", iso(job.quote), nil=job.quote is None)
    _el(root, "creationTime", iso(job.creation_time))
    _el(root, "startTime", iso(job.start_time), nil=job.start_time is None)
    _el(root, "endTime", iso(job.end_time), nil=job.end_time is None)
    _el(root, "executionDuration", str(job.execution_duration))
    _el(root, "destruction", iso(job.destruction))
    _el(root, "parameters")  # filled in as text
    _el(root, "results")  # filled in as text
    if job.error_message:
        summary = _el(root, "errorSummary", type=job.error_type or "fatal", hasDetail="true")
        _el(summary, "message", job.error_message)
    info = _el(root, "jobInfo")
    for key, value in job_info(job).items():
        ET.SubElement(info, f"{{{SIASYNC}}}{key}").text = xml_safe(str(value))
    before, _, rest = _document(root).partition(b"<uws:parameters />")
    between, _, after = rest.partition(b"<uws:results />")
    return before, between, after


def parameters_items(job: Job, base: str) -> str:
    """The job's ``uws:parameter`` elements as text (an upload by reference), for `job_xml_frame`."""
    return "".join(
        f'<uws:parameter id="upload" byReference="true">{escape(upload_url(base, job.id, value))}</uws:parameter>'
        if name == "UPLOAD" else f"<uws:parameter id={quoteattr(name.lower())}>{escape(value)}</uws:parameter>"
        for name, value in job.parameters)


#: the start of the UWS results list document (`result_xml` elements and ``</uws:results>`` follow)
RESULTS_HEAD = (f'<?xml version="1.0" encoding="UTF-8"?>\n<uws:results xmlns:uws="{UWS}" '
                f'xmlns:xlink="{XLINK}">')


def parameters_xml(job: Job, base: str) -> bytes:
    """The UWS parameters list."""
    return _document(_fill_parameters(ET.Element(f"{{{UWS}}}parameters"), job, base))


def job_info(job: Job) -> dict[str, Any]:
    """The service facts shown in jobInfo: progress, deferred start, warnings."""
    info: dict[str, Any] = {}
    for key in ("fields_total", "cost", "output_bytes", "fields_done", "pairs_done", "products", "bytes", "rate",
                "empty_count", "remote_fetched", "remote_cached"):
        if key in job.info:
            info[key] = job.info[key]
    if job.start_after is not None:
        info["start"] = iso(job.start_after)
    if job.info.get("empty_fields"):
        info["empty_fields"] = ",".join(map(str, job.info["empty_fields"]))
    for i, warning in enumerate(job.info.get("warnings", [])):
        info[f"warning{i + 1}"] = warning
    return info


def parameters_json(job: Job, base: str) -> list[dict[str, Any]]:
    """The job's parameters as JSON items (an upload by reference)."""
    return [{"id": "upload", "value": upload_url(base, job.id, v), "byReference": True} if n == "UPLOAD"
            else {"id": n.lower(), "value": v} for n, v in job.parameters]


def job_json_frame(job: Job) -> dict[str, Any]:
    """The job as JSON (same content as the XML) with its parameters and results lists left empty: they are
    filled in from `parameters_json` and `result_json` items."""
    return {
        "jobId": job.id, "runId": job.run_id, "ownerId": owner_id(job), "phase": job.phase,
        "quote": iso(job.quote) or None, "creationTime": iso(job.creation_time),
        "startTime": iso(job.start_time) or None, "endTime": iso(job.end_time) or None,
        "executionDuration": job.execution_duration, "destruction": iso(job.destruction),
        "parameters": [],
        "results": [],
        "errorSummary": {"type": job.error_type, "message": job.error_message} if job.error_message else None,
        "jobInfo": job_info(job),
    }


def jobs_json(jobs: list[Job], base: str) -> list[dict[str, Any]]:
    """The job list as JSON."""
    return [{"jobId": j.id, "href": job_url(base, j.id), "phase": j.phase, "runId": j.run_id,
             "ownerId": owner_id(j), "creationTime": iso(j.creation_time)} for j in jobs]
