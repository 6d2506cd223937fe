"""How an archive image HDU is laid out, as both the index and the cutout engine read it.

One function, `describe`, turns an open HDU into a `Layout`: its 2-D shape (extra axes
of length one are allowed), its celestial WCS as astropy/wcslib build it (distortion
lookup tables included), where its raw values are, and the header cards a cutout
carries. The index stores what a layout says, so that a SIAP row can be computed from
the index alone, and the engine cuts with the same layout, so both agree to the byte.

**The WCS of a cutout.** wcslib translates many conventions into its own model when it
reads a header: DSS plate solutions (CNPIX, AMDX/AMDY) and IRAF TNX/ZPX become TAN with
a TPD polynomial, ``EPOCH`` becomes ``EQUINOX``, and so on. Shifting CRPIX in the
parent's own cards is only right for some of them (a DSS cutout would be off by its
offset), so a cutout's WCS is the parent's WCS *as wcslib understood it*, written by
astropy (``WCS.to_fits(relax=True)``: SIP, TPV and TPD distortions included), with
CRPIX shifted. Distortion lookup tables (CPDIS/D2IM, as HST writes them) travel as
WCSDVARR/D2IMARR extensions of the cutout, their CRVAL shifted by the same offset.
The parent's own WCS cards are left out (they would contradict the written WCS); every
other card is carried verbatim, and an extension's primary-header cards too when it
says ``INHERIT = T``.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS

from cutout.errors import ArchiveError
from cutout.fitsio import CARD, format_card

#: structural and per-cutout cards, never carried from a parent
STRUCTURAL = re.compile(r"^(SIMPLE|XTENSION|BITPIX|NAXIS\d*|EXTEND|PCOUNT|GCOUNT|END|CHECKSUM|DATASUM|INHERIT"
                        r"|EXTNAME|EXTVER|EXTLEVEL|LTV\d|LTM\d_\d|PARENTID|ORIGFILE|ORIGHDU|REQ_(RA|DEC|W|H)"
                        r"|Z[A-Z0-9_]*|TFIELDS|TTYPE\d+|TFORM\d+|THEAP|TDIM\d+)$")
#: the primary WCS's cards (no alternate letter), replaced in a cutout by the WCS as written by astropy;
#: DSS plate-solution and IRAF WAT cards are WCS too (wcslib reads them)
WCS_FAMILY = re.compile(
    r"^(WCSAXES|CTYPE\d+|PC\d{6}|CD\d{6}|CRVAL\d+|CRPIX\d+|CDELT\d+|CUNIT\d+|CROTA\d+|CD\d+_\d+|PC\d+_\d+|PV\d+_\d+|PS\d+_\d+"
    r"|LONPOLE|LATPOLE|RADESYS|RADECSYS|EQUINOX|EPOCH|WCSNAME|RESTFRQ|RESTFREQ|RESTWAV|SPECSYS|SSYSOBS|VELREF"
    r"|A_ORDER|B_ORDER|AP_ORDER|BP_ORDER|A_\d+_\d+|B_\d+_\d+|AP_\d+_\d+|BP_\d+_\d+|A_DMAX|B_DMAX|SIPSTAT"
    r"|CPDIS\d+|CQDIS\d+|DP\d+(\..*)?|DQ\d+(\..*)?|CPERR\d+|CQERR\d+|D2IMDIS\d+|D2IM\d+(\..*)?|D2IMEXT|D2IMERR\d+"
    r"|NPOLEXT|CNPIX\d|PPO\d+|AMDX\d+|AMDY\d+|XPIXELSZ|YPIXELSZ|PLTRAH|PLTRAM|PLTRAS|PLTDECSN|PLTDECD|PLTDECM"
    r"|PLTDECS|PLTSCALE|WAT\d_\d+|WAXMAP\d+|WCSDIM)$")
#: the reference pixels of alternate WCSs (carried verbatim, shifted per cutout)
ALT_CRPIX = re.compile(r"^CRPIX([12])([A-Z])$")
_LTM = re.compile(r"^LTM([12])_([12])$")
_RAW_DTYPES = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


@dataclass(frozen=True)
class Table:
    """A distortion lookup table carried by cutouts as an image extension."""

    #: the extension's cards up to (without) its CRVAL cards: XTENSION ... EXTVER, CRPIX, CDELT
    cards: str
    #: per table axis: (CRVAL, the 0-based image axis it follows, or None)
    crval: tuple[tuple[float, int | None], ...]
    #: the table's data unit, big-endian and padded
    data: bytes

    def extension(self, x0: int, y0: int) -> bytes:
        """The extension for a cutout at offset (x0, y0): CRVAL shifted along the image axes."""
        cards = self.cards + "".join(
            format_card(f"CRVAL{k}", value - ((x0, y0)[axis] if axis is not None else 0))
            for k, (value, axis) in enumerate(self.crval, 1))
        block = (cards + f"{'END':<{CARD}}").encode("ascii")
        return block + b" " * (-len(block) % 2880) + self.data


@dataclass(frozen=True)
class Layout:
    """What cutting an image HDU needs, read once from its header (see the module docstring)."""

    #: (ny, nx)
    shape: tuple[int, int]
    #: the celestial WCS as wcslib built it (lookup tables included)
    wcs: WCS
    #: the WCS as a cutout writes it, without CRPIX (see `crpix`)
    wcs_cards: str
    #: reference pixels to shift per cutout: CRPIX1/2 and the alternates' CRPIXna
    crpix: dict[str, float]
    #: the parent's own non-WCS cards, verbatim (inherited primary cards first when INHERIT = T)
    carried: str
    #: LTV1, LTV2 of the parent (IRAF physical to logical), and its LTM cards
    ltv: tuple[float, float]
    ltm: dict[str, float]
    #: distortion lookup tables, written as extensions
    tables: tuple[Table, ...]
    compressed: bool
    #: BITPIX as stored (raw values: for tile-compressed images, as the tiles decompress)
    bitpix: int
    #: BSCALE, BZERO and BLANK, applied to raw values for physical ones
    scaling: tuple[float, float, int | None]
    bunit: str | None = None
    #: uncompressed images: byte offset of the data in the file
    data_offset: int | None = None
    extras: dict = field(default_factory=dict)

    @property
    def raw_dtype(self) -> np.dtype:
        """The dtype of stored values as read (big-endian for uncompressed data)."""
        return np.dtype(_RAW_DTYPES[self.bitpix])


def plane_shape(header: fits.Header) -> tuple[int, int] | None:
    """(ny, nx) of an image HDU that is one 2-D plane (axes beyond the second of length one), else None."""
    naxis = header.get("ZNAXIS", header.get("NAXIS")) if header.get("ZIMAGE") else header.get("NAXIS")
    prefix = "ZNAXIS" if header.get("ZIMAGE") else "NAXIS"
    if not isinstance(naxis, int) or naxis < 2:
        return None
    if any(header.get(f"{prefix}{k}", 1) != 1 for k in range(3, naxis + 1)):
        return None
    ny, nx = header.get(f"{prefix}2"), header.get(f"{prefix}1")
    if not (isinstance(nx, int) and isinstance(ny, int)) or nx < 1 or ny < 1:
        return None
    return ny, nx


def image_wcs(header: fits.Header, hdul: fits.HDUList | None) -> WCS | None:
    """The celestial WCS of a 2-D image, on its first two pixel axes; None when it has none.

    A header with NAXIS = 2 may describe more WCS axes (FREQ, STOKES: radio surveys);
    only the celestial pair is kept, and it must be on the image's two axes.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        wcs = WCS(header, fobj=hdul)
        if not wcs.has_celestial:
            return None
        if wcs.naxis > 2:
            lng, lat = wcs.wcs.lng, wcs.wcs.lat
            if sorted((lng, lat)) != [0, 1]:
                return None
            wcs = wcs.sub([1, 2])
        celestial = wcs.celestial
        if celestial.naxis != 2 or sorted((celestial.wcs.lng, celestial.wcs.lat)) != [0, 1]:
            return None
        celestial.wcs.set()
    return celestial


