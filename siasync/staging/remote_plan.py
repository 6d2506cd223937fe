"""A job's remote work, planned in the background: no remote ever holds back the archive's own products.

With MODE=cutout the scheduler plans the archive's pairs as before, and a `RemotePlan` plans
the remote ones beside it: a chunk of fields at a time, each remote collection's images are
found (`siasync.remote.catalog.RemoteCatalog.find`: one query per group of nearby fields,
its answer kept), the pairs already registered (after a restart) are left out, and the rest
are sorted by image, so that one download serves all the fields of a batch, into batches
of `BATCH_PAIRS`. Each batch runs in its collection's own small pool (its *lane*, with the
collection's concurrency), never in the pool that cuts the archive's images.

With MODE=mosaic or stack a field's products need all their inputs, remote ones included,
so the plan makes every product of such a job: one whose inputs are all the archive's goes
to the archive's pool as soon as the field is planned; one with a remote input goes to that
collection's lane, and fetches it there.

A query that still fails after its retries is a warning of the job, naming the remote, the
reason and the fields left without its images; the plan goes on with the next chunk.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections import deque
from collections.abc import Callable

from cutout.index import ArchiveIndex
from cutout.sky import Intersect
from siasync.remote.catalog import RemoteCatalog
from siasync.remote.config import RemoteSpec
from siasync.remote.images import RemoteImage
from siasync.staging.pool import cancel_all
from siasync.staging.worker import BatchTask, RemotePairTask, coadd_tasks
from siasync.uws.params import StagingRequest
from storage.jobs import JobStore

log = logging.getLogger(__name__)

#: pairs of one remote collection per batch (sorted by image: one download serves them all)
BATCH_PAIRS = 8
#: fields planned per step
PLAN_FIELDS = 64
#: batches planned ahead of the pools
AHEAD = 32


class RemotePlan:
    """The remote part of one job's work (or every product of a mosaic or stack job), planned in a task."""

    def __init__(self, *, job_id: str, request: StagingRequest, remotes: list[RemoteSpec], catalog: RemoteCatalog,
                 index: ArchiveIndex, store: JobStore, results_root: str, results_path: str, progress: object,
                 finest_arcsec: float = 1.0) -> None:
        self.job_id, self.request, self.remotes, self.catalog = job_id, request, remotes, catalog
        #: a co-add's default pixel scale is never finer than the archive's finest (which its size was checked at)
        self.finest_arcsec = finest_arcsec
        self.index, self.store, self.progress = index, store, progress
        self.root, self.path = results_root, results_path
        #: the plan makes every product (MODE=mosaic or stack), not only the remote pairs
        self.coadd = request.mode != "cutout"
        self.ready: deque[BatchTask] = deque()
        #: every field before this one is planned
        self.next_field = 0
        self.finished = False
        self._changed = asyncio.Event()
        self._room = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"remote-plan-{job_id}")

    @property
    def first_pending(self) -> int:
        """The first field with work still to plan or to send."""
        pending = [pair.field_index for batch in self.ready for pair in batch.pairs]
        return min([self.next_field, *pending]) if pending else self.next_field

    @property
    def done(self) -> bool:
        """Whether everything is planned and sent."""
        return self.finished and not self.ready

    def take(self, room: Callable[[str | None], bool]) -> BatchTask | None:
        """The next planned batch whose lane (None: the archive's pool) has ``room``, or None."""
        for i, batch in enumerate(self.ready):
            if room(batch.lane):
                del self.ready[i]
                self._room.set()
                return batch
        return None

    async def changed(self) -> None:
        """Return when batches were planned, or the plan finished."""
        await self._changed.wait()
        self._changed.clear()

    async def close(self) -> None:
        """Stop planning."""
        await cancel_all([self._task])

    async def _run(self) -> None:
        try:
            total = len(self.request.positions)
            for lo in range(0, total, PLAN_FIELDS):
                batches = await self._plan(lo, min(total, lo + PLAN_FIELDS))
                self.ready.extend(batches)
                self.next_field = min(total, lo + PLAN_FIELDS)
                self._changed.set()
                while len(self.ready) >= AHEAD:
                    self._room.clear()
                    await self._room.wait()
        except Exception as exc:  # the archive's own products go on
            log.exception("job %s: planning its remote collections failed", self.job_id)
            self._warn([f"remote collections: planning stopped: {type(exc).__name__}: {exc}"])
        finally:
            self.finished = True
            self._changed.set()

    async def _plan(self, lo: int, hi: int) -> list[BatchTask]:
        request = self.request
        fields = request.fields(lo, hi)
        intersect = Intersect(request.intersect)
        found = await asyncio.gather(*(self.catalog.find(spec, fields, intersect, request.bands)
                                       for spec in self.remotes))
        remote: list[list[RemoteImage]] = [[] for _ in fields]
        for spec, (per_field, problems) in zip(self.remotes, found, strict=True):
            if problems:
                log.warning("job %s: %s", self.job_id, "; ".join(problems))
                self._warn(problems)
            for images, more in zip(remote, per_field, strict=True):
                images += more
        local = await asyncio.to_thread(lambda: [self.index.lookup(f, intersect, request.collections, request.bands)
                                                 for f in fields])
        done = await self.store.done_pairs(self.job_id, lo, hi - 1)
        self._count_empty(lo, [not a and not b for a, b in zip(local, remote, strict=True)])
        if self.coadd:
            return self._coadds(lo, fields, local, remote, done)
        return self._pairs(lo, fields, remote, done)

    def _pairs(self, lo: int, fields: list, remote: list[list[RemoteImage]], done: set) -> list[BatchTask]:
        """Batches of remote (field, image) pairs, per collection, sorted by image."""
        by_lane: dict[str, list[RemotePairTask]] = {}
        products = self.request.products
        for offset, images in enumerate(remote):
            index = lo + offset
            for image in images:
                if (index, image.id) in done:
                    self.progress.pairs += 1
                    continue
                by_lane.setdefault(image.remote, []).append(
                    RemotePairTask(index, fields[offset], image, self.catalog.source(image.remote), products))
        batches = []
        for pairs in by_lane.values():
            pairs.sort(key=lambda p: (p.image.id, p.field_index))
            batches += [BatchTask(self.job_id, self.root, self.path, tuple(pairs[i:i + BATCH_PAIRS]))
                        for i in range(0, len(pairs), BATCH_PAIRS)]
        return batches

    def _coadds(self, lo: int, fields: list, local: list, remote: list[list[RemoteImage]],
                done: set) -> list[BatchTask]:
        """A batch per generated product, local and remote inputs together."""
        request = self.request
        batches = []
        for offset, (field, records, images) in enumerate(zip(fields, local, remote, strict=True)):
            index = lo + offset
            sources = {image.id: (image, self.catalog.source(image.remote)) for image in images}
            paths = [str(self.index.path_of(r)) for r in records] + [""] * len(images)
            provisional = [image.provisional_record() for image in images]
            provisional = [dataclasses.replace(r, scale=max(r.scale, self.finest_arcsec) if math.isfinite(r.scale)
                                               else self.finest_arcsec) for r in provisional]
            units = coadd_tasks(index, field, records + provisional, paths,
                                request.mode, request.grid, request.products, request.combine,
                                request.match_background)
            for unit in units:
                if (index, unit.unit) in done:
                    self.progress.pairs += len(unit.records)
                    continue
                if sources:
                    unit = dataclasses.replace(unit, remotes=tuple(sources.get(r.id) for r in unit.records))
                batches.append(BatchTask(self.job_id, self.root, self.path, (unit,)))
        return batches

    def _count_empty(self, lo: int, empty: list[bool]) -> None:
        for offset, is_empty in enumerate(empty):
            if is_empty:
                self.progress.empty_count += 1
                if len(self.progress.empty_fields) < 1000:
                    self.progress.empty_fields.append(lo + offset)

    def _warn(self, notes: list[str]) -> None:
        self.progress.warnings = (self.progress.warnings + notes)[-100:]
