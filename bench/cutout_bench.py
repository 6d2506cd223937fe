"""Cutout engine, index and demo-archive benchmarks (numbers, not pass/fail).

Run with ``make bench`` (or ``.venv/bin/python bench/cutout_bench.py``). Every figure is
measured in this run, and the comparisons are ratios against baselines measured in
this same run on the same files:

* 256x256 cutouts from a 4096x4096 float32 parent, warm (page cache) and cold (the
  file's pages evicted with ``posix_fadvise(DONTNEED)`` before every cutout), for our
  engine, naive astropy (full read + ``Cutout2D``), ``astrocut.fits_cut``, and a raw
  ``pread`` of exactly the bytes of the cutout's rows;
* index lookups and the index load time at 10,000 images;
* the demo archive's generation time and size.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import Cutout2D
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cutout.demo import generate_archive  # noqa: E402
from cutout.engine import ParentCache, ParentImage, cut  # noqa: E402
from cutout.index import ArchiveIndex  # noqa: E402
from cutout.scan import record_for  # noqa: E402
from cutout.sky import Field  # noqa: E402

PARENT = 4096
CUT = 256
SCALE = 1.0  # arcsec / pixel


def make_parent(path: Path) -> WCS:
    """A 4096x4096 float32 TAN image with a realistic header."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [PARENT / 2 + 0.5, PARENT / 2 + 0.5]
    w.wcs.cd = [[-SCALE / 3600, 0], [0, SCALE / 3600]]
    header = w.to_header()
    header.update(RADESYS="ICRS", FILTER="r", BUNIT="adu", TELESCOP="bench", EXPTIME=60.0)
    header["MJD-OBS"] = 60000.0
    data = np.random.default_rng(0).normal(100, 5, (PARENT, PARENT)).astype(np.float32)
    fits.PrimaryHDU(data, header).writeto(path, overwrite=True)
    return w


