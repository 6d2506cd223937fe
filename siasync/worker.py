"""What runs in worker processes: cut a batch of (field, image) pairs and write the products.

Tasks and outcomes are plain data. A worker writes each product itself, under a
temporary name renamed into place (`storage.files.ResultFiles.write`), so bytes
never travel back through the server; it returns the metadata the server needs to
register the product and its table row. Each worker keeps a `ParentCache` for its
lifetime, and exits when the server process that started it is gone.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from dataclasses import dataclass, field

from cutout.engine import ParentCache, cut, cutout_header
from cutout.errors import ArchiveError, NoOverlapError
from cutout.preview import preview_bytes
from cutout.scan import ImageRecord
from cutout.siap import product_metadata
from cutout.sky import Field
from storage.files import ResultFiles
from storage.table import render_row

EXTENSIONS = {"image/fits": "fits", "image/png": "png", "image/jpeg": "jpg"}
_cache: ParentCache | None = None


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


@dataclass(frozen=True)
class BatchTask:
    """Pairs of one job, cut by one worker in one go."""

    job_id: str
    results_root: str
    #: URL path of the job's results, e.g. "/async/JOB/results/"
    results_path: str
    pairs: tuple[PairTask, ...]


@dataclass
class PairOutcome:
    """What became of a pair: products written (id, size, MIME) and their table rows."""

    field_index: int
    image_id: str
    products: list[tuple[str, int, str]] = field(default_factory=list)
    rows: list[tuple[str | None, str]] = field(default_factory=list)
    #: "skipped" (no overlap after all), "warning" (unreadable parent), "fatal" (cannot write), "gone"
    problem: str | None = None
    message: str = ""
    #: time spent on the pair in the worker (the measure of throughput behind the quote)
    seconds: float = 0.0


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
    """Make every product of a batch; stop at the first fatal problem."""
    global _cache
    if _cache is None:
        _cache = ParentCache()
    files = ResultFiles(task.results_root)
    outcomes = []
    for pair in task.pairs:
        start = time.perf_counter()
        outcome = _run_pair(pair, task, files)
        outcome.seconds = time.perf_counter() - start
        outcomes.append(outcome)
        if outcome.problem in ("fatal", "gone"):
            break
    return outcomes


def _run_pair(pair: PairTask, task: BatchTask, files: ResultFiles) -> PairOutcome:
    outcome = PairOutcome(pair.field_index, pair.record.id)
    try:
        parent = _cache.get(pair.path, pair.record.hdu, pair.record.id, pair.record.path)
        if not pair.products:  # METADATA: the header of the cutout that would be made, no pixels read
            piece, encoded = cutout_header(parent, pair.field), []
        else:
            piece = cut(parent, pair.field)
            encoded = [(m, piece.to_fits() if m == "image/fits" else preview_bytes(piece.data, m))
                       for m in pair.products]
    except NoOverlapError as exc:
        outcome.problem, outcome.message = "skipped", str(exc)
        return outcome
    except (ArchiveError, OSError, ValueError) as exc:
        outcome.problem, outcome.message = "warning", f"{pair.record.path}: skipped ({exc})"
        return outcome
    header = piece.header
    if not pair.products:  # METADATA: describe the cutout that would be made, without a file
        values = product_metadata(header, piece.shape, pair.record, pair.field, pair.field_index,
                                  "image/fits", None, None)
        outcome.rows.append((None, render_row(values, None)))
        return outcome
    for mime, data in encoded:
        name = result_name(pair.field_index, pair.record.id, mime)
        try:
            size = files.write(task.job_id, name, data)
        except FileNotFoundError:
            outcome.problem = "gone"  # the job was destroyed: never recreate its directory
            return outcome
        except OSError as exc:
            reason = "the disk is full" if exc.errno == errno.ENOSPC else str(exc)
            outcome.problem, outcome.message = "fatal", f"cannot write results: {reason}"
            return outcome
        values = product_metadata(header, piece.shape, pair.record, pair.field, pair.field_index, mime, size, name)
        outcome.products.append((name, size, mime))
        outcome.rows.append((name, render_row(values, task.results_path + name)))
    return outcome
