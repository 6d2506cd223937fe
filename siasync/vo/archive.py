"""The archive's own files, as DataLink links them: each image's FITS file, and a PNG preview of it.

A preview shows the whole image at most `PREVIEW_SIDE` pixels on its longer side (every
n-th row and column of the physical values, BLANK as missing). It is made once, on the
first request, in a worker thread, and kept under the state directory, named by the
image and the file's size and modification time, so that a file changed in place gets a
new preview.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from pathlib import Path

import numpy as np

from cutout.engine import ParentImage, check_unchanged
from cutout.errors import ArchiveError, ParentChangedError
from cutout.index import ArchiveIndex
from cutout.preview import preview_bytes
from cutout.scan import ImageRecord
from siasync.errors import NotFound
from siasync.vo.sia import ArchiveDamaged, ArchiveUnavailable
from storage.files import write_atomically

log = logging.getLogger(__name__)

#: pixels of a preview's longer side, at most
PREVIEW_SIDE = 1024


def preview_of(path: Path, record: ImageRecord, side: int = PREVIEW_SIDE) -> bytes:
    """A PNG of the whole image, every n-th pixel, at most ``side`` pixels across."""
    with ParentImage(path, record.hdu, record.id, record.path, record.indexed) as parent:
        ny, nx = parent.shape
        step = max(1, math.ceil(max(ny, nx) / side))
        rows = [parent.physical(y, y + 1, 0, nx)[0, ::step] for y in range(0, ny, step)]
    return preview_bytes(np.array(rows), "image/png")


class ArchiveFiles:
    """Each image's file and preview.

    Parameters
    ----------
    index : ArchiveIndex
    previews : path-like
        Where previews are kept.
    slots : asyncio.Semaphore
        Shared with the other synchronous work that reads the archive.
    """

    def __init__(self, index: ArchiveIndex, previews: str | os.PathLike, slots: asyncio.Semaphore) -> None:
        self.index = index
        self.previews = Path(previews)
        self.previews.mkdir(parents=True, exist_ok=True)
        self._slots = slots

    def record(self, image_id: str) -> ImageRecord:
        """The image with this id.

        Raises
        ------
        NotFound
        """
        record = self.index.by_id.get(image_id)
        if record is None:
            raise NotFound(f"no image {image_id!r} in this archive")
        return record

    def path(self, image_id: str) -> Path:
        """The file holding the image, as it was indexed.

        Raises
        ------
        NotFound
        ArchiveDamaged
            When the file changed since it was indexed (`cutout.engine.check_unchanged`).
        """
        record = self.record(image_id)
        path = self.index.path_of(record)
        try:
            check_unchanged(path, record.indexed, record.path)
        except FileNotFoundError:
            raise NotFound(f"the file of image {image_id!r} is gone") from None
        except ParentChangedError as exc:
            log.warning("/archive: %s", exc)
            raise ArchiveDamaged(f"image {record.id} cannot be served: {exc}") from None
        return path

    async def preview(self, image_id: str) -> bytes:
        """The image's PNG preview, made on first use (of the file as it was indexed: `path`)."""
        record = self.record(image_id)
        path = self.path(image_id)
        try:
            stat = await asyncio.to_thread(os.stat, path)
        except OSError:
            raise NotFound(f"the file of image {image_id!r} cannot be read") from None
        cached = self.previews / f"{record.id}-{stat.st_size}-{stat.st_mtime_ns}.png"
        try:
            return await asyncio.to_thread(cached.read_bytes)
        except FileNotFoundError:
            pass
        async with self._slots:
            try:
                data = await asyncio.to_thread(preview_of, path, record)
            except (ArchiveError, OSError, ValueError) as exc:
                log.warning("preview of %s: %s", record.path, exc)
                raise ArchiveUnavailable(f"image {image_id} cannot be read from the archive now") from None
        await asyncio.to_thread(write_atomically, cached, data)
        return data