def evict(path: Path) -> None:
    """Drop the file's pages from the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def timed(fn: Callable[[int], object], n: int, cold_path: Path | None = None) -> list[float]:
    """Milliseconds of ``fn(i)`` for i in range(n), evicting ``cold_path`` before each call."""
    out = []
    for i in range(n):
        if cold_path is not None:
            evict(cold_path)
        start = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - start) * 1e3)
    return out


def cutout_benchmarks(scratch: Path, n: int) -> list[tuple[str, float, float]]:
    """Median warm and cold latency (ms) of every method on the same random fields."""
    import astrocut

    path = scratch / "parent4096.fits"
    wcs = make_parent(path)
    rng = np.random.default_rng(1)
    margin = CUT // 2 + 4
    centres = rng.uniform(margin, PARENT - margin, (n, 2)).round() - 0.5  # on pixel corners: 256 px exactly
    sky = wcs.all_pix2world(centres, 0)
    size = (CUT - 0.5) * SCALE / 3600  # north-up at the field, so slightly rotated on the parent
    fields = [Field(float(ra), float(dec), size, size) for ra, dec in sky]
    coords = [SkyCoord(ra, dec, unit="deg") for ra, dec in sky]
    cache = ParentCache()
    parent = cache.get(path, 0, "bench", "parent4096.fits")
    boxes = [(int(cy) - CUT // 2 + 1, int(cx) - CUT // 2 + 1) for cx, cy in centres]
    with fits.open(path) as hdul:
        offset = hdul[0].fileinfo()["datLoc"]
    stride = PARENT * 4

    def ours(i: int) -> bytes:
        return cut(cache.get(path, 0, "bench", "parent4096.fits"), fields[i]).to_fits()

    def ours_fresh(i: int) -> bytes:
        with ParentImage(path, 0, "bench", "parent4096.fits") as fresh:
            return cut(fresh, fields[i]).to_fits()

    def naive(i: int) -> bytes:
        with fits.open(path, memmap=False) as hdul:
            c = Cutout2D(hdul[0].data, coords[i], CUT * u.pixel, wcs=WCS(hdul[0].header))
            buf = io.BytesIO()
            fits.PrimaryHDU(c.data, c.wcs.to_header()).writeto(buf)
            return buf.getvalue()

    def with_astrocut(i: int) -> bytes:
        hdul = astrocut.fits_cut([str(path)], coords[i], cutout_size=CUT, memory_only=True)[0]
        buf = io.BytesIO()
        hdul.writeto(buf)
        return buf.getvalue()

    fd = os.open(path, os.O_RDONLY)
    buffer = np.empty((CUT, CUT), dtype=">f4")

    def raw_pread(i: int) -> None:
        y0, x0 = boxes[i]
        for j in range(CUT):
            os.preadv(fd, [buffer[j]], offset + (y0 + j) * stride + x0 * 4)

    shapes = {cut(parent, f).shape for f in fields}
    assert shapes == {(CUT, CUT)}, shapes
    methods = [("siasync engine (cached parent)", ours), ("siasync engine (open per cutout)", ours_fresh),
               ("raw pread of the same rows", raw_pread), ("naive astropy (read + Cutout2D)", naive),
               ("astrocut.fits_cut", with_astrocut)]
    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, fn in methods:
            runs = n if "naive" not in name and "astrocut" not in name else max(n // 5, 10)
            fn(0)  # warm the page cache and the per-process cache
            warm = statistics.median(timed(fn, runs))
            cold = statistics.median(timed(fn, runs, cold_path=path))
            results.append((name, warm, cold))
    os.close(fd)
    cache.clear()
    return results


def index_benchmarks(scratch: Path, n_images: int = 10_000, n_lookups: int = 2000) -> dict[str, float]:
    """Lookup latency and load time of an index of ``n_images`` survey tiles."""
    side = int(np.ceil(np.sqrt(n_images / 3)))
    step = (1024 - 60) / 3600  # 1024 px tiles at 1"/px with 1' overlap
    records = []
    for k in range(n_images):
        band, cell = k % 3, k // 3
        r, c = divmod(cell, side)
        dec = -side * step / 2 + r * step + 2.0
        ra = 150.0 + (c - side / 2) * step / np.cos(np.radians(dec))
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval, w.wcs.crpix = [ra % 360, dec], [512.5, 512.5]
        w.wcs.cd = [[-1 / 3600, 0], [0, 1 / 3600]]
        records.append(record_for(w, (1024, 1024), f"bench/b{band}/t{cell:05d}.fits", 0,
                                  collection="BENCH", band="gri"[band]))
    index = ArchiveIndex(scratch, records)
    path = index.save(scratch / "index10k.sqlite")
    loads = []
    for _ in range(5):
        start = time.perf_counter()
        ArchiveIndex.load(path)
        loads.append(time.perf_counter() - start)
    rng = np.random.default_rng(2)
    span = side * step * 0.45
    fields = [Field(float((150 + rng.uniform(-span, span)) % 360), float(2 + rng.uniform(-span, span)),
                    float(rng.uniform(0.01, 0.3)), float(rng.uniform(0.01, 0.3))) for _ in range(n_lookups)]
    hits, times = 0, []
    for field in fields:
        start = time.perf_counter()
        hits += len(index.lookup(field))
        times.append((time.perf_counter() - start) * 1e6)
    return {"images": len(index), "order": index.order, "load_s": statistics.median(loads),
            "lookup_median_us": statistics.median(times), "lookup_p99_us": float(np.percentile(times, 99)),
            "mean_matches": hits / n_lookups}


def archive_benchmark(scratch: Path) -> dict[str, float]:
    """Generation time and size of the demo archive, on this machine's cores."""
    target = scratch / "demo"
    shutil.rmtree(target, ignore_errors=True)
    start = time.perf_counter()
    summary = generate_archive(target, REPO / "data" / "demo-survey.toml")
    seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    shutil.rmtree(target)
    return {"seconds": seconds, "megabytes": size / 1e6, "images": summary["images"], "cores": os.cpu_count()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="cutouts per method and cache state")
    parser.add_argument("--scratch", type=Path, default=REPO / "bench" / ".scratch")
    args = parser.parse_args()
    args.scratch.mkdir(parents=True, exist_ok=True)
    warnings.simplefilter("ignore", AstropyWarning)

    results = cutout_benchmarks(args.scratch, args.n)
    by_name = {name: (warm, cold) for name, warm, cold in results}
    ours_warm, ours_cold = by_name["siasync engine (cached parent)"]
    print(f"## Cutouts: {CUT}x{CUT} from a {PARENT}x{PARENT} float32 parent (median of {args.n}; "
          f"naive astropy and astrocut of {max(args.n // 5, 10)})\n")
    print("| method | warm ms | cold ms | warm / ours | cold / ours |")
    print("|---|---:|---:|---:|---:|")
    for name, warm, cold in results:
        print(f"| {name} | {warm:.3f} | {cold:.3f} | {warm / ours_warm:.2f} | {cold / ours_cold:.2f} |")
    raw_warm, raw_cold = by_name["raw pread of the same rows"]
    print(f"\nastrocut / ours, warm: **{by_name['astrocut.fits_cut'][0] / ours_warm:.1f}x** "
          f"(target >= 5); ours warm median **{ours_warm:.3f} ms** (target <= 2)")
    print(f"ours / raw pread, cold: **{ours_cold / raw_cold:.2f}** (target <= 1.5)\n")

    idx = index_benchmarks(args.scratch)
    print(f"## Index: {idx['images']} images, HEALPix order {idx['order']}\n")
    print(f"- lookup median **{idx['lookup_median_us']:.0f} us**, p99 {idx['lookup_p99_us']:.0f} us "
          f"(target <= 1 ms), {idx['mean_matches']:.1f} matches per lookup")
    print(f"- load {idx['load_s'] * 1e3:.0f} ms (target < 1 s)\n")

    demo = archive_benchmark(args.scratch)
    print(f"## Demo archive\n\n- {demo['images']} images, {demo['megabytes']:.0f} MB (limit 400) "
          f"generated in **{demo['seconds']:.1f} s** on {demo['cores']} cores (limit 60 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
