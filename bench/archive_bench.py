"""Archive benchmarks (numbers, not pass/fail): SIAP rows from the index, and indexing at archive scale.

Run with ``make bench``.

1. ``/sia`` on a real server over the demo archive: the median time of a query that
   matches a few images and of one that matches about fifty, FORMAT=image/fits (one row per
   image). Rows are computed from the index (no FITS file is opened per row), so the time
   should hardly grow with the rows: the ratio and the cost per row are printed.
2. ``siasync archive index`` on a generated archive of 10,000 files (small TAN images,
   some tile-compressed, some multi-extension): a full run on every core and on one, an
   incremental run with nothing changed, and one after 100 files changed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._server import BenchServer  # noqa: E402

QUERIES = (("0.05,-30", "0.005"), ("150.1,2.2", "0.005"), ("150.1,2.2", "0.3"), ("150.1,2.2", "1.1"))


def sia_times(archive: Path, scratch: Path, n: int) -> list[tuple[str, int, float, float]]:
    """(query, rows, median ms over HTTP, median ms of the server's work) of /sia queries matching few and many images.

    The queries are interleaved round by round, so that a busy machine weighs on all alike. The
    server's work is `siasync.vo.sia.answer` in this process, on the same index: what a request
    costs the server besides HTTP.
    """
    from cutout.index import ArchiveIndex
    from siasync.app import limits_for
    from siasync.settings import Settings
    from siasync.vo.sia import RowTemplates, answer, parse_query

    state = scratch / "state-sia"
    shutil.rmtree(state, ignore_errors=True)
    server = BenchServer(archive, state)
    http: dict[tuple[str, str], list[float]] = {q: [] for q in QUERIES}
    rows = {}
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for pos, size in QUERIES:
                rows[pos, size] = client.get("/sia", params={"POS": pos, "SIZE": size,
                                                             "FORMAT": "image/fits"}).text.count("<TR>")
            for _ in range(n):
                for pos, size in QUERIES:
                    start = time.perf_counter()
                    response = client.get("/sia", params={"POS": pos, "SIZE": size, "FORMAT": "image/fits"})
                    assert response.status_code == 200
                    http[pos, size].append((time.perf_counter() - start) * 1e3)
    finally:
        server.stop()
    index = ArchiveIndex.load(archive)
    limits, templates = limits_for(Settings(), index), RowTemplates()
    queries = {q: parse_query([("POS", q[0]), ("SIZE", q[1]), ("FORMAT", "image/fits")], limits) for q in QUERIES}
    work: dict[tuple[str, str], list[float]] = {q: [] for q in QUERIES}
    for query in queries.values():
        answer(index, query, "http://bench", 10_000, templates)
    for _ in range(n):
        for q, query in queries.items():
            start = time.perf_counter()
            answer(index, query, "http://bench", 10_000, templates)
            work[q].append((time.perf_counter() - start) * 1e3)
    return [(f"POS={pos} SIZE={size}", rows[pos, size], statistics.median(http[pos, size]),
             statistics.median(work[pos, size])) for pos, size in QUERIES]


def make_archive(root: Path, files: int) -> None:
    """``files`` small FITS files over a 20x20 degree patch: TAN images, every 10th tile-compressed,
    every 25th a two-extension file."""
    from astropy.io import fits
    from astropy.wcs import WCS

    rng = np.random.default_rng(1)
    side = int(np.ceil(np.sqrt(files)))
    data = rng.normal(0, 1, (48, 48)).astype(np.float32)
    for i in range(files):
        ra, dec = 150 + (i % side) * 0.2, -10 + (i // side) * 0.2
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval, w.wcs.crpix, w.wcs.cdelt = [ra, dec], [24.5, 24.5], [-0.25 / 48, 0.25 / 48]
        header = w.to_header()
        header["FILTER"], header["MJD-OBS"], header["INSTRUME"] = "gri"[i % 3], 58000 + i / 100, "BENCHCAM"
        sub = root / f"b{i % 3}" / f"d{i // 1000:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        if i % 10 == 0:
            hdul = fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, header)])
            name = f"t{i:05d}.fits.fz"
        elif i % 25 == 1:
            hdul = fits.HDUList([fits.PrimaryHDU(header=fits.Header([("INSTRUME", "BENCHCAM")])),
                                 fits.ImageHDU(data, header), fits.ImageHDU(data, header)])
            name = f"t{i:05d}.fits"
        else:
            hdul = fits.HDUList([fits.PrimaryHDU(data, header)])
            name = f"t{i:05d}.fits"
        hdul.writeto(sub / name, overwrite=True)


def index_run(root: Path, *args: str) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "siasync", "archive", "index", str(root), *args],
                            capture_output=True, text=True, check=True)
    return time.perf_counter() - start, result.stdout.strip().splitlines()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=REPO / "data" / "demo")
    parser.add_argument("--scratch", type=Path, default=REPO / "bench" / ".scratch")
    parser.add_argument("-n", type=int, default=50, help="requests per /sia figure")
    parser.add_argument("--files", type=int, default=10_000, help="files in the generated archive")
    parser.add_argument("--skip-index", action="store_true", help="only the /sia figures")
    args = parser.parse_args()
    args.scratch.mkdir(parents=True, exist_ok=True)

    times = sia_times(args.archive, args.scratch, args.n)
    print(f"## /sia rows from the index (demo archive, FORMAT=image/fits, medians of {args.n} interleaved rounds)\n")
    print("| query | rows | HTTP round trip ms | server work ms |")
    print("|---|---:|---:|---:|")
    for query, rows, ms, work in times:
        print(f"| {query} | {rows} | {ms:.2f} | {work:.3f} |")
    few, many = min(times, key=lambda t: abs(t[1] - 4)), max(times, key=lambda t: t[1])
    extra = many[1] - few[1]
    print(f"\n{many[1]} rows / {few[1]} rows, HTTP round trip: **{many[2] / few[2]:.2f}x** the time, "
          f"**{(many[2] - few[2]) / extra:.3f} ms** per row; server work: {many[3] / few[3]:.2f}x, "
          f"**{(many[3] - few[3]) / extra:.3f} ms** per row\n")
    if args.skip_index:
        return 0

    root = args.scratch / "archive-10k"
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    make_archive(root, args.files)
    made = time.perf_counter() - start
    print(f"## Indexing a generated archive of {args.files} files ({made:.0f} s to write them), "
          f"{os.cpu_count()} cores\n")
    print("| run | s | summary |")
    print("|---|---:|---|")
    full, summary = index_run(root, "--full")
    print(f"| full, every core | {full:.1f} | {summary} |")
    single, summary = index_run(root, "--full", "--workers", "1")
    print(f"| full, one process | {single:.1f} | {summary} |")
    unchanged, summary = index_run(root)
    print(f"| incremental, nothing changed | {unchanged:.1f} | {summary} |")
    changed = sorted(root.rglob("t0*.fits"))[:100]
    for path in changed:
        path.touch()
    touched, summary = index_run(root)
    print(f"| incremental, {len(changed)} files changed | {touched:.1f} | {summary} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
