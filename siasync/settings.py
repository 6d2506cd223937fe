"""The service settings: one class, read from ``SIASYNC_*`` variables, overridden by CLI flags."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import urlsplit

ENV_PREFIX = "SIASYNC_"
_EXECUTOR = re.compile(r"local|dask-local(:[1-9][0-9]*)?|dask://[^\s/:]+:[0-9]+")
AUTH_MODES = ("anonymous", "token", "header")
#: an IVOA authority id (IVOA Identifiers 2.0, section 2.3.1)
_AUTHORITY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{2,}")
#: an allowed host: a name or IPv4 address (``.name``: and its subdomains), or an IPv6 address in brackets
_HOST = re.compile(r"\.?[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")


@dataclass(frozen=True)
class Settings:
    """Everything the service can be configured with.

    Each field can be set by an environment variable named ``SIASYNC_`` plus the field
    name in upper case (for example ``SIASYNC_STATE_DIR``).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    #: archive directory holding ``siasync-index.sqlite``
    archive: Path = Path("data/demo")
    #: jobs database and result files live here
    state_dir: Path = Path("var")
    #: external base URL for absolute links (default: taken from each request)
    public_url: str | None = None
    #: SQLAlchemy URL of the job store (default: SQLite in the state directory)
    database_url: str | None = None
    #: ``anonymous``, ``token`` (bearer tokens from ``tokens_file``) or ``header`` (X-Remote-User)
    auth: str = "anonymous"
    #: lines of ``TOKEN OWNER``; ``#`` starts a comment
    tokens_file: Path | None = None
    #: worker processes that cut (the local process pool, or a dask-local cluster's default)
    workers: int = max(os.cpu_count() or 1, 1)
    #: where batches run: ``local`` (a process pool of ``workers``), ``dask-local[:N]`` (a Dask
    #: LocalCluster of N worker processes, default ``workers``) or ``dask://HOST:PORT`` (a running cluster)
    executor: str = "local"
    #: jobs staged at once; they share the workers
    running_jobs: int = 16
    #: ``fair`` (owners in turn, small jobs first) or ``fifo`` (batches in arrival order)
    scheduling: str = "fair"
    #: per owner: unfinished jobs (PENDING, QUEUED, EXECUTING or HELD) at once, and the fields in all of them
    owner_active_jobs: int = 20
    owner_queued_fields: int = 100_000
    #: per owner: the bytes of the uploaded tables stored with all their jobs
    owner_upload_bytes: int = 256 * 1024 * 1024
    #: the estimated output of one job, and of all of one owner's unfinished jobs, in bytes
    max_job_bytes: int = 100 * 1000**3
    owner_output_bytes: int = 500 * 1000**3
    #: fields of one job: POS values and upload rows together
    max_fields: int = 100_000
    #: URL prefixes (scheme, host and a path from its first ``/``) that UPLOAD may fetch from;
    #: none by default, so that the service never fetches an address a client chose
    upload_urls: tuple[str, ...] = ()
    max_size_deg: float = 2.0
    #: pixels of one generated (MODE=mosaic or stack) image, per band
    max_output_pixels: int = 4096 * 4096
    #: archive images co-added into one generated product (a band's mosaic, or a stack)
    max_coadd_inputs: int = 32
    max_body_bytes: int = 16 * 1024 * 1024
    #: name=value pairs in one request (query string and body together, known names or not), and their bytes
    max_params: int = 101_000
    max_param_bytes: int = 8 * 1024 * 1024
    #: an uploaded table's columns (FIELDs of a VOTable, or CSV columns), and the bytes it may take in memory
    max_upload_columns: int = 1000
    max_upload_table_bytes: int = 64 * 1024 * 1024
    #: the bounded pool of threads that parses bodies and uploads and renders big documents, apart from file I/O:
    #: its threads, the tasks that may wait for one, and the seconds a request waits for its task at most
    cpu_threads: int = 2
    cpu_queue: int = 64
    cpu_timeout_s: float = 30.0
    #: synchronous mosaics and stacks (``/sia/cutout`` with MODE) made at once
    sync_coadds: int = 1
    #: the host names (``Host`` header) requests may use; empty: the served host (PUBLIC_URL's, else HOST's,
    #: with the loopback names for a loopback HOST); ``*`` allows any; ``.example.org`` allows its subdomains too
    allowed_hosts: tuple[str, ...] = ()
    destruction_default_s: int = 7 * 86400
    destruction_max_s: int = 30 * 86400
    execution_default_s: int = 12 * 3600
    execution_max_s: int = 72 * 3600
    wait_max_s: int = 60
    #: seconds between sweeps for expired jobs and jobs out of execution time
    reaper_interval_s: float = 5.0
    #: several servers on one store: seconds within which the jobs of a server that died are taken over by
    #: another (its heartbeat is renewed every fifth of this)
    lease_s: float = 30.0
    #: synchronous cutouts (``/sia/cutout``) and ``/sia`` header reads run at once, in threads off the event loop
    sync_cutouts: int = 4
    #: most rows one synchronous ``/sia`` query answers; beyond, QUERY_STATUS is OVERFLOW
    sia_max_records: int = 10_000
    #: log a line per HTTP request (off: the log has a line per job event and per error)
    access_log: bool = False
    #: the IVOA naming authority of the archive's datasets: their publisher DIDs (SIA 2.0, DataLink,
    #: SODA) are ``ivo://AUTHORITY/images?IMAGE_ID``; set it to the authority your registry knows you by
    ivo_authority: str = "siasync.local"
    #: the download cache of remote collections' images (default ``STATE_DIR/remote-cache``; servers sharing a
    #: state directory share it), and the most bytes its images may take
    remote_cache: Path | None = None
    remote_cache_bytes: int = 10 * 1024**3

    def __post_init__(self) -> None:
        if self.auth not in AUTH_MODES:
            raise ValueError(f"auth must be one of {', '.join(AUTH_MODES)}, got {self.auth!r}")
        if self.auth == "token" and self.tokens_file is None:
            raise ValueError("auth 'token' needs a tokens_file")
        for name in ("port", "workers", "running_jobs", "owner_active_jobs", "owner_queued_fields",
                     "owner_upload_bytes", "max_job_bytes", "owner_output_bytes", "max_fields", "max_output_pixels",
                     "max_coadd_inputs", "max_body_bytes",
                     "max_params", "max_param_bytes", "max_upload_columns", "max_upload_table_bytes", "cpu_threads",
                     "cpu_queue", "cpu_timeout_s", "sync_coadds", "destruction_default_s", "destruction_max_s",
                     "execution_default_s", "execution_max_s", "wait_max_s", "sync_cutouts", "sia_max_records",
                     "remote_cache_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.scheduling not in ("fair", "fifo"):
            raise ValueError(f"scheduling must be fair or fifo, got {self.scheduling!r}")
        if not _EXECUTOR.fullmatch(self.executor):
            raise ValueError(f"executor must be local, dask-local[:N] or dask://HOST:PORT, got {self.executor!r}")
        if not (self.max_size_deg > 0 and self.reaper_interval_s > 0 and self.lease_s > 0):
            raise ValueError("max_size_deg, reaper_interval_s and lease_s must be positive")
        for prefix in self.upload_urls:
            url = urlsplit(prefix)
            if url.scheme not in ("http", "https") or not url.netloc or not url.path.startswith("/"):
                raise ValueError(f"upload_urls: {prefix!r} must be an http(s) URL with a path, e.g. "
                                 "https://data.example.org/lists/ (a bare host would also match longer host names)")
        for host in self.allowed_hosts:
            if host != "*" and not _HOST.fullmatch(host):
                raise ValueError(f"allowed_hosts: {host!r} is not a host name or address (a leading '.' allows "
                                 "subdomains, '*' any host)")
        if not _AUTHORITY.fullmatch(self.ivo_authority):
            raise ValueError(f"ivo_authority must be an IVOA authority id (letters, digits and ._~- , at least 3 "
                             f"characters, starting with a letter or digit), got {self.ivo_authority!r}")
        if self.destruction_default_s > self.destruction_max_s or self.execution_default_s > self.execution_max_s:
            raise ValueError("a default may not exceed its maximum")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``SIASYNC_*`` variables, then ``overrides`` (skipping None values)."""
        environ = os.environ if environ is None else environ
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _convert(f.name, hints[f.name], raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def sqlite(self) -> bool:
        """Whether the job store is SQLite (served by one process at a time)."""
        return self.database.startswith("sqlite")

    @property
    def database(self) -> str:
        """The job store URL."""
        return self.database_url or f"sqlite+aiosqlite:///{(self.state_dir / 'siasync.db').resolve()}"

    @property
    def download_cache(self) -> Path:
        """The directory of the remote collections' download cache."""
        return self.remote_cache or self.state_dir / "remote-cache"

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def _convert(name: str, hint: Any, raw: str) -> Any:
    text = str(hint)
    try:
        if "Path" in text:
            return Path(raw) if raw else None
        if hint is bool:
            if raw.strip().lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
                raise ValueError(f"expected true or false, got {raw!r}")
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
        if "tuple" in text:  # a list: separated by commas or spaces
            return tuple(raw.replace(",", " ").split())
    except ValueError as exc:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}: {exc}") from exc
    return raw or None if "None" in text else raw
