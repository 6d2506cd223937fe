"""What runs in worker processes: cut a batch of (field, image) pairs, or co-add a field's
images into a mosaic or stack (`CoaddTask`), and write the products.

Tasks and outcomes are plain data. A worker writes each product itself, under a
temporary name renamed into place (`storage.files.ResultFiles.write`), so bytes
never travel back through the server; it returns the metadata the server needs to
register the product and its table row. Each worker keeps a `ParentCache` for its
lifetime, and exits when the server process that started it is gone.

An image of a remote collection (`RemotePairTask`, or a co-add's remote input) is first
fetched into the download cache (`siasync.remote.fetch.resolve`: once, whoever asks), then
cut from there exactly as an archive image is cut; a remote that fails after its retries
makes a warning of the pair, never the job's end.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from astropy.io import fits

from cutout.engine import ParentCache, cut
from cutout.errors import NoOverlapError
from cutout.geometry import Geometry
from cutout.mosaic import Grid, GridSpec, Mosaic, coadd, colour_preview, mosaic_fits, read_input, stack_fits, unit_id
from cutout.preview import preview_bytes
from cutout.scan import ImageRecord
from cutout.siap import band_order, cutout_metadata, generated_metadata
from cutout.sky import Field
from siasync.remote.faults import RemoteError
from siasync.remote.fetch import RemoteSource, resolve
from siasync.remote.images import RemoteImage
from storage.files import ResultFiles
from storage.table import render_row

EXTENSIONS = {"image/fits": "fits", "image/png": "png", "image/jpeg": "jpg", "text/plain": "txt"}
_cache: ParentCache | None = None
#: geometries of index records (parsed from the stored WCS), per worker
_geometries: OrderedDict[str, Geometry] = OrderedDict()
_GEOMETRIES = 256


def record_geometry(record: ImageRecord) -> Geometry:
    """The geometry of a record as the index stored it (kept per worker): rows never open the file."""
    geometry = _geometries.get(record.id)
    if geometry is None:
        geometry = _geometries[record.id] = Geometry(record.wcs(), record.shape, record.path)
        while len(_geometries) > _GEOMETRIES:
            _geometries.popitem(last=False)
    else:
        _geometries.move_to_end(record.id)
    return geometry


def parent_problem(record: ImageRecord, exc: BaseException) -> str:
    """A warning naming an archive image that could not be read or cut, and why."""
    if isinstance(exc, OSError) and exc.strerror:
        reason = f"{exc.strerror}" + (f": {exc.filename}" if exc.filename else "")
    elif isinstance(exc, (ValueError, OSError)) and str(exc):
        reason = str(exc)
    else:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return f"image {record.id} ({record.path}) skipped: {reason}"


@dataclass(frozen=True)
class PairTask:
    """One (field, image) pair and the products to make of it."""

    field_index: int
    field: Field
    record: ImageRecord
    #: absolute path of the parent file
    path: str
    #: MIME types to write (empty for FORMAT=METADATA: a table row only)
    products: tuple[str, ...]
    #: SODA: when the field holds no pixel of the image, a text/plain result says so (else the pair is skipped)
    explain_misses: bool = False
    #: the index found that the field misses the image: nothing is read
    miss: bool = False


@dataclass(frozen=True)
class RemotePairTask:
    """One (field, image) pair of a remote collection: the image is fetched into the download cache, then cut."""

    field_index: int
    field: Field
    image: RemoteImage
    source: RemoteSource
    #: MIME types to write (empty for FORMAT=METADATA: a table row only)
    products: tuple[str, ...]


@dataclass(frozen=True)
class CoaddTask:
    """One generated product of a field: the mosaic of one band, or the stack of every band."""

    field_index: int
    field: Field
    #: the product's id within the field (`cutout.mosaic.unit_id`), in the place of an image id
    unit: str
    grid: Grid
    #: the inputs, bands in `band_order`, and their absolute paths
    records: tuple[ImageRecord, ...]
    paths: tuple[str, ...]
    #: MIME types to write (empty for FORMAT=METADATA: a table row only)
    products: tuple[str, ...]
    combine: str = "mean"
    match_background: bool = False
    #: per input, the remote image and where to fetch it (None for the archive's own); empty: none is remote
    remotes: tuple[tuple[RemoteImage, RemoteSource] | None, ...] = ()
    #: the most inputs it may co-add (``MAX_COADD_INPUTS``), or None for no limit
    max_inputs: int | None = None

    @property
    def bands(self) -> list[str]:
        """The bands of the inputs, in `band_order`."""
        return list(dict.fromkeys(r.band for r in self.records))

    def too_many_inputs(self) -> str | None:
        """Why the product may not be made, when it has more inputs than ``max_inputs`` (each is read whole under
        the grid and held while it is co-added: the memory of one product); else None."""
        if self.max_inputs is None or len(self.records) <= self.max_inputs:
            return None
        return (f"{self.unit} of field {self.field_index} would co-add {len(self.records)} images, more than the limit "
                f"of {self.max_inputs}; narrow it with BAND, COLLECTION or ID, or a smaller SIZE")


def coadd_tasks(field_index: int, field: Field, records: list[ImageRecord], paths: list[str], mode: str,
                spec: GridSpec, products: tuple[str, ...], combine: str = "mean",
                match_background: bool = False, max_inputs: int | None = None) -> list[CoaddTask]:
    """The products of a field in MODE=mosaic (one per band) or stack (one): none when no image matches.

    Every band of the field is resolved onto one grid, at the finest scale among all its inputs.
    """
    if not records:
        return []
    grid = spec.resolve(field, min(r.scale for r in records) / 3600)
    bands = band_order({r.band for r in records})
    ranked = sorted(zip(records, paths, strict=True), key=lambda rp: (bands.index(rp[0].band), rp[0].id))
    groups = [ranked] if mode == "stack" else [[rp for rp in ranked if rp[0].band == b] for b in bands]
    return [CoaddTask(field_index, field, unit_id(mode, None if mode == "stack" else group[0][0].band), grid,
                      tuple(r for r, _ in group), tuple(p for _, p in group), products, combine, match_background,
                      max_inputs=max_inputs)
            for group in groups]


class UnreadableInputs(RuntimeError):
    """None of a co-add's inputs could be read (or fetched from its remote); the message says why, per input."""


