"""Cutouts: the smallest pixel-aligned rectangle of a parent image holding a field.

A cutout is never resampled. Its cost scales with the cutout, not the parent:
uncompressed parents are read with one ``pread`` per cutout row straight into the
output array (raw stored values, so scaled integer data stays exact), and
tile-compressed parents through astropy's ``section``, which decompresses only the
tiles the rectangle touches. Open files, parsed WCS and the parent's header cards
are kept in a bounded per-process cache (`ParentCache`).
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import ICRS, SkyCoord
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS
from astropy.wcs.utils import wcs_to_celestial_frame

from cutout.errors import ArchiveError, NoOverlapError
from cutout.fitsio import BLOCK, CARD, format_card, image_bytes, storable
from cutout.sky import Field

#: Points sampled along each edge of a field's box before mapping it to pixels.
OUTLINE_PER_EDGE = 8
_STRUCTURAL = re.compile(r"^(SIMPLE|XTENSION|BITPIX|NAXIS\d*|EXTEND|PCOUNT|GCOUNT|END|CHECKSUM|DATASUM"
                         r"|EXTNAME|EXTVER|LTV\d|LTM\d_\d|PARENTID|ORIGFILE|ORIGHDU|REQ_(RA|DEC|W|H))$")
_SCALING = re.compile(r"^(BSCALE|BZERO|BLANK)$")
_CRPIX = re.compile(r"^CRPIX([12])([A-Z]?)$")
_RAW_DTYPES = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


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
    """

    def __init__(self, path: str | os.PathLike, hdu: int, parent_id: str = "", origfile: str = "") -> None:
        self.path = Path(path)
        self.hdu_index = hdu
        self.parent_id = parent_id
        self.origfile = origfile or self.path.name
        self._fd: int | None = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            self._hdul = fits.open(self.path, memmap=True, lazy_load_hdus=True)
            try:
                self._hdu = self._hdul[hdu]
                header = self._hdu.header
                if not self._hdu.is_image or header.get("NAXIS") != 2:
                    raise ArchiveError(f"{self.path}[{hdu}] is not a 2-D image")
                self.wcs = WCS(header, fobj=self._hdul).celestial
            except (IndexError, KeyError) as exc:
                self.close()
                raise ArchiveError(f"{self.path} has no image HDU {hdu}") from exc
            except Exception:
                self.close()
                raise
        self.shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
        #: the unit of the physical values, if the header names one
        self.bunit: str | None = header.get("BUNIT")
        #: what `physical` applies to raw stored values (astropy applies it to compressed data itself)
        self._scaling = (float(header.get("BSCALE", 1)), float(header.get("BZERO", 0)), header.get("BLANK"))
        self._frame = wcs_to_celestial_frame(self.wcs)
        self.compressed = isinstance(self._hdu, fits.CompImageHDU)
        if not self.compressed:
            self._raw_dtype = np.dtype(_RAW_DTYPES[int(header["BITPIX"])])
            self._data_offset = int(self._hdu.fileinfo()["datLoc"])
            self._fd = os.open(self.path, os.O_RDONLY)
            self._hdul.close()  # the raw reader needs only the descriptor
        #: reference pixels of every WCS (primary and alternates), to be shifted per cutout
        self.crpix = {"CRPIX1": 0.0, "CRPIX2": 0.0}
        self.crpix.update({card.keyword: float(card.value) for card in header.cards if _CRPIX.match(card.keyword)})
        keep_scaling = not self.compressed  # raw values are copied, so their scaling applies
        #: the parent's other header cards, verbatim, carried into every cutout
        self.header_cards = "".join(
            card.image for card in header.cards
            if not _STRUCTURAL.match(card.keyword) and not _CRPIX.match(card.keyword)
            and (keep_scaling or not _SCALING.match(card.keyword)))

    def close(self) -> None:
        """Release the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._hdul.close()

    @cached_property
    def dtype(self) -> np.dtype:
        """The dtype `read` returns: the stored type, or for a compressed parent what astropy decompresses to.

        That is the image's BITPIX unless BSCALE, BZERO or BLANK make astropy scale the values; then
        astropy's rules decide, so it is learnt by reading one pixel (one tile), once per open parent.
        """
        if not self.compressed:
            return self._raw_dtype
        if not any(key in self._hdu.header for key in ("BSCALE", "BZERO", "BLANK")):
            return np.dtype(self._hdu.section.dtype)
        return self.read(0, 1, 0, 1).dtype

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Stored values of ``[y0:y1, x0:x1]`` as a new, FITS-storable array."""
        if self.compressed:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", AstropyWarning)
                return np.array(self._hdu.section[y0:y1, x0:x1])
        out = np.empty((y1 - y0, x1 - x0), dtype=self._raw_dtype)
        item, row_bytes = self._raw_dtype.itemsize, (x1 - x0) * self._raw_dtype.itemsize
        stride, base = self.shape[1] * item, self._data_offset + x0 * item
        for j in range(y1 - y0):
            if os.preadv(self._fd, [out[j]], base + (y0 + j) * stride) != row_bytes:
                raise ArchiveError(f"{self.path} is truncated")
        return out

    def physical(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Physical values of ``[y0:y1, x0:x1]`` as float64: scaled, and BLANK as NaN."""
        stored = self.read(y0, y1, x0, x1)
        if self.compressed:
            return stored.astype(float)
        scale, zero, blank = self._scaling
        values = stored.astype(float)
        if (scale, zero) != (1.0, 0.0):
            values = values * scale + zero
        if blank is not None and stored.dtype.kind in "iu":
            values[stored == blank] = np.nan
        return values

    def to_pixels(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """0-based pixel coordinates of ICRS positions (degrees)."""
        if not isinstance(self._frame, ICRS):
            native = SkyCoord(ra, dec, unit="deg", frame="icrs").transform_to(self._frame).spherical
            ra, dec = native.lon.deg, native.lat.deg
        world = np.empty((len(ra), 2))
        world[:, self.wcs.wcs.lng], world[:, self.wcs.wcs.lat] = ra, dec
        pix = self.wcs.all_world2pix(world, 0, quiet=True)
        return pix[:, 0], pix[:, 1]

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

    def get(self, path: str | os.PathLike, hdu: int, parent_id: str = "", origfile: str = "") -> ParentImage:
        """The open parent for ``path[hdu]``, opening it on first use."""
        key = (os.fspath(path), hdu)
        parent = self._items.get(key)
        if parent is not None:
            self._items.move_to_end(key)
            return parent
        parent = ParentImage(path, hdu, parent_id, origfile)
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
        """Physical pixel values (BSCALE and BZERO applied)."""
        scale, zero = self.header.get("BSCALE", 1), self.header.get("BZERO", 0)
        native = self.stored.astype(self.stored.dtype.newbyteorder("="))
        return native if (scale, zero) == (1, 0) else native * scale + zero

    @property
    def wcs(self) -> WCS:
        """The cutout's WCS (the parent's, shifted)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            return WCS(self.header)

    def to_fits(self) -> bytes:
        """The cutout as a complete FITS file."""
        return image_bytes(self.cards, self.stored)


