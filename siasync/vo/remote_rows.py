"""Remote collections in synchronous answers: SIAP 1.0 rows (``/sia``) and ObsCore rows (``/sia2/query``).

A query reaches a remote collection when its COLLECTION names it (without COLLECTION, an
answer, like a job, holds the archive's own images). The rows of remote images are marked:
a ``remote`` column holds the remote service's URL (empty for the archive's images), and a
remote that fails is an INFO of the answer, never its error.

* ``/sia``: each remote image that meets the field is fetched into the download cache (the
  first time), so that its cutout is described exactly, from the image's own WCS, as the
  archive's are; each row's access reference is ``/sia/cutout`` with the image's id, which
  cuts it from the cache: the same bytes a job stages for that pair.
* ``/sia2/query``: the images the remote answers for the query's region, as it describes
  them; ``access_url`` is the remote's own (its DataLink document or the file; for a HiPS
  tile, the hips2fits request that makes it).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cutout.errors import NoOverlapError
from cutout.geometry import Geometry
from cutout.regions import Circle, Polygon, Range
from cutout.siap import Column
from cutout.sky import Field, Intersect, footprint_circle
from siasync.remote.catalog import RemoteCatalog
from siasync.remote.config import RemoteSpec
from siasync.remote.faults import RemoteError
from siasync.remote.images import RemoteImage, hips_url
from siasync.vo.obscore import CALIB_LEVEL, COLUMNS, DATALINK_MIME
from siasync.vo.sia2 import INTERVALS, STRINGS
from siasync.vo.votable import cell

log = logging.getLogger(__name__)

#: the column that marks a SIAP 1.0 row of a remote collection (the ObsCore column is `siasync.vo.obscore`'s)
REMOTE_COLUMN = Column("remote", "meta.ref.url", "char", "*", None,
                       "the service a remote collection's image comes from; empty for the archive's own images")


def mark(row: str, remote: str = "") -> str:
    """A ``<TR>`` with the `REMOTE_COLUMN` cell added last."""
    return row[: row.rindex("</TR>")] + cell(remote or None) + "</TR>\n"


@dataclass
class RemoteRows:
    """The rows of a query's remote collections (marked), and what could not be answered."""

    rows: list[str] = field(default_factory=list)
    #: images left out: (image id, why)
    omitted: list[tuple[str, str]] = field(default_factory=list)
    #: remote collections that did not answer, and why
    failures: list[str] = field(default_factory=list)
    overflow: bool = False


async def find_images(remotes: RemoteCatalog, specs: Sequence[RemoteSpec], field_: Field, intersect: Intersect,
                      bands: Sequence[str]) -> tuple[list[tuple[RemoteSpec, RemoteImage]], list[str]]:
    """The images of remote collections that meet one field, and a message per collection that did not answer."""
    found, failures = [], []
    for spec, (per_field, problems) in zip(specs, await asyncio.gather(
            *(remotes.find(spec, [field_], intersect, bands) for spec in specs)), strict=True):
        failures += problems
        found += [(spec, image) for image in per_field[0]]
    return found, failures


async def sia_rows(remotes: RemoteCatalog, specs: Sequence[RemoteSpec], field_: Field, intersect: Intersect,
                   bands: Sequence[str], products: Sequence[str], columns: Sequence[Column], templates: Any,
                   slots: asyncio.Semaphore, room: int, cutout_path: Any) -> RemoteRows:
    """The ``/sia`` rows (cut to ``columns``, then marked) of the remote images meeting ``field_``, at most ``room``."""
    answer = RemoteRows()
    found, answer.failures = await find_images(remotes, specs, field_, intersect, bands)
    await remotes.remember(image for _, image in found)
    for spec, image in found:
        if len(answer.rows) + len(products) > room:
            answer.overflow = True
            break
        try:
            async with slots:
                record, _, _ = await remotes.fetch(image)
            geometry = Geometry(record.wcs(), record.shape, record.path)
            box = geometry.box(field_)
        except NoOverlapError:
            continue
        except RemoteError as exc:
            answer.omitted.append((image.id, str(exc)))
            continue
        except Exception as exc:  # one image never takes the query down
            log.warning("/sia: remote image %s: %s: %s", image.id, type(exc).__name__, exc)
            answer.omitted.append((image.id, f"remote {spec.name}: image {image.id} cannot be described: "
                                             f"{type(exc).__name__}: {exc}"))
            continue
        answer.rows += [mark(templates.render(record, geometry, box, field_, mime,
                                              cutout_path(record.id, field_, mime), columns), spec.url)
                        for mime in products]
    return answer