def build_coadd(task: CoaddTask, cache: ParentCache, outcome: PairOutcome | None = None
                ) -> tuple[list[Mosaic], list[str]]:
    """Read and co-add a task's inputs (remote ones fetched first), one `Mosaic` per band; and a warning per
    unreadable input. ``outcome`` counts the downloads and cache hits.

    Raises
    ------
    NoOverlapError
        When no input covers the grid after all.
    UnreadableInputs
        When no input could be read (or fetched): the warnings, together.
    """
    inputs, warnings = {}, []
    for record, path, remote in zip(task.records, task.paths, task.remotes or [None] * len(task.records),
                                    strict=True):
        try:
            if remote is not None:
                record, path, hit = open_remote(*remote, cache)
                if outcome is not None:
                    outcome.count_fetch(hit)
            parent = cache.get(path, record.hdu, record.id, record.path, record.indexed)
            inputs.setdefault(record.band, []).append(read_input(parent, task.grid, record.band, record.mjd))
        except NoOverlapError:
            continue
        except Exception as exc:  # one unreadable input never takes the product down
            warnings.append(parent_problem(record, exc).replace(" skipped: ", f" left out of {task.unit} of field "
                                                                                f"{task.field_index}: "))
    if not inputs:
        if warnings:
            raise UnreadableInputs("; ".join(warnings))
        raise NoOverlapError(f"no image covers the grid of field {task.field_index}")
    return [coadd(inputs[b], task.grid, task.combine, task.match_background) for b in task.bands if b in inputs], \
        warnings


