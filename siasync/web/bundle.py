"""Download everything: a job's products so far, streamed as one zip as it is written.

Nothing is built in memory or on disk first: each file is read in chunks and written through
`zipfile` into a sink that the response drains after every chunk (entries carry data
descriptors, so no header is rewritten after its data). The archive holds, under one folder
named after the job, ``manifest.csv`` (one line per product), the products, ``table.xml``
(the SIAP table of those products) and ``README.txt``, which says whether the job was still
running, and how to fetch the rest.
"""

from __future__ import annotations

import csv
import io
import time
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiofiles

from siasync.uws.jobs import ACTIVE, JobService
from siasync.uws.params import StagingRequest
from siasync.uws.representations import image_label, iso, job_url
from storage.browse import JobBrowser
from storage.jobs import Job, Result
from storage.table import FOOTER, header, with_base

CHUNK = 256 * 1024
PAGE = 1000
MANIFEST_COLUMNS = ("file", "field", "ra", "dec", "image_id", "collection", "band", "mime_type", "size")


class _Sink:
    """Where `zipfile` writes: bytes kept until drained. It can tell but not seek, so zipfile streams."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._offset = 0
        self._drained = 0

    def write(self, data: bytes) -> int:
        self._chunks.append(bytes(data))
        self._offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self._offset

    def flush(self) -> None:
        pass

    @property
    def pending(self) -> int:
        """Bytes written and not drained yet."""
        return self._offset - self._drained

    def drain(self) -> bytes:
        data, self._chunks = b"".join(self._chunks), []
        self._drained = self._offset
        return data


def bundle_name(job: Job) -> str:
    """The download's file name: partial while the job may still add products."""
    return f"siasync-{job.id}{'-partial' if job.phase in ACTIVE else ''}.zip"


async def zip_stream(service: JobService, browser: JobBrowser, job: Job, base: str) -> AsyncIterator[bytes]:
    """The job's products registered so far, with a manifest, the table and a note, as zip bytes."""
    last_result, last_row = await browser.snapshot(job.id)
    sink = _Sink()
    folder = f"siasync-{job.id}"
    request = StagingRequest.from_spec(job.spec)
    index = service.index
    count, total, missing = 0, 0, []
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        with archive.open(_entry(f"{folder}/manifest.csv"), "w", force_zip64=True) as out:
            lines = io.StringIO()
            writer = csv.writer(lines, lineterminator="\n")
            out.write((",".join(MANIFEST_COLUMNS) + "\n").encode())
            async for result in _results(service, job.id, last_result):
                field = result.meta.get("field")
                ra, dec = request.positions[field] if isinstance(field, int) else ("", "")
                image = result.meta.get("image", "")
                collection, band = image_label(index, image) if index is not None else ("", "")
                writer.writerow((result.result_id, field, ra, dec, image, collection, band, result.mime_type,
                                 result.size))
                out.write(lines.getvalue().encode())
                lines.seek(0)
                lines.truncate()
                if sink.pending >= CHUNK:
                    yield sink.drain()
        async for result in _results(service, job.id, last_result):
            try:
                f = await aiofiles.open(service.files.path(job.id, result.path), "rb")
            except (FileNotFoundError, ValueError):
                missing.append(result.result_id)
                continue
            try:
                with archive.open(_entry(f"{folder}/{result.result_id}", result.size), "w") as out:
                    while chunk := await f.read(CHUNK):
                        out.write(chunk)
                        yield sink.drain()
            finally:
                await f.close()
            count, total = count + 1, total + result.size
        if job.start_time is not None:
            with archive.open(_entry(f"{folder}/table.xml"), "w", force_zip64=True) as out:
                out.write(header({"JOB_PHASE": job.phase}, f"siasync job {job.id}: the products of this archive")
                          .encode())
                after = 0
                while rows := await browser.rows_upto(job.id, after, last_row):
                    out.write(with_base("".join(row for _, row in rows), base).encode())
                    after = rows[-1][0]
                    yield sink.drain()
                out.write(FOOTER.encode())
        archive.writestr(_entry(f"{folder}/README.txt"), readme(job, base, count, total, missing))
    yield sink.drain()


async def _results(service: JobService, job_id: str, upto: int) -> AsyncIterator[Result]:
    after = 0
    while batch := await service.store.results(job_id, after, limit=PAGE):
        for result in batch:
            if result.seq > upto:
                return
            yield result
        after = batch[-1].seq


def _entry(name: str, size: int = 0) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, time.gmtime()[:6])
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    info.file_size = size  # zipfile decides on zip64 from it
    return info


def readme(job: Job, base: str, count: int, total: int, missing: list[str]) -> str:
    """The archive's note: what it holds, whether the job was still running, and how to get the rest."""
    url = job_url(base, job.id)
    lines = [f"siasync job {job.id} ({url})", "",
             f"This archive was made at {iso(datetime.now(UTC))}, when the job was {job.phase}.",
             f"It holds {count} products ({total} bytes), listed in manifest.csv, and their SIAP table, table.xml."]
    if job.phase in ACTIVE:
        lines += ["", "NOTE: the job was still running: it will make more products than this archive holds.",
                  "Download the archive again once the job has completed, or fetch every file as it is made",
                  "(files already there are skipped):", "",
                  f"    siasync fetch --job {url} --out {job.id}"]
    if missing:
        lines += ["", f"{len(missing)} products listed in manifest.csv are not in this archive: their files were "
                      "deleted while it was written (the job was destroyed):", *(f"    {m}" for m in missing[:100])]
    return "\n".join(lines) + "\n"
