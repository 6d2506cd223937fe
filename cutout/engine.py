"""Cutouts: the smallest pixel-aligned rectangle of a parent image holding a field.

A cutout is never resampled. Its cost scales with the cutout, not the parent:
uncompressed parents are read with one ``pread`` per cutout row straight into the
output array (raw stored values, so scaled integer data stays exact), and
tile-compressed parents through astropy's ``section``, which decompresses only the
tiles the rectangle touches. Open files, parsed WCS and the parent's header cards
are kept in a bounded per-process cache (`ParentCache`).
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS

from cutout.errors import ArchiveError, ParentChangedError
from cutout.fitsio import BLOCK, CARD, format_card, image_bytes, storable
from cutout.geometry import OUTLINE_PER_EDGE, Geometry, clip_polygon
from cutout.layout import Layout, describe
from cutout.sky import Field

__all__ = ["OUTLINE_PER_EDGE", "Cutout", "CutoutHeader", "ParentCache", "ParentImage", "cut", "cutout",
           "cutout_header", "open_fits", "physical_values", "pixel_box"]

#: the old private name, used by `cutout.mosaic`
_clip_polygon = clip_polygon


def open_fits(path: str | os.PathLike) -> fits.HDUList:
    """Open a FITS file as the archive reads it: memory-mapped, HDUs loaded lazily, raw (unscaled) values.

    Raw values are what a cutout copies (scaled integers stay exact); `physical_values`
    applies BSCALE, BZERO and BLANK where physical values are needed. Unscaled, astropy
    also memory-maps tile-compressed integer images that carry BSCALE/BZERO/BLANK.
    """
    return fits.open(path, memmap=True, lazy_load_hdus=True, do_not_scale_image_data=True)


def check_unchanged(path: str | os.PathLike, indexed: tuple[int, int], name: str) -> None:
    """Refuse a file whose size or modification time is not the indexed one.

    Parameters
    ----------
    path : path-like
        The file.
    indexed : tuple of int
        Its size and modification time (ns) when it was indexed; a time of 0 is not checked.
    name : str
        The file as messages name it.

    Raises
    ------
    ParentChangedError
        Saying what changed: its pixels may no longer be the ones the index describes.
    """
    st = os.stat(path)
    size, mtime_ns = indexed
    changes = ([f"its size from {size} to {st.st_size} bytes"] if st.st_size != size else []) + \
              ([f"its modification time from {_instant(mtime_ns)} to {_instant(st.st_mtime_ns)}"]
               if mtime_ns and st.st_mtime_ns != mtime_ns else [])
    if changes:
        raise ParentChangedError(f"{name} changed since it was indexed ({' and '.join(changes)}); it is not served "
                                 "until the archive is indexed again (siasync archive index)")


def _instant(ns: int) -> str:
    """A modification time in nanoseconds as an ISO instant in UTC, to the microsecond."""
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def physical_values(stored: np.ndarray, scale: float = 1.0, zero: float = 0.0, blank: int | None = None) -> np.ndarray:
    """Physical values of raw stored ones: BSCALE and BZERO applied, BLANK pixels as NaN.

    Integers stay integers (int64, exact) when the scaling is an integer offset and no
    pixel is BLANK; everything else is float64.
    """
    native = stored.astype(stored.dtype.newbyteorder("="), copy=False)
    integer = native.dtype.kind in "iu"
    blanks = (native == blank) if (integer and blank is not None) else None
    if blanks is not None and not blanks.any():
        blanks = None
    if integer and blanks is None and scale == 1.0 and float(zero).is_integer():
        return native.astype(np.int64) + int(zero) if zero else native
    values = native.astype(np.float64)
    if (scale, zero) != (1.0, 0.0):
        values = values * scale + zero
    if blanks is not None:
        values[blanks] = np.nan
    return values


class ParentImage:
    """An archive image HDU opened for repeated cutouts.

    Parameters
    ----------
    path : path-like
        The FITS file.
    hdu : int
        Index of the image HDU in the file.
    parent_id : str, optional
        The index id, recorded as PARENTID in cutouts.
    origfile : str, optional
        The path relative to the archive root, recorded as ORIGFILE.
    indexed : tuple of int, optional
        The file's size and modification time (ns) when it was indexed; a file that differs is refused.

    Raises
    ------
    ParentChangedError
        When the file is not the one indexed (``indexed``).
    ArchiveError
        When the file has no such image HDU, or it has no celestial WCS (a permanent fault).
    OSError
        When the file cannot be read now.
    """

    def __init__(self, path: str | os.PathLike, hdu: int, parent_id: str = "", origfile: str = "",
                 indexed: tuple[int, int] | None = None) -> None:
        self.path = Path(path)
        self.hdu_index = hdu
        self.parent_id = parent_id
        self.origfile = origfile or self.path.name
        self.indexed = indexed
        self.check_unchanged()
        self._fd: int | None = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            self._hdul = open_fits(self.path)
            try:
                self._hdu = self._hdul[hdu]
                primary = self._hdul[0].header if hdu else None
                self.layout: Layout = describe(self._hdu, self._hdul, primary)
            except IndexError as exc:
                self.close()
                raise ArchiveError(f"{self.path} has no image HDU {hdu}") from exc
            except ArchiveError as exc:
                self.close()
                raise ArchiveError(f"{self.path}[{hdu}]: {exc}") from None
            except Exception:
                self.close()
                raise
        layout = self.layout
        self.wcs: WCS = layout.wcs
        self.shape = layout.shape
        self.geometry = Geometry(layout.wcs, layout.shape, self.origfile)
        #: the unit of the physical values, if the header names one
        self.bunit: str | None = layout.bunit
        self._scaling = layout.scaling
        self.compressed = layout.compressed
        #: reference pixels of every WCS (primary and alternates), to be shifted per cutout
        self.crpix = dict(layout.crpix)
        if not self.compressed:
            self._raw_dtype = layout.raw_dtype
            self._data_offset = layout.data_offset
            size = self.shape[0] * self.shape[1] * self._raw_dtype.itemsize
            if self._data_offset + size > os.stat(self.path).st_size:
                self.close()
                raise ArchiveError(f"{self.path} is truncated: its data unit ends past the end of the file")
            self._fd = os.open(self.path, os.O_RDONLY)
            self._hdul.close()  # the raw reader needs only the descriptor

    def check_unchanged(self) -> None:
        """Refuse the file when it is not the one indexed (`check_unchanged`; when the index gave its size and time).

        Raises
        ------
        ParentChangedError
        """
        if self.indexed is not None:
            check_unchanged(self.path, self.indexed, self.origfile)

    def close(self) -> None:
        """Release the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._hdul.close()

    @cached_property
    def dtype(self) -> np.dtype:
        """The dtype `read` returns: the stored (raw) type."""
        if not self.compressed:
            return self._raw_dtype
        return np.dtype(self._hdu.section.dtype)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Stored (raw) values of ``[y0:y1, x0:x1]`` as a new, FITS-storable array."""
        if self.compressed:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", AstropyWarning)
                section = self._hdu.section
                if section.ndim > 2:  # extra axes of length one
                    return np.array(section[(0,) * (section.ndim - 2) + (slice(y0, y1), slice(x0, x1))])
                return np.array(section[y0:y1, x0:x1])
        out = np.empty((y1 - y0, x1 - x0), dtype=self._raw_dtype)
        item, row_bytes = self._raw_dtype.itemsize, (x1 - x0) * self._raw_dtype.itemsize
        stride, base = self.shape[1] * item, self._data_offset + x0 * item
        for j in range(y1 - y0):
            if os.preadv(self._fd, [out[j]], base + (y0 + j) * stride) != row_bytes:
                raise ArchiveError(f"{self.path} is truncated")
        return out

    def physical(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Physical values of ``[y0:y1, x0:x1]`` as float64: scaled, and BLANK as NaN."""
        return np.asarray(physical_values(self.read(y0, y1, x0, x1), *self._scaling), dtype=np.float64)

    def to_pixels(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """0-based pixel coordinates of ICRS positions (degrees)."""
        return self.geometry.to_pixels(ra, dec)

    def __enter__(self) -> ParentImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ParentCache:
    """A bounded LRU of open `ParentImage` objects, one per (path, HDU).

    Evicted parents are closed. Each worker process keeps its own cache.
    """

    def __init__(self, maxsize: int = 32) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._items: OrderedDict[tuple[str, int], ParentImage] = OrderedDict()

    def get(self, path: str | os.PathLike, hdu: int, parent_id: str = "", origfile: str = "",
            indexed: tuple[int, int] | None = None) -> ParentImage:
        """The open parent for ``path[hdu]``, opening it on first use; with ``indexed``, checked to be the file
        indexed every time (`ParentImage.check_unchanged`), and forgotten once it is not."""
        key = (os.fspath(path), hdu)
        parent = self._items.get(key)
        if parent is not None and parent.indexed == indexed:
            try:
                parent.check_unchanged()
            except (ParentChangedError, OSError):
                del self._items[key]
                parent.close()
                raise
            self._items.move_to_end(key)
            return parent
        if parent is not None:
            del self._items[key]
            parent.close()
        parent = ParentImage(path, hdu, parent_id, origfile, indexed)
        self._items[key] = parent
        while len(self._items) > self.maxsize:
            self._items.popitem(last=False)[1].close()
        return parent

    def clear(self) -> None:
        """Close every cached parent."""
        while self._items:
            self._items.popitem()[1].close()

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class Cutout:
    """A pixel-aligned piece of a parent image, ready to be written."""

    #: stored values, FITS-ready (big-endian; raw integers when the parent is scaled)
    stored: np.ndarray
    #: header card images, structural cards first, without END
    cards: str
    #: 0-based offset of the cutout in the parent: ``cutout[j, i] == parent[j + y0, i + x0]``
    y0: int
    x0: int
    #: extension HDUs after the image: the parent's distortion lookup tables, shifted
    extensions: bytes = b""

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx) of the cutout."""
        return self.stored.shape

    @cached_property
    def header(self) -> fits.Header:
        """The full FITS header."""
        return fits.Header.fromstring(self.cards)

    @property
    def data(self) -> np.ndarray:
        """Physical pixel values: BSCALE and BZERO applied, BLANK pixels as NaN."""
        header = self.header
        blank = header.get("BLANK")
        return physical_values(self.stored, float(header.get("BSCALE", 1)), float(header.get("BZERO", 0)),
                               blank if isinstance(blank, int) else None)

    @property
    def wcs(self) -> WCS:
        """The cutout's WCS (the parent's, shifted), lookup tables included."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            if not self.extensions:
                return WCS(self.header)
            hdul = fits.HDUList.fromstring(self.to_fits())
            return WCS(hdul[0].header, fobj=hdul)

    def to_fits(self) -> bytes:
        """The cutout as a complete FITS file."""
        return image_bytes(self.cards, self.stored) + self.extensions


