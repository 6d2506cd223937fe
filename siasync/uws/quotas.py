"""What a job will cost, and what each owner may hold: the estimate of a job, and the admission of it.

A job is estimated when it is created (or its parameters change) from the archive index alone,
without cutting (`estimate`): the (field, image) pairs it makes, and the bytes of its products. A
FITS cutout's size is exact (the index knows each image's header and pixel type), a PNG or JPEG
preview is counted at a byte per pixel (8-bit grey, at most about that once compressed), and a
mosaic or stack at the 4-byte pixels of its co-add and weight map per band.

Per owner, the unfinished jobs (PENDING, QUEUED, EXECUTING, HELD) count: their number, their
fields and their estimated bytes; and the bytes of the tables uploaded with all their stored
jobs. `admission` refuses a job that would take an owner past a limit, or a job whose own
estimate is past the limit of one job, with a message that gives the estimate and the limit. The
store runs it inside the transaction that stores or queues the job, under a lock per owner
that every server sees (`storage.jobs.JobStore`), so two requests on two servers cannot both
pass the last slot.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from cutout.errors import NoOverlapError
from cutout.index import ArchiveIndex
from cutout.scan import ImageRecord
from cutout.sky import Field, Intersect
from siasync.errors import UsageError
from siasync.uws.params import Limits, StagingRequest
from storage.jobs import Admission, Usage

#: a FITS header unit: a co-add's primary header, and its weight map's
_BLOCK = 2880
#: what a text/plain SODA result saying that a region holds no pixel of an image takes, about
_MISS_BYTES = 300


@dataclass(frozen=True)
class Estimate:
    """What a job is expected to make: (field, image) pairs, and bytes of products; and, of a mosaic or stack job,
    the most images one product of the fields looked at co-adds, and that field's index."""

    pairs: int
    bytes: int
    coadd_inputs: int = 0
    coadd_field: int = 0


def _pair_bytes(index: ArchiveIndex, record: ImageRecord, field: Field, products: tuple[str, ...],
                explain_misses: bool) -> int:
    """Bytes of the products of one (field, image) pair of a cutout job."""
    try:
        y0, y1, x0, x1 = index.geometry(record).box(field)
    except NoOverlapError:
        return _MISS_BYTES if explain_misses else 0
    shape = (y1 - y0, x1 - x0)
    return sum(record.cutout_filesize(shape) if mime == "image/fits" else shape[0] * shape[1] for mime in products)


def _coadd_bytes(request: StagingRequest, records: list[ImageRecord], field: Field) -> int:
    """Bytes of the generated products of one field: a co-add and weight map per band (or per stack), and previews."""
    if not records:
        return 0
    pixels = request.grid.pixels_bound(field.width, field.height, min(r.scale for r in records) / 3600)
    bands = len({r.band for r in records})
    total = 0
    for mime in request.products:
        if mime == "image/fits":
            total += bands * (2 * 4 * pixels + 4 * _BLOCK)
        else:  # one grey preview per band of a mosaic; a colour one (3 bytes a pixel) of a stack
            total += (3 * pixels) if request.mode == "stack" else bands * pixels
    return total


def estimate(index: ArchiveIndex, request: StagingRequest, sample: int = 16) -> Estimate:
    """The pairs and bytes a request makes, found from the index without cutting.

    Exact for up to ``sample`` fields; for more, the mean of evenly spread fields times the
    field count. A lookup costs about 0.4 ms and a 10,000-field POST waits for the sample, so
    it is small: the estimate orders jobs (their sizes differ by orders of magnitude), seeds
    the quote, and holds the quotas.
    """
    n = len(request.positions)
    if n == 0:
        return Estimate(0, 0)
    picked = range(n) if n <= sample else [round(i * (n - 1) / (sample - 1)) for i in range(sample)]
    mode = Intersect(request.intersect)
    pairs = size = most = most_at = 0
    for i in picked:
        field = request.field(i)
        if request.ids:  # SODA: every combination of a region and a dataset is a result
            records = [index.by_id[image_id] for image_id in request.ids if image_id in index.by_id]
            pairs += len(request.ids)
        else:
            records = index.lookup(field, mode, request.collections, request.bands)
            pairs += len(records)
        if request.mode != "cutout":
            size += _coadd_bytes(request, records, field)
            inputs = len(records) if request.mode == "stack" else max(Counter(r.band for r in records).values(),
                                                                       default=0)
            most, most_at = max((most, most_at), (inputs, i))
        else:
            size += sum(_pair_bytes(index, r, field, request.products, bool(request.ids)) for r in records)
    return Estimate(round(pairs * n / len(picked)), round(size * n / len(picked)), most, most_at)


