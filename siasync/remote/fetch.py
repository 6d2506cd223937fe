"""Fetching a remote image into the download cache, in a worker: the whole image, once, then cut locally.

A SIA 2.0 row's access URL is a DataLink document (pyvo reads it, and the ``#this`` link is
the dataset) or the dataset itself; a SIAP 1.0 row's is the image. Either is downloaded
with httpx, streamed to a temporary file of the cache: a body shorter than its
Content-Length, larger than ``max_image_bytes`` or longer to come than ``deadline_s`` is a
failed attempt. A HiPS tile is asked of the hips2fits service through astroquery
(`astroquery.hips2fits.hips2fitsClass.query_with_wcs`), with the tile's WCS. Every
download is read back as FITS (`cutout.scan.read_file`, which refuses truncated files)
before it is renamed into the cache; an answer that is not a FITS image counts as a
malformed answer, and is tried again like the other faults (`siasync.remote.faults`).
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import httpx

from cutout.errors import ArchiveError
from cutout.scan import ImageRecord, bandpass, read_file
from siasync import __version__
from siasync.remote.cache import DownloadCache
from siasync.remote.config import RemoteSpec
from siasync.remote.faults import Breaker, RemoteError, TimeoutSession
from siasync.remote.images import RemoteImage, tile

#: records of fetched images, per worker process (reading a file's WCS costs a few ms), by path and inode: a
#: cached file is never rewritten in place (a new download is a new file renamed over it), and a hit renews its
#: modification time, so that is no key
_RECORDS: OrderedDict[tuple[str, int, int], ImageRecord] = OrderedDict()
_RECORDS_KEPT = 256
#: the remotes that failed lately, for the downloads of this process
_BREAKER = Breaker()
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteSource:
    """What a worker needs to fetch a remote collection's images: the collection, and the download cache."""

    spec: RemoteSpec
    cache_root: str
    cache_bytes: int

    def cache(self) -> DownloadCache:
        """The download cache."""
        return DownloadCache(self.cache_root, self.cache_bytes)


def resolve(image: RemoteImage, source: RemoteSource) -> tuple[ImageRecord, Path, bool]:
    """The image in the download cache: its index record (the remote's id, collection and band), its file, and
    whether it was there already.

    Raises
    ------
    RemoteError
        When it could not be fetched, after the retries.
    """
    spec = source.spec

    def fetch(path: Path) -> None:
        _BREAKER.call(spec, f"image {image.id} ({image.title})", lambda: fetch_into(image, spec, path))

    path, hit = source.cache().get(image.key, fetch)
    try:
        return record_of(image, path), path, hit
    except FileNotFoundError:  # evicted by another process between the two: fetched again
        path, hit = source.cache().get(image.key, fetch)
        return record_of(image, path), path, hit


def record_of(image: RemoteImage, path: Path) -> ImageRecord:
    """The index record of a fetched image's first celestial image HDU, named and described as the remote
    collection's image."""
    stat = path.stat()
    key = (str(path), stat.st_ino, stat.st_size)
    cached = _RECORDS.get(key)
    if cached is not None and cached.id == image.id:
        _RECORDS.move_to_end(key)
        return cached
    try:
        records = read_file(path.parent, path.name, stat.st_size, stat.st_mtime_ns)
    except ArchiveError as exc:
        raise RemoteError(f"remote {image.remote}: image {image.id} is not a FITS image with a celestial WCS: "
                          f"{exc}") from None
    first = records[0]
    em = image.em
    if em is None and image.band != "unknown":
        known = bandpass(image.band)
        em = (known[1], known[2]) if known else None
    # mtime_ns 0: a download's modification time moves with each cache hit (`cache.DownloadCache`, least recently
    # used first), so only its size is checked against it when it is opened (`cutout.engine.check_unchanged`)
    record = dataclasses.replace(
        first, id=image.id, path=f"{image.remote}/{path.name}", collection=image.remote, band=image.band, mtime_ns=0,
        mjd=first.mjd if first.mjd is not None else image.mjd, em_min=em[0] if em else first.em_min,
        em_max=em[1] if em else first.em_max, instrument=first.instrument or image.instrument,
        facility=first.facility or image.facility, target=first.target or image.target)
    _RECORDS[key] = record
    while len(_RECORDS) > _RECORDS_KEPT:
        _RECORDS.popitem(last=False)
    return record