# -- SIA 2.0 -------------------------------------------------------------------------------------


async def obscore_rows(remotes: RemoteCatalog, specs: Sequence[RemoteSpec], query: Any, authority: str,
                       room: int) -> RemoteRows:
    """The ObsCore rows of the remote images meeting the query's regions and constraints, at most ``room``."""
    answer = RemoteRows()
    if not query.regions:
        answer.failures = [f"remote collection {spec.name}: searched only within a POS region; give POS"
                           for spec in specs]
        return answer
    seen: set[str] = set()
    for spec in specs:
        for region in query.regions:
            try:
                images = await remotes.in_region(spec, *region.cap(), limit=max(room, 1))
            except RemoteError as exc:
                answer.failures.append(str(exc))
                continue
            images = [i for i in images if i.id not in seen]
            hits = _meets(region, images)
            for image, hit in zip(images, hits, strict=True):
                values = obscore_values(image, spec, authority)
                if not hit or not satisfies(values, query):
                    continue
                if len(answer.rows) >= room:
                    answer.overflow = True
                    return answer
                seen.add(image.id)
                answer.rows.append("<TR>" + "".join(cell(values.get(c.name)) for c in COLUMNS) + "</TR>\n")
    return answer


def _meets(region: Circle | Polygon | Range, images: Sequence[RemoteImage]) -> np.ndarray:
    if not images:
        return np.zeros(0, dtype=bool)
    size = max(len(i.footprint) for i in images)
    footprints = np.stack([np.concatenate([np.asarray(i.footprint), np.repeat(np.asarray(i.footprint)[-1:],
                                                                              size - len(i.footprint), axis=0)])
                           for i in images])
    return region.meets(footprints)


def obscore_values(image: RemoteImage, spec: RemoteSpec, authority: str) -> dict[str, Any]:
    """An image's ObsCore row as the remote describes it, by column name."""
    (ra, dec), radius = footprint_circle(np.asarray(image.footprint, dtype=float))
    url, fmt = image.url, DATALINK_MIME if image.datalink else "application/fits"
    if image.tile is not None:
        url = hips_url(spec, image)
    em = image.em
    return {
        "dataproduct_type": "image", "calib_level": CALIB_LEVEL if spec.protocol == "hips2fits" else None,
        "obs_collection": spec.name, "obs_id": image.id,
        "obs_publisher_did": image.did or f"ivo://{authority}/remote?{image.id}", "access_url": url,
        "access_format": fmt, "access_estsize": max(1, math.ceil(image.size / 1000)) if image.size else None,
        "target_name": image.target, "s_ra": ra, "s_dec": dec, "s_fov": 2 * radius,
        "s_region": [c for point in image.footprint for c in point],
        "t_min": image.mjd, "t_max": image.mjd, "t_xel": 1 if image.mjd is not None else None,
        "em_min": em[0] if em else None, "em_max": em[1] if em else None, "em_xel": 1 if em else None,
        "facility_name": image.facility, "instrument_name": image.instrument, "obs_title": image.title,
        "s_pixel_scale": image.scale_arcsec, "band": image.band, "remote": spec.url,
    }


def satisfies(values: dict[str, Any], query: Any) -> bool:
    """Whether a row satisfies every constraint but the region (a value it lacks never does)."""
    for name, intervals in query.intervals.items():
        lo, hi = (values.get(c) for c in (INTERVALS[name][0], INTERVALS[name][-1]))
        if lo is None or hi is None or not any(hi >= a and lo <= b for a, b in intervals):
            return False
    for name, wanted in query.strings.items():
        if values.get(STRINGS[name]) not in wanted:
            return False
    if query.pol:
        return False
    if query.ids and values["obs_publisher_did"].lower() not in {i.strip().lower() for i in query.ids}:
        return False
    return not query.calib or values.get("calib_level") in query.calib