def _size(n: int) -> str:
    """Bytes for people: 26.1 TB, 512.0 MB (decimal units)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit} ({n} bytes)"
    return f"{n} bytes"


def check_job(limits: Limits, cost: Estimate) -> None:
    """Refuse a job whose own estimate is beyond the limit of one job.

    Raises
    ------
    UsageError
        Naming ``MAX_JOB_BYTES``, with the estimate and the limit; or ``MAX_COADD_INPUTS``, when a field looked at
        would co-add more images into one product than its limit (others are left out with a warning as they come).
    """
    if cost.coadd_inputs > limits.max_coadd_inputs:
        raise UsageError("MAX_COADD_INPUTS", f"a product of field {cost.coadd_field} would co-add {cost.coadd_inputs} "
                                             f"images, more than the limit of {limits.max_coadd_inputs}; narrow it "
                                             "with BAND, COLLECTION or ID, or a smaller SIZE")
    if cost.bytes > limits.max_job_bytes:
        raise UsageError("MAX_JOB_BYTES", f"the job would stage about {_size(cost.bytes)} in {cost.pairs} products "
                                          f"(estimated), more than the limit of {_size(limits.max_job_bytes)} for one "
                                          "job; ask for fewer fields, a smaller SIZE, fewer formats, or split it")


def admission(limits: Limits, owner: str, own: Usage) -> Admission:
    """The check that an owner who holds ``usage`` (without this job) may also hold this job (``own``); the
    store runs it in the transaction that stores or queues the job.

    Raises (when run)
    -----------------
    UsageError
        Naming the limit (the setting's name), with what the owner holds, what the job adds, and the limit.
    """
    def admit(usage: Usage) -> None:
        if usage.jobs + own.jobs > limits.owner_active_jobs:
            raise UsageError("OWNER_ACTIVE_JOBS", f"{owner} already has {usage.jobs} unfinished jobs (pending, queued "
                                                  f"or executing), the limit of {limits.owner_active_jobs}; delete "
                                                  "one, or wait until one has finished")
        if usage.fields + own.fields > limits.owner_queued_fields:
            raise UsageError("OWNER_QUEUED_FIELDS", f"{owner} has {usage.fields} fields in unfinished jobs; "
                                                    f"{own.fields} more would exceed the limit of "
                                                    f"{limits.owner_queued_fields}")
        if usage.output_bytes + own.output_bytes > limits.owner_output_bytes:
            raise UsageError("OWNER_OUTPUT_BYTES", f"{owner}'s unfinished jobs would stage about "
                                                   f"{_size(usage.output_bytes)} (estimated); this job's "
                                                   f"{_size(own.output_bytes)} more would exceed the limit of "
                                                   f"{_size(limits.owner_output_bytes)}")
        if usage.upload_bytes + own.upload_bytes > limits.owner_upload_bytes:
            raise UsageError("OWNER_UPLOAD_BYTES", f"{owner}'s jobs hold {_size(usage.upload_bytes)} of uploaded "
                                                   f"tables; this job's {_size(own.upload_bytes)} more would exceed "
                                                   f"the limit of {_size(limits.owner_upload_bytes)}; delete the "
                                                   "jobs you no longer need")
    return admit
