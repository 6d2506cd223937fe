"""What the client hands back: products, progress, job documents, and its errors."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

#: phases after which a job changes no more (``DESTROYED`` is the events stream's word for a job that is gone)
FINAL = frozenset({"COMPLETED", "ERROR", "ABORTED", "ARCHIVED", "DESTROYED"})
#: the id of the growing SIAP table among a job's results
TABLE_ID = "table"
#: content types of a positions file, by suffix
UPLOAD_TYPES = {".csv": "text/csv", ".xml": "application/x-votable+xml", ".vot": "application/x-votable+xml",
                ".votable": "application/x-votable+xml"}
_FIELD = re.compile(r"^(\d+)\.")


class ClientError(Exception):
    """Base of the client's errors; its text is one line, fit to show a user."""


class ServiceError(ClientError):
    """The service answered with an error status (4xx or 5xx).

    The text is the service's own message (``UsageError: POS: ...``) when it sent one.
    """

    def __init__(self, status: int, message: str, url: str) -> None:
        super().__init__(message)
        self.status, self.url = status, url


class TransferError(ClientError):
    """The service could not be reached, or a transfer kept failing."""


def service_error(response: httpx.Response) -> ServiceError:
    """The error for a response with an error status (its body must have been read)."""
    text = response.text.strip() if response.headers.get("content-type", "").startswith("text/plain") else ""
    message = text.splitlines()[0] if text else f"HTTP {response.status_code} {response.reason_phrase}"
    return ServiceError(response.status_code, f"{message} ({response.request.method} {response.request.url})",
                        str(response.request.url))


@dataclass(frozen=True)
class Product:
    """One staged result of a job.

    Attributes
    ----------
    id : str
        The result id (``FIELD.IMAGE.EXT`` for siasync products); also the local file name.
    href : str
        Its absolute URL.
    size : int or None
        Its size in bytes, when the service says.
    mime_type : str
        Its content type.
    field : int or None
        The index of the field (position) it was cut for.
    """

    id: str
    href: str
    size: int | None
    mime_type: str
    field: int | None = None

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> Product:
        """From a result event or an item of a job's JSON ``results``."""
        result_id = str(item["id"])
        index = item.get("field")
        if index is None and (match := _FIELD.match(result_id)):
            index = int(match.group(1))
        size = item.get("size")
        return cls(result_id, str(item["href"]), None if size is None or int(size) < 0 else int(size),
                   str(item.get("mime-type") or "application/octet-stream"), None if index is None else int(index))


@dataclass(frozen=True)
class Progress:
    """A job's phase and the service's progress facts (its ``jobInfo``)."""

    phase: str
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fields_done(self) -> int | None:
        """Fields finished so far."""
        return _int(self.info.get("fields_done"))

    @property
    def fields_total(self) -> int | None:
        """Fields in the job."""
        return _int(self.info.get("fields_total"))

    @property
    def products(self) -> int | None:
        """Products registered so far."""
        return _int(self.info.get("products"))

    @property
    def final(self) -> bool:
        """Whether the job will change no more."""
        return self.phase in FINAL


@dataclass(frozen=True)
class JobStatus(Progress):
    """The whole job document (``GET /async/{job}`` as JSON)."""

    job_id: str = ""
    owner: str | None = None
    run_id: str | None = None
    creation_time: str | None = None
    start_time: str | None = None
    end_time: str | None = None
    quote: str | None = None
    destruction: str | None = None
    error: str | None = None
    parameters: Sequence[tuple[str, str]] = ()
    results: Sequence[Product] = ()

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> JobStatus:
        """From the job's JSON representation."""
        error = doc.get("errorSummary") or {}
        return cls(phase=str(doc["phase"]), info=dict(doc.get("jobInfo") or {}), job_id=str(doc.get("jobId", "")),
                   owner=doc.get("ownerId"), run_id=doc.get("runId"), creation_time=doc.get("creationTime"),
                   start_time=doc.get("startTime"), end_time=doc.get("endTime"), quote=doc.get("quote"),
                   destruction=doc.get("destruction"), error=error.get("message"),
                   parameters=tuple((p["id"], p["value"]) for p in doc.get("parameters") or ()),
                   results=tuple(Product.from_json(r) for r in doc.get("results") or () if r.get("id") != TABLE_ID))


@dataclass(frozen=True)
class JobRef:
    """One entry of the job list."""

    id: str
    url: str
    phase: str
    owner: str | None = None
    run_id: str | None = None
    creation_time: str | None = None

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> JobRef:
        """From an item of the JSON job list."""
        return cls(str(item["jobId"]), str(item["href"]), str(item["phase"]), item.get("ownerId"),
                   item.get("runId"), item.get("creationTime"))


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def job_form(pos: Iterable[tuple[float, float]] = (), size: float | tuple[float, float] | None = None,
             format: str | None = None, collection: Iterable[str] = (), band: Iterable[str] = (),
             intersect: str | None = None, run_id: str | None = None, run: bool = True,
             upload: bool = False, params: Mapping[str, str] | None = None) -> dict[str, str | list[str]]:
    """The form fields that create a job (``upload``: the positions come in a file part named ``fields``).

    ``params`` are any other job parameters, by name (e.g. MODE, NAXIS, CDELT).
    """
    form: dict[str, str | list[str]] = {name.upper(): str(value) for name, value in (params or {}).items()}
    positions = [f"{float(ra)!r},{float(dec)!r}" for ra, dec in pos]
    if positions:
        form["POS"] = positions
    if size is not None:
        form["SIZE"] = ",".join(repr(float(s)) for s in ((size,) if isinstance(size, int | float) else size))
    for name, value in (("FORMAT", format), ("INTERSECT", intersect), ("RUNID", run_id)):
        if value is not None:
            form[name] = value
    for name, values in (("COLLECTION", list(collection)), ("BAND", list(band))):
        if values:
            form[name] = values
    if upload:
        form["UPLOAD"] = "fields,param:fields"
    if run:
        form["PHASE"] = "RUN"
    return form


def upload_part(path: Path) -> tuple[str, bytes, str]:
    """The multipart file part of a positions file: (file name, content, content type).

    Raises
    ------
    ClientError
        When the file cannot be read or its suffix names no known format.
    """
    content_type = UPLOAD_TYPES.get(path.suffix.lower())
    if content_type is None:
        raise ClientError(f"{path}: positions must be a CSV (.csv) or VOTable (.xml, .vot) file")
    try:
        return path.name, path.read_bytes(), content_type
    except OSError as exc:
        raise ClientError(f"cannot read {path}: {exc.strerror or exc}") from None