def pixel_box(parent: ParentImage, field: Field) -> tuple[int, int, int, int]:
    """The half-open pixel rectangle ``(y0, y1, x0, x1)`` of ``field`` clipped to ``parent``.

    It is the smallest set of whole pixels containing the part of the field's sky
    box that lies on the image.

    Raises
    ------
    NoOverlapError
        When the field and the image do not overlap.
    """
    ra, dec = field.outline(OUTLINE_PER_EDGE)
    x, y = parent.to_pixels(ra, dec)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise NoOverlapError(f"field at ({field.ra}, {field.dec}) is not on image {parent.origfile}")
    ny, nx = parent.shape
    lo_x, hi_x, lo_y, hi_y = -0.5, nx - 0.5, -0.5, ny - 0.5
    if x.min() < lo_x or x.max() > hi_x or y.min() < lo_y or y.max() > hi_y:
        x, y = _clip_polygon(x, y, lo_x, hi_x, lo_y, hi_y)
        if len(x) == 0:
            raise NoOverlapError(f"field at ({field.ra}, {field.dec}) does not overlap {parent.origfile}")
    x0, x1 = max(math.floor(min(x) + 0.5), 0), min(math.floor(max(x) + 0.5), nx - 1)
    y0, y1 = max(math.floor(min(y) + 0.5), 0), min(math.floor(max(y) + 0.5), ny - 1)
    return y0, y1 + 1, x0, x1 + 1


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
        return header + (-header % BLOCK) + data + (-data % BLOCK)


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
    _, bitpix, bzero = storable(np.empty((0, 0), dtype=parent.dtype))
    cards = [format_card("SIMPLE", True, "conforms to FITS standard"),
             format_card("BITPIX", bitpix), format_card("NAXIS", 2),
             format_card("NAXIS1", x1 - x0), format_card("NAXIS2", y1 - y0),
             format_card("EXTEND", True)]
    if bzero is not None:
        cards += [format_card("BSCALE", 1), format_card("BZERO", bzero)]
    cards.append(parent.header_cards)
    for key, value in parent.crpix.items():
        cards.append(format_card(key, value - (x0 if key[5] == "1" else y0), "reference pixel (shifted)"))
    cards += [
        format_card("LTV1", -x0, "cutout = parent + LTV (IRAF physical to logical)"),
        format_card("LTV2", -y0, "cutout = parent + LTV (IRAF physical to logical)"),
        format_card("LTM1_1", 1), format_card("LTM2_2", 1),
        format_card("PARENTID", parent.parent_id or parent.path.name, "archive id of the parent image"),
        format_card("ORIGFILE", parent.origfile[:68], "parent file, relative to the archive"),
        format_card("ORIGHDU", parent.hdu_index, "HDU of the parent image"),
        format_card("REQ_RA", field.ra, "[deg] requested POS, ICRS RA"),
        format_card("REQ_DEC", field.dec, "[deg] requested POS, ICRS Dec"),
        format_card("REQ_W", field.width, "[deg] requested SIZE, width"),
        format_card("REQ_H", field.height, "[deg] requested SIZE, height"),
    ]
    return CutoutHeader("".join(cards), y0, y1, x0, x1, bitpix)


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
    return Cutout(stored, head.cards, head.y0, head.x0)


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


def _clip_polygon(x: np.ndarray, y: np.ndarray, lo_x: float, hi_x: float,
                  lo_y: float, hi_y: float) -> tuple[list[float], list[float]]:
    """Sutherland-Hodgman clipping of a polygon to an axis-aligned rectangle."""
    points = list(zip(x.tolist(), y.tolist(), strict=True))
    for axis, bound, sign in ((0, lo_x, 1.0), (0, hi_x, -1.0), (1, lo_y, 1.0), (1, hi_y, -1.0)):
        clipped = []
        for i, current in enumerate(points):
            previous = points[i - 1]
            current_in = sign * (current[axis] - bound) >= 0
            if current_in != (sign * (previous[axis] - bound) >= 0):
                t = (bound - previous[axis]) / (current[axis] - previous[axis])
                clipped.append((previous[0] + t * (current[0] - previous[0]),
                                previous[1] + t * (current[1] - previous[1])))
            if current_in:
                clipped.append(current)
        points = clipped
    return [p[0] for p in points], [p[1] for p in points]