def describe(hdu: fits.hdu.base._BaseHDU, hdul: fits.HDUList | None, primary: fits.Header | None = None) -> Layout:
    """The layout of an image HDU (see `Layout`).

    Parameters
    ----------
    hdu
        An image HDU, opened with ``do_not_scale_image_data=True`` for tile-compressed data.
    hdul
        Its file (for distortion lookup tables).
    primary
        The primary header, when ``hdu`` is an extension (its cards are inherited when INHERIT = T).

    Raises
    ------
    ArchiveError
        When the HDU is not one 2-D image plane with a celestial WCS.
    """
    header = hdu.header
    shape = plane_shape(header) if hdu.is_image else None
    if shape is None:
        raise ArchiveError("not a 2-D image")
    wcs = image_wcs(header, hdul)
    if wcs is None:
        raise ArchiveError("no celestial WCS on the image axes")
    compressed = isinstance(hdu, fits.CompImageHDU)
    bitpix = int(header["BITPIX"])
    if compressed:
        bitpix = {np.dtype(v).newbyteorder("="): k for k, v in _RAW_DTYPES.items()}.get(
            np.dtype(hdu.section.dtype).newbyteorder("="), bitpix)
    wcs_cards, crpix, tables = canonical_wcs(wcs)
    inherited = []
    if primary is not None and header.get("INHERIT", False) is True:
        own = set(header.keys())
        inherited = [c for c in primary.cards if c.keyword not in own and _carried(c.keyword)
                     and c.keyword not in ("BSCALE", "BZERO", "BLANK", "BUNIT")]  # the data's own, not inherited
    cards = inherited + [c for c in header.cards if _carried(c.keyword)]
    for card in header.cards:
        match = ALT_CRPIX.match(card.keyword)
        if match and card.keyword[-1] != " ":
            crpix[card.keyword] = float(card.value)
    ltm = {c.keyword: float(c.value) for c in header.cards if _LTM.match(c.keyword)}
    scaling = (float(header.get("BSCALE", 1)), float(header.get("BZERO", 0)),
               int(header["BLANK"]) if isinstance(header.get("BLANK"), int) else None)
    return Layout(shape=shape, wcs=wcs, wcs_cards=wcs_cards, crpix=crpix,
                  carried="".join(c.image for c in cards if not ALT_CRPIX.match(c.keyword)),
                  ltv=(float(header.get("LTV1", 0.0)), float(header.get("LTV2", 0.0))), ltm=ltm, tables=tables,
                  compressed=compressed, bitpix=bitpix, scaling=scaling,
                  bunit=str(header["BUNIT"]).strip() or None if "BUNIT" in header else None,
                  data_offset=None if compressed else int(hdu.fileinfo()["datLoc"]))


