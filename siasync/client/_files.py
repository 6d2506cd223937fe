"""The download directory: safe names, atomic writes, the job it holds, and resume bookkeeping.

A file appears under its final name only complete: it is written as ``.NAME.part`` and
renamed. The directory remembers its job's URL in ``.siasync-job``, and the ETags of
products whose size the service did not list in ``.siasync-etags``. While a fetch runs it
holds an exclusive lock on the directory, so two fetches never write into one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Self

from siasync.client._models import ClientError, Product

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock
    fcntl = None  # type: ignore[assignment]

STATE_FILE = ".siasync-job"
ETAG_FILE = ".siasync-etags"
TABLE_FILE = "table.xml"
PART_SUFFIX = ".part"
_SAFE = re.compile(r"^[A-Za-z0-9._-]+$")


def safe_name(result_id: str) -> str:
    """The local file name of a result: its id, refused when it could escape or hide in the directory.

    Raises
    ------
    ClientError
        For an id with characters outside ``[A-Za-z0-9._-]``, a leading dot, or the table's file name.
    """
    if not _SAFE.match(result_id) or result_id.startswith(".") or result_id == TABLE_FILE:
        raise ClientError(f"refusing to write result {result_id!r}: not a safe file name")
    return result_id


def part_path(target: Path) -> Path:
    """The hidden temporary name a file is written under before it is renamed to ``target``."""
    return target.with_name(f".{target.name}{PART_SUFFIX}")


def write_atomic(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` through a temporary name, so ``target`` is never partial."""
    part = part_path(target)
    try:
        part.write_bytes(data)
        os.replace(part, target)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def remembered_job(directory: Path) -> str | None:
    """The URL of the job whose results ``directory`` holds, if a fetch wrote there."""
    try:
        return (directory / STATE_FILE).read_text().strip() or None
    except FileNotFoundError:
        return None


class Output:
    """A directory being filled with a job's results (use as a context manager: it locks the directory).

    With ``job_url`` the directory is bound to that job: it remembers the URL, and refuses
    to take the results of another job.
    """

    def __init__(self, directory: Path | str, job_url: str | None = None) -> None:
        self.path, self.job_url = Path(directory), job_url
        self._lock: int | None = None
        self._etags: dict[str, str] = {}

    def __enter__(self) -> Self:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ClientError(f"cannot create {self.path}: {exc.strerror or exc}") from None
        held = remembered_job(self.path) if self.job_url is not None else None
        if held is not None and held != self.job_url:
            raise ClientError(f"{self.path} holds the results of {held}; resume that job or choose another directory")
        self._lock = os.open(self.path, os.O_RDONLY)
        if fcntl is not None:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.__exit__()
                raise ClientError(f"another siasync fetch is writing into {self.path}") from None
        if held is None and self.job_url is not None:
            write_atomic(self.path / STATE_FILE, f"{self.job_url}\n".encode())
        for stale in self.path.glob(f".*{PART_SUFFIX}"):  # left by a fetch that was killed
            stale.unlink(missing_ok=True)
        self._etags = self._read_etags()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            os.close(self._lock)  # releases the lock
            self._lock = None

    def target(self, product: Product) -> Path:
        """Where a product goes."""
        return self.path / safe_name(product.id)

    def complete(self, product: Product) -> bool | None:
        """Whether the product's file is already complete: by its size; None when only its ETag can tell."""
        try:
            size = self.target(product).stat().st_size
        except FileNotFoundError:
            return False
        if product.size is not None:
            return size == product.size
        return None if product.id in self._etags else False

    def etag(self, product: Product) -> str | None:
        """The ETag the product's complete file was downloaded with (recorded only when its size was unknown)."""
        return self._etags.get(product.id)

    def record_etag(self, product: Product, etag: str | None) -> None:
        """Remember the ETag of a product downloaded without a known size."""
        if product.size is not None or not etag:
            return
        self._etags[product.id] = etag
        with open(self.path / ETAG_FILE, "a", encoding="utf-8") as f:
            f.write(f"{product.id} {etag}\n")

    def _read_etags(self) -> dict[str, str]:
        try:
            lines = (self.path / ETAG_FILE).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return {}
        return dict(line.split(" ", 1) for line in lines if " " in line)  # later lines win