def pixel_box(parent: ParentImage, field: Field) -> tuple[int, int, int, int]:
    """The half-open pixel rectangle ``(y0, y1, x0, x1)`` of ``field`` clipped to ``parent``.

    See `cutout.geometry.Geometry.box`.

    Raises
    ------
    NoOverlapError
        When the field and the image do not overlap.
    """
    return parent.geometry.box(field)


@dataclass(frozen=True)
class CutoutHeader:
    """What a cutout of a field will be, known without reading its pixels."""

    #: header card images, structural cards first, without END (exactly those of the `Cutout`)
    cards: str
    #: the half-open pixel rectangle of the parent: ``[y0:y1, x0:x1]``
    y0: int
    y1: int
    x0: int
    x1: int
    #: BITPIX of the cutout's data
    bitpix: int
    #: extension HDUs after the image (the parent's distortion lookup tables, shifted)
    extensions: bytes = b""

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx) of the cutout."""
        return self.y1 - self.y0, self.x1 - self.x0

    @cached_property
    def header(self) -> fits.Header:
        """The full FITS header."""
        return fits.Header.fromstring(self.cards)

    @property
    def filesize(self) -> int:
        """Size in bytes of the cutout's FITS file (`Cutout.to_fits`)."""
        ny, nx = self.shape
        header = len(self.cards) + CARD
        data = ny * nx * abs(self.bitpix) // 8
        return header + (-header % BLOCK) + data + (-data % BLOCK) + len(self.extensions)