def fetch_into(image: RemoteImage, spec: RemoteSpec, path: Path) -> None:
    """One attempt to fetch an image into ``path``, checked to be a FITS image.

    Raises
    ------
    RemoteError, httpx.HTTPError, requests.RequestException, pyvo.dal.DALServiceError
        What went wrong (`siasync.remote.faults.classify` says whether to try again).
    """
    if spec.protocol == "hips2fits":
        _hips_tile(image, spec, path)
    else:
        _download(_dataset_url(image, spec), spec, path)
    try:
        read_file(path.parent, path.name)
    except ArchiveError as exc:
        raise RemoteError(f"the answer is not a FITS image: {exc}") from None


def _dataset_url(image: RemoteImage, spec: RemoteSpec) -> str:
    """The dataset's URL: the access URL, or the ``#this`` link of its DataLink document (read by pyvo)."""
    if not image.datalink:
        return image.url
    import warnings

    from pyvo.dal.adhoc import DatalinkResults

    with warnings.catch_warnings():  # pyvo's warnings on the remote's document: noise in our log
        warnings.simplefilter("ignore")
        links = DatalinkResults.from_result_url(image.url, session=TimeoutSession(spec.timeout_s))
    # by the exact term: pyvo's bysemantics() would download DataLink's vocabulary to expand it
    for link in (row for row in links if row.semantics == "#this"):
        if link.error_message:
            raise RemoteError(f"its DataLink document says: {link.error_message}", retryable=False)
        if link.access_url:
            return link.access_url
    raise RemoteError("its DataLink document has no #this link", retryable=False)


def _download(url: str, spec: RemoteSpec, path: Path) -> None:
    deadline = time.monotonic() + spec.deadline_s
    headers = {"User-Agent": f"siasync/{__version__}"}
    with httpx.Client(timeout=spec.timeout_s, follow_redirects=True, headers=headers) as client:
        with client.stream("GET", url) as response:
            response.raise_for_status()
            expected = response.headers.get("content-length")
            with open(path, "wb") as out:
                for chunk in response.iter_bytes(_CHUNK):
                    out.write(chunk)
                    if response.num_bytes_downloaded > spec.max_image_bytes:
                        raise RemoteError(f"larger than max_image_bytes ({spec.max_image_bytes})", retryable=False)
                    if time.monotonic() > deadline:
                        raise RemoteError(f"the download took longer than deadline_s ({spec.deadline_s:g} s)")
            if expected is not None and expected.isdigit() and response.num_bytes_downloaded != int(expected):
                raise RemoteError(f"the body was cut short: {response.num_bytes_downloaded} of {expected} bytes")


def _hips_tile(image: RemoteImage, spec: RemoteSpec, path: Path) -> None:
    """A HiPS tile, asked of the hips2fits service through astroquery with the tile's WCS."""
    import warnings

    from astropy.io import fits
    from astropy.utils.exceptions import AstropyWarning
    from astropy.wcs import WCS
    from astroquery.hips2fits import hips2fitsClass

    if image.tile is None:
        raise RemoteError(f"image {image.id} is not a HiPS tile", retryable=False)
    grid = tile(*image.tile, spec.scale_arcsec, spec.margin_deg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        wcs = WCS(fits.Header(grid.header()))
    wcs.pixel_shape = (grid.side, grid.side)
    client = hips2fitsClass()
    client.server, client.timeout = spec.url, spec.timeout_s
    response = client.query_with_wcs_async(hips=spec.hips, wcs=wcs, format="fits", min_cut=0.5, max_cut=99.5,
                                           stretch="linear", cmap="Greys_r")
    if response.status_code != 200:
        detail = ""
        try:  # hips2fits explains its refusals in JSON: title and description
            content = response.json()
            detail = ": " + ": ".join(str(content[k]) for k in ("title", "description") if k in content)
        except ValueError:
            pass
        raise RemoteError(f"HTTP {response.status_code} {response.reason}{detail}",
                          retryable=response.status_code >= 500 or response.status_code in (408, 429))
    expected = response.headers.get("content-length")
    if expected is not None and expected.isdigit() and len(response.content) != int(expected):
        raise RemoteError(f"the body was cut short: {len(response.content)} of {expected} bytes")
    if len(response.content) > spec.max_image_bytes:
        raise RemoteError(f"larger than max_image_bytes ({spec.max_image_bytes})", retryable=False)
    path.write_bytes(response.content)
