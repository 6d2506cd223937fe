"""The modern VO face over the archive: SIA 2.0 queries, DataLink documents and synchronous SODA cutouts.

Handlers call one method each; parsing and answering run off the event loop where they
cost more than a little (the ObsCore table is built once, in a thread, at start-up).
"""

from __future__ import annotations

import asyncio
import logging

from cutout.engine import ParentImage, cut
from cutout.errors import ArchiveError, NoOverlapError
from cutout.index import ArchiveIndex
from cutout.scan import ImageRecord
from cutout.sky import Field
from siasync.remote.catalog import RemoteCatalog
from siasync.uws.params import Limits, RawParams
from siasync.vo import datalink, sia2, soda
from siasync.vo.archive import ArchiveFiles
from siasync.vo.obscore import Datasets, ObsCoreTable
from siasync.vo.remote_rows import RemoteRows, obscore_rows
from siasync.vo.sia import ArchiveUnavailable

log = logging.getLogger(__name__)


class VoService:
    """SIA 2.0, DataLink and SODA sync over one archive.

    Parameters
    ----------
    table : ObsCoreTable
        The archive's images in the ObsCore model (`ObsCoreTable(Datasets(index, authority))`).
    limits : Limits
    max_records : int
        Most rows of one SIA 2.0 answer (MAXREC's default and largest value).
    files : ArchiveFiles
        The archive's files and previews.
    slots : asyncio.Semaphore
        Synchronous work reading the archive at once (shared with SIAP 1.0).
    remotes : RemoteCatalog, optional
        The archive's remote collections: a SIA 2.0 query that names them in COLLECTION gets their images too.
    """

    def __init__(self, table: ObsCoreTable, limits: Limits, max_records: int, files: ArchiveFiles,
                 slots: asyncio.Semaphore, remotes: RemoteCatalog | None = None) -> None:
        self.table, self.limits, self.max_records, self.files = table, limits, max_records, files
        self.datasets: Datasets = table.datasets
        self._slots = slots
        self.remotes = remotes

    @property
    def index(self) -> ArchiveIndex:
        """The archive index."""
        return self.datasets.index

    async def query(self, raw: RawParams, base: str) -> str:
        """A SIA 2.0 answer.

        Raises
        ------
        UsageError
            For a malformed query; its `error_document` is the answer to send.
        """
        query = sia2.parse_sia2(raw, self.max_records)
        specs = self.remotes.among(query.strings.get("COLLECTION", ())) if self.remotes else []
        remote = RemoteRows()
        if specs and query.maxrec != 0:
            remote = await obscore_rows(self.remotes, specs, query, self.datasets.authority,
                                        query.maxrec if query.maxrec is not None else self.max_records)
        return await asyncio.to_thread(sia2.answer, self.table, query, base, self._descriptors, remote.rows,
                                       remote.failures, remote.overflow)

    def _descriptors(self, base: str) -> str:
        return datalink.descriptor(base, "obs_publisher_did") + soda.descriptors(base) + sia2.self_descriptor(base)

    async def links(self, raw: RawParams, base: str) -> str:
        """A DataLink document for the request's IDs."""
        ids = datalink.parse_ids(raw)
        return await asyncio.to_thread(datalink.links, self.datasets, ids, base)

    async def cutout(self, raw: RawParams) -> tuple[bytes | None, str]:
        """A SODA sync cutout: its FITS bytes (None when the region holds no pixel of the image) and file name."""
        request = soda.parse_sync(raw, self.datasets, self.limits)
        record = request.record
        if not request.selected:
            return None, ""
        async with self._slots:
            try:
                data = await asyncio.to_thread(_cut, self.index, record, request.field)
            except (ArchiveError, OSError, ValueError) as exc:
                log.warning("/soda/sync: %s cannot be read: %s", record.path, exc)
                raise ArchiveUnavailable(f"image {record.id} cannot be read from the archive now") from None
        return data, f"{record.id}.fits"


def _cut(index: ArchiveIndex, record: ImageRecord, field: Field) -> bytes | None:
    try:
        with ParentImage(index.path_of(record), record.hdu, record.id, record.path, record.indexed) as parent:
            return cut(parent, field).to_fits()
    except NoOverlapError:
        return None