def cutout_header(parent: ParentImage, field: Field) -> CutoutHeader:
    """The header and geometry of the cutout of ``field`` from ``parent``, without reading pixels.

    This is the pure half of `cut`: the pixel rectangle (`pixel_box`) and the header
    cards, which `cut` writes unchanged above the pixels it then reads.

    Parameters
    ----------
    parent : ParentImage
    field : Field

    Returns
    -------
    CutoutHeader
        The parent's non-structural keywords, the shifted WCS (SIP included), and
        provenance: PARENTID, ORIGFILE, ORIGHDU, IRAF LTV1/LTV2 with LTM1_1 = LTM2_2 = 1,
        and the requested POS and SIZE.

    Raises
    ------
    NoOverlapError
        When the field and the image do not overlap.
    """
    y0, y1, x0, x1 = pixel_box(parent, field)
    layout = parent.layout
    _, bitpix, bzero = storable(np.empty((0, 0), dtype=parent.dtype))
    cards = [format_card("SIMPLE", True, "conforms to FITS standard"),
             format_card("BITPIX", bitpix), format_card("NAXIS", 2),
             format_card("NAXIS1", x1 - x0), format_card("NAXIS2", y1 - y0),
             format_card("EXTEND", True)]
    if bzero is not None:
        cards += [format_card("BSCALE", 1), format_card("BZERO", bzero)]
    cards.append(layout.carried)
    for key, value in parent.crpix.items():
        if key in ("CRPIX1", "CRPIX2"):
            cards.append(format_card(key, value - (x0 if key[5] == "1" else y0), "reference pixel (shifted)"))
    cards.append(layout.wcs_cards)
    for key, value in parent.crpix.items():
        if key not in ("CRPIX1", "CRPIX2"):
            cards.append(format_card(key, value - (x0 if key[5] == "1" else y0), "reference pixel (shifted)"))
    ltv1, ltv2 = layout.ltv
    cards += [
        format_card("LTV1", _number(ltv1 - x0), "cutout = parent + LTV (IRAF physical to logical)"),
        format_card("LTV2", _number(ltv2 - y0), "cutout = parent + LTV (IRAF physical to logical)"),
        format_card("LTM1_1", _number(layout.ltm.get("LTM1_1", 1.0))),
        format_card("LTM2_2", _number(layout.ltm.get("LTM2_2", 1.0)))]
    cards += [format_card(key, _number(value)) for key, value in layout.ltm.items() if key in ("LTM1_2", "LTM2_1")]
    cards += [
        format_card("PARENTID", parent.parent_id or parent.path.name, "archive id of the parent image"),
        format_card("ORIGFILE", parent.origfile[:68], "parent file, relative to the archive"),
        format_card("ORIGHDU", parent.hdu_index, "HDU of the parent image"),
        format_card("REQ_RA", field.ra, "[deg] requested POS, ICRS RA"),
        format_card("REQ_DEC", field.dec, "[deg] requested POS, ICRS Dec"),
        format_card("REQ_W", field.width, "[deg] requested SIZE, width (0: the whole image)"),
        format_card("REQ_H", field.height, "[deg] requested SIZE, height (0: the whole image)"),
    ]
    extensions = b"".join(table.extension(x0, y0) for table in layout.tables)
    return CutoutHeader("".join(cards), y0, y1, x0, x1, bitpix, extensions)


def _number(value: float) -> int | float:
    """A whole number as an integer card value, as IRAF writes LTV and LTM."""
    return int(value) if float(value).is_integer() else value


def cut(parent: ParentImage, field: Field) -> Cutout:
    """Cut ``field`` out of ``parent``.

    Parameters
    ----------
    parent : ParentImage
    field : Field

    Returns
    -------
    Cutout
        Pixels copied from the parent, below the header of `cutout_header`.

    Raises
    ------
    NoOverlapError
        When the field and the image do not overlap.
    """
    head = cutout_header(parent, field)
    stored, _, _ = storable(parent.read(head.y0, head.y1, head.x0, head.x1))
    return Cutout(stored, head.cards, head.y0, head.x0, head.extensions)


def cutout(parent: ParentImage, position: SkyCoord, size: u.Quantity) -> Cutout:
    """Cut the box of ``size`` centred on ``position`` out of ``parent``.

    Parameters
    ----------
    parent : ParentImage
    position : `~astropy.coordinates.SkyCoord`
    size : `~astropy.units.Quantity`
        One angle (square) or two (width, height), on the sky.
    """
    return cut(parent, Field.from_sky(position, size))
