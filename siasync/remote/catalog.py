"""The server's side of remote collections: which remote images meet which fields, and which remotes answer.

**Queries per group of fields.** A job's fields are grouped by sky cell (HEALPix cells about
half of `RemoteSpec.max_query_deg` across), and each group is one query of the remote: a
circle around the group's fields. Each field then keeps the answer's images that meet it
under the job's INTERSECT (their footprints, as the index matches the archive's). Answers
are kept in the download cache's directory for a day (`QUERY_TTL_S`), keyed by the remote
and the circle, so a job that resumes (or another job over the same fields) plans the same
images without asking again; and in memory, for the jobs of this server. Queries run in
threads, at most `RemoteSpec.concurrency` at once per remote, each retried on the faults
that may pass. A HiPS collection needs no query (`siasync.remote.images.tiles_for`).

**Availability.** `RemoteCatalog.probe` asks each remote for a small document (SIA 2.0: its
VOSI capabilities; SIAP 1.0: its metadata query; hips2fits: its base URL) and says whether
it answered; the answer is kept for `PROBE_EVERY_S` seconds.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import astropy.units as u
import httpx
import numpy as np
from astropy_healpix import HEALPix

from cutout.scan import ImageRecord
from cutout.sky import Field, Intersect, unit_vectors
from siasync import __version__
from siasync.remote.cache import DownloadCache
from siasync.remote.config import RemoteSpec
from siasync.remote.faults import Breaker, RemoteError, classify
from siasync.remote.fetch import RemoteSource, resolve
from siasync.remote.images import RemoteImage, digest, matching, tile_of, tiles_for, tiles_in
from siasync.remote.query import query

#: seconds a remote query's answer is reused
QUERY_TTL_S = 86400.0
#: answers kept in memory
ANSWERS_KEPT = 1024
#: seconds a probe's answer is reused, and the longest a probe waits
PROBE_EVERY_S = 10.0
PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Group:
    """Fields that share one query: their indices, and the circle (ICRS degrees) that holds them."""

    fields: tuple[int, ...]
    ra: float
    dec: float
    radius: float


def groups(fields: Sequence[Field], max_deg: float) -> list[Group]:
    """The fields grouped by sky cell, each group with the circle around its fields' boxes.

    A field wider than ``max_deg`` is a group of its own; the grouping depends only on the fields,
    so the same fields always make the same queries.
    """
    order = max(0, min(12, math.ceil(math.log2(58.6 / (max_deg / 2)))))
    grid = HEALPix(nside=2**order, order="nested")
    cells = grid.lonlat_to_healpix(np.array([f.ra for f in fields]) * u.deg,
                                   np.array([f.dec for f in fields]) * u.deg)
    members: dict[int, list[int]] = {}
    for i, cell in enumerate(cells):
        members.setdefault(int(cell), []).append(i)
    found = []
    for cell in sorted(members):
        indices = members[cell]
        wide = [i for i in indices if 2 * fields[i].radius > max_deg]
        rest = [i for i in indices if i not in wide]
        found += [_group([i], fields) for i in wide]
        if rest:
            found.append(_group(rest, fields))
    return found


def _group(indices: list[int], fields: Sequence[Field]) -> Group:
    vectors = unit_vectors(np.array([fields[i].ra for i in indices]), np.array([fields[i].dec for i in indices]))
    mean = vectors.mean(axis=0)
    centre = mean / np.linalg.norm(mean)
    distances = np.degrees(np.arccos(np.clip(vectors @ centre, -1.0, 1.0)))
    radius = max(float(d) + fields[i].radius for d, i in zip(distances, indices, strict=True))
    ra = float(np.degrees(np.arctan2(centre[1], centre[0])) % 360.0)
    dec = float(np.degrees(np.arcsin(np.clip(centre[2], -1.0, 1.0))))
    # rounded, so that a query's key (and the remote's answer) does not depend on the last bits of a float
    return Group(tuple(indices), round(ra, 7), round(dec, 7), max(round(radius + 5e-7, 6), 1e-6))


class RemoteCatalog:
    """The archive's remote collections, for the server.

    Parameters
    ----------
    specs : dict of RemoteSpec
        By name (`siasync.remote.config.load_remotes`).
    cache_root : path-like
        The download cache's directory (shared with the workers and the other servers).
    cache_bytes : int
        Its size limit.
    """

    def __init__(self, specs: dict[str, RemoteSpec], cache_root: str | Path, cache_bytes: int) -> None:
        self.specs = dict(specs)
        self.cache = DownloadCache(cache_root, cache_bytes)
        #: answers by key, with the time they were asked (monotonic)
        self._answers: OrderedDict[str, tuple[float, list[RemoteImage]]] = OrderedDict()
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._breaker = Breaker()
        self._probes: dict[str, tuple[float, str | None]] = {}

    def __bool__(self) -> bool:
        return bool(self.specs)

    @property
    def names(self) -> list[str]:
        """The remote collections' names, sorted."""
        return sorted(self.specs)

    @property
    def bands(self) -> set[str]:
        """The bands the remote collections declare."""
        return {b for spec in self.specs.values() for b in spec.all_bands}

    def among(self, collections: Iterable[str]) -> list[RemoteSpec]:
        """The remote collections among ``collections`` (a job's or a query's COLLECTION values)."""
        return [self.specs[c] for c in collections if c in self.specs]

    def source(self, name: str) -> RemoteSource:
        """What a worker needs to fetch the collection's images."""
        return RemoteSource(self.specs[name], str(self.cache.root), self.cache.max_bytes)

    async def find(self, spec: RemoteSpec, fields: Sequence[Field], intersect: Intersect,
                   bands: Iterable[str] = ()) -> tuple[list[list[RemoteImage]], list[str]]:
        """Per field, the collection's images that meet it; and a warning per group of fields whose query failed."""
        bands = tuple(bands)
        if spec.protocol == "hips2fits":
            tiles = tiles_for(spec, fields, intersect)
            return [[t for t in found if not bands or t.band in bands] for found in tiles], []
        per_field: list[list[RemoteImage]] = [[] for _ in fields]
        problems = []
        work = groups(fields, spec.max_query_deg)
        answers = await asyncio.gather(*(self.answer(spec, g.ra, g.dec, g.radius) for g in work),
                                       return_exceptions=True)
        for group, answer in zip(work, answers, strict=True):
            if isinstance(answer, BaseException):
                if not isinstance(answer, Exception):
                    raise answer
                reason = str(answer) if isinstance(answer, RemoteError) else f"remote {spec.name}: " \
                                                                             f"{classify(answer)[1]}"
                problems.append((group.fields, reason))
                continue
            for i in group.fields:
                per_field[i] = matching(answer, fields[i], intersect, bands)
        return per_field, [f"{reason}; no image of {spec.name} for {_fields_text(fields_)}"
                           for fields_, reason in problems]

    async def in_region(self, spec: RemoteSpec, ra: float, dec: float, radius: float,
                        limit: int = 10_000) -> list[RemoteImage]:
        """The collection's images meeting a circle (a SIA 2.0 region's cap), as the remote answers (at most
        ``limit`` tiles of a HiPS survey).

        Raises
        ------
        RemoteError
            When the remote could not answer, or the circle holds too many tiles.
        """
        if spec.protocol == "hips2fits":
            try:
                return tiles_in(spec, ra, dec, radius, limit)
            except ValueError as exc:
                raise RemoteError(f"remote {spec.name}: {exc}", retryable=False) from None
        return await self.answer(spec, ra, dec, radius)

    async def answer(self, spec: RemoteSpec, ra: float, dec: float, radius: float) -> list[RemoteImage]:
        """The remote's images in a circle: from memory, from the disk (within `QUERY_TTL_S`), or asked.

        Raises
        ------
        RemoteError
            When the remote could not answer, after the retries.
        """
        key = digest(spec.protocol, spec.client, spec.url, spec.remote_collections, spec.params, spec.band,
                     spec.maxrec, repr(ra), repr(dec), repr(radius))
        kept = self._answers.get(key)
        if kept is not None and time.monotonic() - kept[0] < QUERY_TTL_S:
            self._answers.move_to_end(key)
            return kept[1]
        stored = await asyncio.to_thread(self.cache.read_json, "queries", f"{spec.name}/{key}", QUERY_TTL_S)
        if stored is not None:
            found = [RemoteImage.from_json(item) for item in stored]
        else:
            async with self._slot(spec):
                found = await asyncio.to_thread(self._breaker.call, spec, f"query of the circle {ra:.6f} "
                                                f"{dec:.6f} {radius:.6f}", lambda: query(spec, ra, dec, radius))
            await asyncio.to_thread(self.cache.write_json, "queries", f"{spec.name}/{key}",
                                    [image.to_json() for image in found])
        self._answers[key] = (time.monotonic(), found)
        while len(self._answers) > ANSWERS_KEPT:
            self._answers.popitem(last=False)
        return found

    def _slot(self, spec: RemoteSpec) -> asyncio.Semaphore:
        """The remote's requests from this server's own threads at once (its ``concurrency``)."""
        return self._slots.setdefault(spec.name, asyncio.Semaphore(spec.concurrency))

    async def fetch(self, image: RemoteImage) -> tuple[ImageRecord, Path, bool]:
        """`siasync.remote.fetch.resolve` in a thread, within the remote's concurrency (synchronous answers).

        Raises
        ------
        RemoteError
            When it could not be fetched, after the retries.
        """
        async with self._slot(self.specs[image.remote]):
            return await asyncio.to_thread(resolve, image, self.source(image.remote))

    async def remember(self, images: Iterable[RemoteImage]) -> None:
        """Keep images by id, on disk (for a week after their last mention): a synchronous query's rows name
        them, and ``/sia/cutout`` finds them by id on any server that shares the cache."""
        for image in images:
            if image.tile is None:
                await asyncio.to_thread(self.cache.write_json, "ids", image.id, image.to_json())

    async def image(self, image_id: str) -> RemoteImage | None:
        """A remote image by id: a HiPS tile (its id says which), or an image a query answered (`remember`)."""
        for spec in self.specs.values():
            if spec.protocol == "hips2fits" and (found := tile_of(spec, image_id)) is not None:
                return found
        if not image_id or "/" in image_id or image_id.startswith("."):
            return None
        stored = await asyncio.to_thread(self.cache.read_json, "ids", image_id, math.inf)
        image = RemoteImage.from_json(stored) if stored is not None else None
        return image if image is not None and image.remote in self.specs else None

    async def probe(self, spec: RemoteSpec) -> str | None:
        """Why the remote does not answer now, or None when it does (kept for `PROBE_EVERY_S` seconds)."""
        seen = self._probes.get(spec.name)
        if seen is not None and time.monotonic() - seen[0] < PROBE_EVERY_S:
            return seen[1]
        url = {"sia2": f"{spec.url}/capabilities",
               "siap": f"{spec.url}{'&' if '?' in spec.url else '?'}FORMAT=METADATA"}.get(spec.protocol, spec.url)
        problem = None
        try:
            async with httpx.AsyncClient(timeout=min(PROBE_TIMEOUT_S, spec.timeout_s), follow_redirects=True,
                                         headers={"User-Agent": f"siasync/{__version__}"}) as client:
                response = await client.get(url)
            if response.status_code >= 500:
                problem = f"HTTP {response.status_code} {response.reason_phrase}"
        except Exception as exc:
            problem = classify(exc)[1]
        self._probes[spec.name] = (time.monotonic(), problem)
        return problem


def _fields_text(indices: Sequence[int]) -> str:
    """'field 3', or 'fields 3, 5 and 8', or 'fields 3, 5, ... (12 fields)'."""
    if len(indices) == 1:
        return f"field {indices[0]}"
    if len(indices) <= 4:
        return "fields " + ", ".join(map(str, indices[:-1])) + f" and {indices[-1]}"
    return "fields " + ", ".join(map(str, indices[:3])) + f", ... ({len(indices)} fields)"
