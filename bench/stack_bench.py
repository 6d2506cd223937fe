"""Stack benchmark: fields per second for 3-band stacks of 512x512 outputs, on a pool of 2 processes.

Run with ``make bench`` (or ``.venv/bin/python bench/stack_bench.py --archive data/demo``).
Every figure is measured in this run, on the same fields, inputs and pool:

* **direct**: what a user would write, ``reproject_and_coadd`` called on the inputs' HDUs
  (opened with astropy) for each band of each field, the result discarded; once with
  reproject's defaults and once with the service's options (interp, no coordinate round trip);
* **service**: the service's whole product, `siasync.staging.worker.run_batch` on a MODE=stack task:
  the inputs' regions read, co-added per band, and the stack FITS and its colour PNG written;
* **algorithms**: `cutout.mosaic.coadd` with each of reproject's algorithms (interp, adaptive,
  exact), with and without ``roundtrip_coords``.

The service's overhead is service / direct with the same options (target: at most 1.3).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cutout.engine import ParentCache  # noqa: E402
from cutout.index import ArchiveIndex  # noqa: E402
from cutout.mosaic import ALGORITHMS, GridSpec, coadd, read_input  # noqa: E402
from cutout.sky import Field  # noqa: E402
from siasync.staging.worker import BatchTask, CoaddTask, coadd_tasks, run_batch  # noqa: E402

OUTPUT = 512
WORKERS = 2
#: field centres on DEMO-WIDE: each band co-adds 1 to 4 overlapping tiles
CENTRES = [(150.1, 2.2), (150.0, 2.1), (150.2, 2.3), (149.9, 2.2), (150.3, 2.0), (150.1, 2.45), (149.85, 1.95),
           (150.35, 2.4)]


def stack_tasks(index: ArchiveIndex) -> list[CoaddTask]:
    """One MODE=stack task per field: 512x512 at DEMO-WIDE's 1 arcsec per pixel, g, r and i."""
    size = OUTPUT / 3600
    tasks = []
    for i, (ra, dec) in enumerate(CENTRES):
        field = Field(ra, dec, size, size)
        records = index.lookup(field, collections=("DEMO-WIDE",))
        tasks += coadd_tasks(i, field, records, [str(index.path_of(r)) for r in records], "stack",
                             GridSpec(naxis=(OUTPUT, OUTPUT)), ("image/fits", "image/png"))
    return tasks


def direct(task: CoaddTask, roundtrip: bool | None) -> float:
    """reproject_and_coadd per band on the inputs' HDUs, as a user would call it; seconds."""
    from reproject import reproject_interp
    from reproject.mosaicking import reproject_and_coadd

    start = time.perf_counter()
    options = {} if roundtrip is None else {"roundtrip_coords": roundtrip}
    wcs = task.grid.wcs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        for band in task.bands:
            files = [fits.open(p) for r, p in zip(task.records, task.paths, strict=True) if r.band == band]
            reproject_and_coadd([f[0] for f in files], wcs, shape_out=task.grid.shape,
                                reproject_function=reproject_interp, **options)
            for f in files:
                f.close()
    return time.perf_counter() - start


def service(task: CoaddTask, root: str) -> float:
    """The service's product of the task, written under ``root``; seconds."""
    start = time.perf_counter()
    job = f"bench-{task.field_index}-{os.getpid()}"
    (Path(root) / job).mkdir(exist_ok=True)
    outcome = run_batch(BatchTask(job, root, "/async/bench/results/", (task,)))[0]
    assert outcome.problem is None and len(outcome.products) == 2, outcome
    return time.perf_counter() - start


_cache: ParentCache | None = None


def algorithm(task: CoaddTask, name: str, roundtrip: bool) -> float:
    """The co-adds of a task with one of reproject's algorithms (inputs read by the service's reader); seconds."""
    global _cache
    _cache = _cache or ParentCache()
    start = time.perf_counter()
    for band in task.bands:
        inputs = [read_input(_cache.get(p, r.hdu, r.id, r.path), task.grid, band)
                  for r, p in zip(task.records, task.paths, strict=True) if r.band == band]
        coadd(inputs, task.grid, algorithm=name, roundtrip_coords=roundtrip)
    return time.perf_counter() - start


def rate(pool: ProcessPoolExecutor, fn: object, tasks: list[CoaddTask], *args: object) -> float:
    """Fields per second over the pool: every task once, all submitted together."""
    start = time.perf_counter()
    for future in [pool.submit(fn, t, *args) for t in tasks]:
        future.result()
    return len(tasks) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=REPO / "data" / "demo")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    args = parser.parse_args()
    index = ArchiveIndex.load(args.archive)
    tasks = stack_tasks(index)
    inputs = sum(len(t.records) for t in tasks)
    print(f"{len(tasks)} fields, 3 bands, {OUTPUT}x{OUTPUT} px each, {inputs} inputs in all; "
          f"{WORKERS} processes on {os.cpu_count()} cores; median of {args.rounds} rounds")
    root = tempfile.mkdtemp(prefix="stack-bench-")
    configs = {
        "direct reproject_and_coadd, reproject's defaults": (direct, None),
        "direct reproject_and_coadd, interp, roundtrip_coords=False": (direct, False),
        "service (stack FITS + colour PNG written)": (service, root),
    }
    for name in ALGORITHMS:
        for roundtrip in ((False, True) if name != "exact" else (False,)):
            label = f"coadd {name}" + ("" if name == "exact" else f", roundtrip_coords={roundtrip}")
            configs[label] = (algorithm, name, roundtrip)
    results: dict[str, list[float]] = {k: [] for k in configs}
    try:
        with ProcessPoolExecutor(WORKERS) as pool:
            rate(pool, algorithm, tasks[:WORKERS], "interp", False)  # warm the workers' imports
            for _ in range(args.rounds):
                for label, (fn, *extra) in configs.items():
                    results[label].append(rate(pool, fn, tasks, *extra))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    medians = {k: float(np.median(v)) for k, v in results.items()}
    width = max(map(len, medians))
    print(f"{'configuration':<{width}}  fields/s")
    for label, value in medians.items():
        print(f"{label:<{width}}  {value:8.2f}")
    same = medians["direct reproject_and_coadd, interp, roundtrip_coords=False"]
    ours = medians["service (stack FITS + colour PNG written)"]
    print(f"service overhead: {same / ours:.2f}x the direct call with the same options (target <= 1.3); "
          f"{medians[next(iter(configs))] / ours:.2f}x the direct call with reproject's defaults")


if __name__ == "__main__":
    main()