def coadd_bytes(task: CoaddTask, mosaics: list[Mosaic], mime: str) -> bytes | None:
    """A generated product's file; None for a stack's colour preview when it has fewer than three bands."""
    request = fits.Header([("REQ_RA", task.field.ra, "[deg] requested POS, ICRS RA"),
                           ("REQ_DEC", task.field.dec, "[deg] requested POS, ICRS Dec"),
                           ("REQ_W", task.field.width, "[deg] requested SIZE, width"),
                           ("REQ_H", task.field.height, "[deg] requested SIZE, height")])
    stack = task.unit == "stack"
    if mime == "image/fits":
        return stack_fits(mosaics, request) if stack else mosaic_fits(mosaics[0], request)
    if stack and len(mosaics) >= 3:
        return colour_preview([mosaics[0], mosaics[len(mosaics) // 2], mosaics[-1]], mime)
    if stack and "image/fits" in task.products:
        return None  # the FITS stack's preview is in colour, or none
    return preview_bytes(mosaics[-1].data, mime)


@dataclass(frozen=True)
class BatchTask:
    """Pairs of one job, cut by one worker in one go (or a generated product, `CoaddTask`)."""

    job_id: str
    results_root: str
    #: URL path of the job's results, e.g. "/async/JOB/results/"
    results_path: str
    pairs: tuple[PairTask | CoaddTask | RemotePairTask, ...]

    @property
    def lane(self) -> str | None:
        """The remote collection whose images the batch fetches (its pool and concurrency), or None."""
        pair = self.pairs[0]
        if isinstance(pair, RemotePairTask):
            return pair.image.remote
        if isinstance(pair, CoaddTask):
            return next((remote[0].remote for remote in pair.remotes if remote is not None), None)
        return None


@dataclass
class PairOutcome:
    """What became of a pair: products written (id, size, MIME, SHA-256 in hex) and their table rows."""

    field_index: int
    image_id: str
    products: list[tuple[str, int, str, str]] = field(default_factory=list)
    rows: list[tuple[str | None, str]] = field(default_factory=list)
    #: "skipped" (no overlap after all), "warning" (unreadable parent), "fatal" (cannot write), "gone"
    problem: str | None = None
    message: str = ""
    #: time spent on the pair in the worker (the measure of throughput behind the quote)
    seconds: float = 0.0
    #: (field, image) pairs this stands for: a generated product counts its inputs
    pairs: int = 1
    #: warnings of a product made all the same (an input left out)
    notes: list[str] = field(default_factory=list)
    #: remote images downloaded for it, and found in the download cache
    fetched: int = 0
    cached: int = 0

    def count_fetch(self, hit: bool) -> None:
        """Count a remote image: found in the download cache (``hit``), or downloaded."""
        if hit:
            self.cached += 1
        else:
            self.fetched += 1


def result_name(field_index: int, image_id: str, mime: str) -> str:
    """Deterministic, URL-safe result id of a product: field index, image id, format."""
    return f"{field_index:05d}.{image_id}.{EXTENSIONS[mime]}"


def init_worker(server_pid: int) -> None:
    """Pool initializer: a parent cache, and a watchdog that exits once the server is gone.

    Workers are forked by a forkserver, not by the server, so the watchdog checks the
    server's PID itself rather than its own parent.
    """
    global _cache
    _cache = ParentCache()
    os.nice(10)  # cutting yields to the API server, so polls stay fast while every core works

    def watchdog() -> None:
        while True:
            try:
                os.kill(server_pid, 0)
            except ProcessLookupError:
                os._exit(0)
            time.sleep(0.5)

    threading.Thread(target=watchdog, daemon=True, name="parent-watchdog").start()


def warm() -> int:
    """A no-op task that makes the pool start its processes ahead of the first job."""
    return os.getpid()


def run_batch(task: BatchTask) -> list[PairOutcome]:
    """Make every product of a batch; stop at the first fatal problem.

    A parent that cannot be read or cut, whatever the error, becomes a warning on its pair
    (naming the image and the reason), and the other pairs are still made.
    """
    global _cache
    if _cache is None:
        _cache = ParentCache()
    files = ResultFiles(task.results_root)
    outcomes = []
    for pair in task.pairs:
        start = time.perf_counter()
        try:
            if isinstance(pair, CoaddTask):
                outcome = _run_coadd(pair, task, files)
            elif isinstance(pair, RemotePairTask):
                outcome = _run_remote_pair(pair, task, files)
            else:
                outcome = _run_pair(pair, task, files)
        except Exception as exc:  # never a batch lost to one product
            if isinstance(pair, RemotePairTask):
                pair = PairTask(pair.field_index, pair.field, pair.image.provisional_record(), "", pair.products)
            unit = pair.unit if isinstance(pair, CoaddTask) else pair.record.id
            outcome = PairOutcome(pair.field_index, unit, problem="warning",
                                  message=(f"{unit} of field {pair.field_index} not made: {type(exc).__name__}: {exc}"
                                           if isinstance(pair, CoaddTask) else parent_problem(pair.record, exc)))
        outcome.seconds = time.perf_counter() - start
        outcomes.append(outcome)
        if outcome.problem in ("fatal", "gone"):
            break
    return outcomes


def _run_coadd(unit: CoaddTask, task: BatchTask, files: ResultFiles) -> PairOutcome:
    outcome = PairOutcome(unit.field_index, unit.unit, pairs=len(unit.records))
    flux = False  # reproject_interp: an interpolation, not flux-conserving (cutout.mosaic.ALGORITHM)
    if not unit.products:  # METADATA: describe the grid, without reading pixels
        values = generated_metadata(unit.grid.header(), unit.grid.shape, unit.records, unit.field, unit.field_index,
                                    "image/fits", None, None, flux)
        outcome.rows.append((None, render_row(values, None)))
        return outcome
    too_many = unit.too_many_inputs()
    if too_many is not None:
        outcome.problem, outcome.message = "warning", f"MAX_COADD_INPUTS: {too_many}"
        return outcome
    try:
        mosaics, outcome.notes = build_coadd(unit, _cache, outcome)
    except NoOverlapError as exc:
        outcome.problem, outcome.message = "skipped", str(exc)
        return outcome
    except UnreadableInputs as exc:
        outcome.problem, outcome.message = "warning", str(exc)
        return outcome
    used = {i for m in mosaics for i in m.inputs}
    records = [r for r in unit.records if r.id in used]
    for mime in unit.products:
        data = coadd_bytes(unit, mosaics, mime)
        if data is None:
            continue
        name = result_name(unit.field_index, unit.unit, mime)
        if not _write(outcome, files, task, name, data, mime):
            return outcome
        header = mosaics[0].header() if len(mosaics) == 1 else mosaics[0].grid.header()
        values = generated_metadata(header, unit.grid.shape, records, unit.field, unit.field_index, mime,
                                    len(data), name, mosaics[0].algorithm == "exact")
        outcome.rows.append((name, render_row(values, task.results_path + name)))
    return outcome


def open_remote(image: RemoteImage, source: RemoteSource, cache: ParentCache) -> tuple[ImageRecord, str, bool]:
    """A remote image fetched (or found) in the download cache and opened in ``cache``, so that an eviction by
    another process can no longer take it away: its record, its file, and whether it was a cache hit.

    Raises
    ------
    RemoteError
        When it could not be fetched (the remote's fault, after its retries).
    """
    for attempt in (0, 1):
        record, path, hit = resolve(image, source)
        try:
            cache.get(str(path), record.hdu, record.id, record.path, record.indexed)
        except FileNotFoundError:  # evicted between the download and the open: fetched again, once
            if attempt:
                raise
            continue
        return record, str(path), hit
    raise AssertionError("unreachable")  # pragma: no cover


def _run_remote_pair(pair: RemotePairTask, task: BatchTask, files: ResultFiles) -> PairOutcome:
    try:
        record, path, hit = open_remote(pair.image, pair.source, _cache)
    except RemoteError as exc:
        return PairOutcome(pair.field_index, pair.image.id, problem="warning",
                           message=f"{exc}; field {pair.field_index} has no product of it")
    outcome = _run_pair(PairTask(pair.field_index, pair.field, record, path, pair.products), task, files)
    outcome.count_fetch(hit)
    return outcome


def _write(outcome: PairOutcome, files: ResultFiles, task: BatchTask, name: str, data: bytes, mime: str) -> bool:
    """Write a product and add it, with the SHA-256 of its bytes, to ``outcome``'s products; on failure record why
    in ``outcome`` and return False."""
    try:
        files.write(task.job_id, name, data)
    except FileNotFoundError:
        outcome.problem = "gone"  # the job was destroyed: never recreate its directory
        return False
    except OSError as exc:
        reason = "the disk is full" if exc.errno == errno.ENOSPC else str(exc)
        outcome.problem, outcome.message = "fatal", f"cannot write results: {reason}"
        return False
    outcome.products.append((name, len(data), mime, hashlib.sha256(data).hexdigest()))
    return True


def _explain_miss(outcome: PairOutcome, pair: PairTask, task: BatchTask, files: ResultFiles, reason: str) -> None:
    """A SODA combination with no pixels: a text/plain result saying so (SODA 1.0, 6), and an empty table row that
    marks the pair as made (the table describes images only)."""
    name = result_name(pair.field_index, pair.record.id, "text/plain")
    data = (f"Error: no data: the region of field {pair.field_index} (a box of {pair.field.width:.6g} x "
            f"{pair.field.height:.6g} deg at {pair.field.ra:.6f}, {pair.field.dec:.6f}) holds no pixel of "
            f"image {pair.record.id}: {reason}\n").encode()
    if _write(outcome, files, task, name, data, "text/plain"):
        outcome.rows.append((name, ""))


def _run_pair(pair: PairTask, task: BatchTask, files: ResultFiles) -> PairOutcome:
    record = pair.record
    outcome = PairOutcome(pair.field_index, record.id)
    if pair.miss:
        _explain_miss(outcome, pair, task, files, "the image's footprint does not meet it")
        return outcome
    try:
        if not pair.products:  # METADATA: the cutout that would be made, from the index alone
            box = record_geometry(record).box(pair.field)
            encoded = []
        else:
            parent = _cache.get(pair.path, record.hdu, record.id, record.path, record.indexed)
            piece = cut(parent, pair.field)
            ny, nx = piece.shape
            box = (piece.y0, piece.y0 + ny, piece.x0, piece.x0 + nx)
            encoded = [(m, piece.to_fits() if m == "image/fits" else preview_bytes(piece.data, m))
                       for m in pair.products]
    except NoOverlapError as exc:
        if pair.explain_misses:
            _explain_miss(outcome, pair, task, files, str(exc))
        else:
            outcome.problem, outcome.message = "skipped", str(exc)
        return outcome
    except Exception as exc:  # an unreadable or uncuttable parent: a warning, never the job's end
        outcome.problem, outcome.message = "warning", parent_problem(record, exc)
        return outcome
    geometry = record_geometry(record)
    if not pair.products:  # METADATA: describe the cutout that would be made, without a file
        values = cutout_metadata(record, geometry, box, pair.field, pair.field_index, "image/fits", None, None)
        outcome.rows.append((None, render_row(values, None)))
        return outcome
    for mime, data in encoded:
        name = result_name(pair.field_index, record.id, mime)
        if not _write(outcome, files, task, name, data, mime):
            return outcome
        values = cutout_metadata(record, geometry, box, pair.field, pair.field_index, mime, len(data), name)
        outcome.rows.append((name, render_row(values, task.results_path + name)))
    return outcome
