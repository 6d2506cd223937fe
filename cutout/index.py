"""The archive index: image records, persisted in SQLite, with a HEALPix sky lookup.

The spatial index is a HEALPix tessellation (astropy-healpix, NESTED scheme) at one
order chosen per archive so that a cell is about half a typical image across. Each
image is registered in every cell that its circumscribed circle touches (the cone is
padded by one cell, since astropy-healpix's cone search can miss cells it only
grazes). A lookup collects the images registered in the cells that the field's
circle touches, keeps those whose circles reach the field's, then applies the exact
INTERSECT test (`cutout.sky.match_footprints`) to them only. No image's WCS is
evaluated during a lookup of such ordinary images: footprints are precomputed unit vectors.

*Wide* images (all-sky maps, hemispheres, images whose edges are not great circles:
`cutout.scan.footprint_of`) cannot be a small convex polygon. They are registered in
the cells of their coverage (`cutout.scan.COVERAGE_ORDER`), computed from the pixels that
are on the sky, and each candidate is then matched exactly through its WCS
(`cutout.geometry.Geometry.matches`).

Building is incremental and uses every core: a file whose size and modification time
are those the previous index recorded is not opened again (its records, or the reason
it was skipped, are kept); changed files are read again and removed ones dropped.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sqlite3
import tempfile
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy_healpix import nside_to_pixel_resolution
from astropy_healpix.core import healpix_cone_search

from cutout.errors import ArchiveError
from cutout.geometry import Geometry
from cutout.scan import (
    CAUSES,
    COVERAGE_ORDER,
    FileScan,
    ImageRecord,
    Skipped,
    iter_fits_paths,
    scan_chunk,
)
from cutout.scan import log as scan_log
from cutout.sky import Field, Intersect, bounding_circles, footprint_circle, match_footprints, unit_vectors

log = logging.getLogger(__name__)

#: Default index file name, inside the archive root.
INDEX_NAME = "siasync-index.sqlite"
SCHEMA_VERSION = 2
_MAX_ORDER = 12
#: Files per task of a parallel index run.
CHUNK = 16
#: An ordinary image whose circle is wider than this many index cells is registered at the coverage order.
BIG_CELLS = 32
#: Parsed image geometries kept in memory (for SIAP rows and wide-image matches).
GEOMETRY_CACHE = 4096
_COVERAGE_PAD = nside_to_pixel_resolution(2**COVERAGE_ORDER).to_value(u.deg)

#: columns of the images table, in `ImageRecord` order; shape is stored as ny, nx, arrays as blobs
_FIELDS = [f.name for f in fields(ImageRecord)]
_COLUMNS = [c for name in _FIELDS for c in (("ny", "nx") if name == "shape" else (name,))]
_TYPES = {"id": "TEXT NOT NULL UNIQUE", "path": "TEXT NOT NULL", "hdu": "INTEGER NOT NULL",
          "collection": "TEXT NOT NULL", "band": "TEXT NOT NULL", "ny": "INTEGER NOT NULL", "nx": "INTEGER NOT NULL",
          "scale": "REAL NOT NULL", "wcs_header": "TEXT NOT NULL", "footprint": "BLOB NOT NULL",
          "filesize": "INTEGER NOT NULL", "compressed": "INTEGER NOT NULL", "mtime_ns": "INTEGER NOT NULL",
          "wcs_tables": "BLOB NOT NULL", "wide": "INTEGER NOT NULL", "coverage": "BLOB", "frame": "TEXT NOT NULL",
          "bitpix": "INTEGER NOT NULL", "cutout_head": "INTEGER NOT NULL", "cutout_tail": "INTEGER NOT NULL"}
_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);\n"
    "CREATE TABLE images (seq INTEGER PRIMARY KEY, "
    + ", ".join(f"{c} {_TYPES.get(c, 'REAL' if c not in ('instrument', 'facility', 'target', 'bunit') else 'TEXT')}"
                for c in _COLUMNS)
    + ", cells BLOB NOT NULL);\n"
    "CREATE INDEX images_path ON images (path);\n"
    "CREATE TABLE skipped (path TEXT PRIMARY KEY, reason TEXT NOT NULL, cause TEXT NOT NULL, "
    "filesize INTEGER NOT NULL, mtime_ns INTEGER NOT NULL);\n")


def _to_row(record: ImageRecord) -> list:
    row = []
    for name in _FIELDS:
        value = getattr(record, name)
        if name == "shape":
            row += [int(value[0]), int(value[1])]
            continue
        if name == "footprint":
            value = np.ascontiguousarray(value, dtype="<f8").tobytes()
        elif name == "coverage":
            value = None if value is None else np.ascontiguousarray(value, dtype="<i8").tobytes()
        elif isinstance(value, bool):
            value = int(value)
        row.append(value)
    return row


def _from_row(row: Sequence) -> ImageRecord:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["shape"] = (values.pop("ny"), values.pop("nx"))
    values["footprint"] = np.frombuffer(values["footprint"], dtype="<f8").reshape(-1, 2)
    if values["coverage"] is not None:
        values["coverage"] = np.frombuffer(values["coverage"], dtype="<i8")
    values["compressed"], values["wide"] = bool(values["compressed"]), bool(values["wide"])
    values["wcs_tables"] = bytes(values["wcs_tables"])
    return ImageRecord(**values)


@dataclass
class BuildReport:
    """What an index run did: files seen, read again or reused, removed, and skipped by cause."""

    files: int = 0
    read: int = 0
    reused: int = 0
    removed: int = 0
    images: int = 0
    skipped: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    workers: int = 1

    def summary(self) -> str:
        """One line: what was indexed and skipped, by cause."""
        causes = ", ".join(f"{n} {cause}" for cause in CAUSES if (n := self.skipped.get(cause)))
        return (f"{self.files} files: indexed {self.images} images, skipped {sum(self.skipped.values())} files"
                + (f" ({causes})" if causes else "")
                + f"; {self.read} read, {self.reused} unchanged, {self.removed} removed since the last index; "
                  f"{self.seconds:.1f} s on {self.workers} {'process' if self.workers == 1 else 'processes'}")


class ArchiveIndex:
    """Every indexed image of an archive, and fast sky lookups over them.

    Parameters
    ----------
    root : path-like
        The archive directory; record paths are relative to it.
    records : sequence of ImageRecord
    order : int, optional
        HEALPix order of the spatial index; chosen from the image sizes when omitted.
    cells : sequence of ndarray, optional
        Each record's HEALPix cells at ``order``, as stored by :meth:`save`; computed
        when omitted (empty for wide records, which are found through their coverage).
    skipped : sequence of Skipped, optional
        The files the scan did not index (kept, so that an incremental run does not read them again).
    """

    def __init__(self, root: str | os.PathLike, records: Sequence[ImageRecord], order: int | None = None,
                 cells: Sequence[np.ndarray] | None = None, skipped: Sequence[Skipped] = ()) -> None:
        self.root = Path(root)
        self.records = list(records)
        self.skipped = list(skipped)
        self.report: BuildReport | None = None
        self.by_id = {r.id: r for r in self.records}
        if len(self.by_id) != len(self.records):
            raise ValueError("image ids are not unique")
        self._prepare_polygons()
        self.order = choose_order(self.records, self._radii_deg) if order is None else order
        self._nside = 2**self.order
        self._pad = nside_to_pixel_resolution(self._nside).to_value(u.deg)
        self._is_wide = np.array([r.wide for r in self.records], dtype=bool)
        self._is_big = ~self._is_wide & (self._radii_deg > BIG_CELLS * self._pad)
        if cells is None:
            cells = [self._cells_of(i) for i in range(len(self.records))]
        self._cells = list(cells)
        self._geometries: OrderedDict[str, Geometry] = OrderedDict()
        self._geometry_lock = threading.Lock()
        self._build_lookup()

    # -- construction -----------------------------------------------------------------

    @classmethod
    def build(cls, root: str | os.PathLike, previous: ArchiveIndex | None = None, workers: int | None = None,
              progress: Callable[[int, int], None] | None = None) -> tuple[ArchiveIndex, list[Skipped]]:
        """Scan ``root`` recursively and index it; also return the skipped files.

        Parameters
        ----------
        previous : ArchiveIndex, optional
            An earlier index of the same archive: files whose size and modification time are
            unchanged are not opened again.
        workers : int, optional
            Processes that read files (default: every core; 1 reads in this process).
        progress : callable, optional
            Called as ``progress(done, total)`` as files are scanned.
        """
        start = time.perf_counter()
        root = Path(root)
        report = BuildReport(workers=workers or os.cpu_count() or 1)
        known: dict[str, tuple[list[ImageRecord], Skipped | None]] = {}
        if previous is not None:
            for r in previous.records:
                known.setdefault(r.path, ([], None))[0].append(r)
            for s in previous.skipped:
                known[s.path] = ([], s)
        results: dict[str, FileScan] = {}
        todo = []
        listing = [p.relative_to(root).as_posix() for p in iter_fits_paths(root)]
        report.files = len(listing)
        for rel in listing:
            entry = known.get(rel)
            if entry is not None:
                try:
                    stat = (root / rel).stat()
                except OSError:
                    stat = None
                records, skip = entry
                size, mtime = ((records[0].filesize, records[0].mtime_ns) if records
                               else (skip.filesize, skip.mtime_ns) if skip else (-1, -1))
                if stat is not None and (stat.st_size, stat.st_mtime_ns) == (size, mtime) and mtime:
                    results[rel] = FileScan(rel, list(records), skip)
                    report.reused += 1
                    continue
            todo.append(rel)
        report.removed = len(set(known) - set(listing))
        report.read = len(todo)
        done = report.reused
        if progress:
            progress(done, len(listing))
        chunks = [todo[i:i + CHUNK] for i in range(0, len(todo), CHUNK)]
        if report.workers > 1 and len(chunks) > 1:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["cutout.scan"])
            with ProcessPoolExecutor(min(report.workers, len(chunks)), mp_context=context) as pool:
                futures = [pool.submit(scan_chunk, str(root), chunk) for chunk in chunks]
                for future in as_completed(futures):
                    for result in future.result():
                        results[result.path] = result
                        done += 1
                    if progress:
                        progress(done, len(listing))
        else:
            report.workers = 1
            for chunk in chunks:
                for result in scan_chunk(str(root), chunk):
                    results[result.path] = result
                    done += 1
                if progress:
                    progress(done, len(listing))
        records, skipped = [], []
        for rel in listing:
            result = results[rel]
            records += result.records
            if result.skipped is not None:
                skipped.append(result.skipped)
                report.skipped[result.skipped.cause] += 1
                if rel in todo:
                    scan_log.warning("skipped %s: %s", rel, result.skipped.reason)
        report.images = len(records)
        index = cls(root, records, skipped=skipped)
        report.seconds = time.perf_counter() - start
        index.report = report
        return index, skipped

    def _prepare_polygons(self) -> None:
        """The ordinary records' polygons as unit vectors, and every record's enclosing circle (vectorised)."""
        n = len(self.records)
        plain = np.array([i for i, r in enumerate(self.records) if not r.wide], dtype=np.int64)
        m = max((len(self.records[i].footprint) for i in plain), default=0)
        self._vectors = np.zeros((n, m, 3))
        self._centres, self._radii = np.zeros((n, 3)), np.zeros(n)
        if len(plain):
            polygons = np.stack([_resample_polygon(self.records[i].footprint, m) for i in plain])
            vectors = unit_vectors(polygons[..., 0], polygons[..., 1])
            self._vectors[plain] = vectors
            self._centres[plain], self._radii[plain] = bounding_circles(vectors)
        self._radii_deg = np.degrees(self._radii)
        self._plain = plain

    def _cells_of(self, i: int) -> np.ndarray:
        """Cells at the index's order of an ordinary record (none for wide and big ones)."""
        if self._is_wide[i] or self._is_big[i]:
            return np.zeros(0, np.int64)
        x, y, z = self._centres[i]
        ra, dec = np.degrees(np.arctan2(y, x)) % 360.0, np.degrees(np.arcsin(np.clip(z, -1, 1)))
        return healpix_cone_search(ra * u.deg, dec * u.deg, (self._radii_deg[i] + self._pad) * u.deg,
                                   nside=self._nside, order="nested").astype(np.int64)

    def _coverage_of(self, i: int) -> np.ndarray:
        """Cells at the coverage order: a wide image's own coverage, or a big one's enclosing circle."""
        record = self.records[i]
        if record.coverage is not None:
            return record.coverage
        x, y, z = self._centres[i]
        ra, dec = np.degrees(np.arctan2(y, x)) % 360.0, np.degrees(np.arcsin(np.clip(z, -1, 1)))
        return healpix_cone_search(ra * u.deg, dec * u.deg, (self._radii_deg[i] + _COVERAGE_PAD) * u.deg,
                                   nside=2**COVERAGE_ORDER, order="nested").astype(np.int64)

    def _build_lookup(self) -> None:
        coarse = np.flatnonzero(self._is_wide | self._is_big).astype(np.int64)
        fine = np.array([i for i in self._plain if len(self._cells[i])], dtype=np.int64)
        self._cell_keys, self._cell_starts, self._cell_lengths, self._cell_owners = _cell_table(
            [self._cells[i] for i in fine], fine)
        self._wide_keys, self._wide_starts, self._wide_lengths, self._wide_owners = _cell_table(
            [self._coverage_of(i) for i in coarse], coarse)
        self._collections = np.array([r.collection for r in self.records], dtype=object)
        self._bands = np.array([r.band for r in self.records], dtype=object)

    # -- lookup -------------------------------------------------------------------------

    def lookup(self, field: Field, intersect: Intersect = Intersect.OVERLAPS,
               collections: Iterable[str] | None = None,
               bands: Iterable[str] | None = None) -> list[ImageRecord]:
        """Images matching ``field`` under ``intersect``, in index order.

        Parameters
        ----------
        field : Field
            A box, or a point (SIZE=0: the images that contain it).
        intersect : Intersect
        collections, bands : iterable of str, optional
            Keep only images of these collections / bands (all when None or empty).
        """
        if field.is_point:
            intersect = Intersect.CENTER
        candidates = self._candidates(field)
        wide = self._wide_candidates(field)
        if collections:
            collections = list(collections)
            candidates = candidates[np.isin(self._collections[candidates], collections)]
            wide = wide[np.isin(self._collections[wide], collections)]
        if bands:
            bands = list(bands)
            candidates = candidates[np.isin(self._bands[candidates], bands)]
            wide = wide[np.isin(self._bands[wide], bands)]
        big = wide[~self._is_wide[wide]]  # ordinary polygons, registered at the coverage order
        wide = wide[self._is_wide[wide]]
        candidates = np.union1d(candidates, big)
        hits = candidates[match_footprints(field, self._vectors[candidates], intersect)]
        if len(wide):
            exact = [i for i in wide if self.geometry(self.records[i]).matches(field, intersect,
                                                                               self.records[i].footprint)]
            hits = np.unique(np.concatenate([hits, np.array(exact, dtype=np.int64)]))
        return [self.records[i] for i in hits]

    def _candidates(self, field: Field) -> np.ndarray:
        if len(self._cell_keys) == 0:
            return np.zeros(0, dtype=np.int64)
        cells = healpix_cone_search(field.ra * u.deg, field.dec * u.deg, (field.radius + self._pad) * u.deg,
                                    nside=self._nside, order="nested")
        owners = _members(cells, self._cell_keys, self._cell_starts, self._cell_lengths, self._cell_owners)
        # cheap exact pre-filter: the image's circle must reach the field's circle
        centre = unit_vectors(field.ra, field.dec)
        reach = np.cos(np.minimum(self._radii[owners] + np.radians(field.radius), np.pi))
        return owners[self._centres[owners] @ centre >= reach]

    def _wide_candidates(self, field: Field) -> np.ndarray:
        if len(self._wide_keys) == 0:
            return np.zeros(0, dtype=np.int64)
        cells = healpix_cone_search(field.ra * u.deg, field.dec * u.deg, (field.radius + _COVERAGE_PAD) * u.deg,
                                    nside=2**COVERAGE_ORDER, order="nested")
        return _members(cells, self._wide_keys, self._wide_starts, self._wide_lengths, self._wide_owners)

    def geometry(self, record: ImageRecord) -> Geometry:
        """The image's WCS and shape, parsed once and kept (a bounded cache): no file is opened."""
        with self._geometry_lock:
            geometry = self._geometries.get(record.id)
            if geometry is not None:
                self._geometries.move_to_end(record.id)
                return geometry
        geometry = Geometry(record.wcs(), record.shape, record.path)
        with self._geometry_lock:
            self._geometries[record.id] = geometry
            while len(self._geometries) > GEOMETRY_CACHE:
                self._geometries.popitem(last=False)
        return geometry

    # -- facts --------------------------------------------------------------------------

    @property
    def collections(self) -> list[str]:
        """The collections in the archive, sorted."""
        return sorted({r.collection for r in self.records})

    @property
    def bands(self) -> list[str]:
        """The bands in the archive, sorted."""
        return sorted({r.band for r in self.records})

    def __len__(self) -> int:
        return len(self.records)

    def path_of(self, record: ImageRecord) -> Path:
        """Absolute path of a record's file."""
        return self.root / record.path

    # -- persistence --------------------------------------------------------------------

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the index atomically (temporary file, then rename); return its path."""
        target = Path(path) if path is not None else self.root / INDEX_NAME
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".index-", suffix=".tmp", dir=target.parent)
        os.close(fd)
        try:
            with sqlite3.connect(tmp) as db:
                db.executescript(_SCHEMA)
                root = os.path.relpath(self.root.resolve(), target.parent.resolve())
                db.executemany("INSERT INTO meta VALUES (?, ?)", [
                    ("schema_version", str(SCHEMA_VERSION)), ("root", root), ("order", str(self.order))])
                marks = ",".join("?" * (len(_COLUMNS) + 2))
                db.executemany(f"INSERT INTO images VALUES ({marks})", [
                    (seq, *_to_row(r), np.ascontiguousarray(c, dtype="<i8").tobytes())
                    for seq, (r, c) in enumerate(zip(self.records, self._cells, strict=True))])
                db.executemany("INSERT INTO skipped VALUES (?, ?, ?, ?, ?)", [
                    (s.path, s.reason, s.cause, s.filesize, s.mtime_ns) for s in self.skipped])
            db.close()
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    @classmethod
    def load(cls, path: str | os.PathLike) -> ArchiveIndex:
        """Read an index written by :meth:`save`.

        ``path`` is the index file, or an archive directory holding one under the
        default name.

        Raises
        ------
        FileNotFoundError
            When there is no index.
        ArchiveError
            When the file is no index of this version (empty, damaged, or of another schema).
        """
        path = _index_file(path)
        with _reading(path) as db:
            meta = _meta(db, path)
            rows = db.execute(f"SELECT {', '.join(_COLUMNS)}, cells FROM images ORDER BY seq").fetchall()
            skipped = [Skipped(*row) for row in
                       db.execute("SELECT path, reason, cause, filesize, mtime_ns FROM skipped ORDER BY path")]
        records = [_from_row(row[:-1]) for row in rows]
        cells = [np.frombuffer(row[-1], dtype="<i8") for row in rows]
        return cls((path.parent / meta["root"]).resolve(), records, int(meta["order"]), cells, skipped)


def check_index(path: str | os.PathLike) -> None:
    """Check that ``path`` (an index file, or an archive directory holding one) is an index of this version, without
    loading it.

    Raises
    ------
    FileNotFoundError
        When there is no index.
    ArchiveError
        When the file is no index of this version (empty, damaged, or of another schema).
    """
    path = _index_file(path)
    with _reading(path) as db:
        _meta(db, path)


def _index_file(path: str | os.PathLike) -> Path:
    """The index file: ``path``, or the default name in the archive directory ``path``; FileNotFoundError if none."""
    path = Path(path)
    if path.is_dir():
        path = path / INDEX_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no archive index at {path}; run `siasync archive index DIR` first")
    return path


@contextmanager
def _reading(path: Path) -> Iterator[sqlite3.Connection]:
    """The index file opened read-only; a file that is no SQLite database (empty, damaged) raises ArchiveError."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        yield db
    except sqlite3.DatabaseError as exc:  # an empty file, a damaged one, or another database
        raise ArchiveError(f"{path} is not a readable archive index ({exc}); re-run `siasync archive index`") from None
    finally:
        db.close()