def _carried(keyword: str) -> bool:
    return bool(keyword) and not STRUCTURAL.match(keyword) and not WCS_FAMILY.match(keyword)


def canonical_wcs(wcs: WCS) -> tuple[str, dict[str, float], tuple[Table, ...]]:
    """A WCS as a cutout writes it: its cards without CRPIX, CRPIX1/2, and its lookup tables."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        written = wcs.to_fits(relax=True)
    header = written[0].header
    crpix = {"CRPIX1": float(header.get("CRPIX1", 0.0)), "CRPIX2": float(header.get("CRPIX2", 0.0))}
    cards = "".join(c.image for c in header.cards
                    if WCS_FAMILY.match(c.keyword) and c.keyword not in ("CRPIX1", "CRPIX2"))
    axes = _table_axes(header)
    tables = []
    for hdu in written[1:]:
        h = hdu.header
        key = (str(h.get("EXTNAME", "")).strip(), int(h.get("EXTVER", 1)))
        follow = axes.get(key, {})
        fixed = [format_card("XTENSION", "IMAGE"), format_card("BITPIX", -32), format_card("NAXIS", h["NAXIS"])]
        fixed += [format_card(f"NAXIS{k}", h[f"NAXIS{k}"]) for k in range(1, h["NAXIS"] + 1)]
        fixed += [format_card("PCOUNT", 0), format_card("GCOUNT", 1), format_card("EXTNAME", key[0]),
                  format_card("EXTVER", key[1])]
        fixed += [format_card(f"{kw}{k}", float(h.get(f"{kw}{k}", 0.0))) for kw in ("CRPIX", "CDELT")
                  for k in range(1, h["NAXIS"] + 1)]
        data = np.ascontiguousarray(hdu.data, dtype=">f4").tobytes()
        tables.append(Table("".join(fixed), tuple((float(h.get(f"CRVAL{k}", 0.0)), follow.get(k))
                                                  for k in range(1, h["NAXIS"] + 1)),
                            data + b"\0" * (-len(data) % 2880)))
    return cards, crpix, tuple(tables)


def _table_axes(header: fits.Header) -> dict[tuple[str, int], dict[int, int]]:
    """Per lookup-table extension (EXTNAME, EXTVER): table axis -> 0-based image axis (the AXIS.k records)."""
    found: dict[tuple[str, int], dict[int, int]] = {}
    for prefix, name in (("DP", "WCSDVARR"), ("D2IM", "D2IMARR")):
        for j in (1, 2):
            if f"{prefix}{j}.EXTVER" not in header:
                continue
            extver = int(header[f"{prefix}{j}.EXTVER"])
            axes = found.setdefault((name, extver), {})
            for k in (1, 2):
                if f"{prefix}{j}.AXIS.{k}" in header:
                    axes[k] = int(header[f"{prefix}{j}.AXIS.{k}"]) - 1
            for k in (1, 2):
                axes.setdefault(k, k - 1)
    return found


def wcs_from_cards(cards: str, tables: bytes = b"") -> WCS:
    """The WCS of stored canonical cards (CRPIX included) and, where it has them, its lookup tables."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        header = fits.Header.fromstring(cards)
        if not tables:
            return WCS(header)
        hdul = fits.HDUList.fromstring(tables)
        return WCS(header, fobj=hdul)


def tables_fits(tables: tuple[Table, ...]) -> bytes:
    """The lookup tables as a FITS file (an empty primary HDU, then the extensions), for the index."""
    if not tables:
        return b""
    buffer = io.BytesIO()
    primary = (format_card("SIMPLE", True) + format_card("BITPIX", 8) + format_card("NAXIS", 0)
               + format_card("EXTEND", True) + f"{'END':<{CARD}}").encode("ascii")
    buffer.write(primary + b" " * (-len(primary) % 2880))
    for table in tables:
        buffer.write(table.extension(0, 0))
    return buffer.getvalue()