def _meta(db: sqlite3.Connection, path: Path) -> dict[str, str]:
    """The index's ``meta`` table, checked to be of this schema version."""
    meta = dict(db.execute("SELECT key, value FROM meta"))
    if int(meta.get("schema_version", 0)) != SCHEMA_VERSION:
        raise ArchiveError(f"index {path} has schema {meta.get('schema_version')}, expected {SCHEMA_VERSION}; "
                           "re-run `siasync archive index`")
    return meta


def _cell_table(cells: Sequence[np.ndarray], owners_of: np.ndarray) -> tuple[np.ndarray, ...]:
    """Sorted cell keys, and per key the start and length of its run in the owners array."""
    counts = np.array([len(c) for c in cells], dtype=np.int64)
    flat = np.concatenate(cells).astype(np.int64) if len(cells) else np.zeros(0, np.int64)
    owners = np.repeat(owners_of.astype(np.int64), counts) if len(cells) else np.zeros(0, np.int64)
    order = np.argsort(flat, kind="stable")
    flat, owners = flat[order], owners[order]
    keys, starts = np.unique(flat, return_index=True)
    lengths = np.diff(np.append(starts, len(flat)))
    return keys, starts, lengths, owners


def _members(cells: np.ndarray, keys: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
             owners: np.ndarray) -> np.ndarray:
    """The owners registered in any of ``cells``, unique and sorted, without a Python loop."""
    pos = np.minimum(np.searchsorted(keys, cells), len(keys) - 1)
    pos = pos[keys[pos] == cells]
    starts, lengths = starts[pos], lengths[pos]
    flat = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
    return np.unique(owners[flat])


def choose_order(records: Sequence[ImageRecord], radii_deg: np.ndarray | None = None) -> int:
    """HEALPix order whose cells are about half the median image across.

    Coarser cells make more false candidates (each image is registered with one
    cell of padding); finer ones make more cells per lookup. Measured on 10,000
    17-arcmin tiles, orders 8 and 9 (cells of 1/2 and 1/4 an image) were fastest.
    Wide images do not count: they are found through their coverage.
    """
    if radii_deg is None:
        radii_deg = np.array([footprint_circle(r.footprint)[1] if not r.wide else 0.0 for r in records])
    plain = np.array([not r.wide for r in records], dtype=bool)
    if not plain.any():
        return 0
    radius = max(float(np.median(radii_deg[plain])), 1e-4)
    order = int(np.floor(np.log2(58.6 / radius)))  # a cell at order k spans ~58.6 deg / 2**k
    return int(np.clip(order, 0, _MAX_ORDER))


def _resample_polygon(polygon: np.ndarray, m: int) -> np.ndarray:
    """Pad a polygon to ``m`` vertices by repeating its last vertex (a zero-length edge)."""
    if len(polygon) == m:
        return polygon
    return np.concatenate([polygon, np.repeat(polygon[-1:], m - len(polygon), axis=0)])

