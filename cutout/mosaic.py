"""Mosaics and stacks: archive images reprojected onto one output grid and co-added.

The output grid is given with the SIAP 1.0 image-generation parameters (`GridSpec`:
NAXIS, CFRAME, EQUINOX, CRPIX, CRVAL, CDELT, ROTANG, PROJ); what is not given is filled
in per field (`GridSpec.resolve`): a TAN projection centred on the field, north up, at
the finest native pixel scale of the field's inputs, covering its SIZE. Every band of a
field is resolved with the same inputs' scale, so the bands of a stack share one WCS.

Each input contributes only the part of its parent that covers the grid
(`input_region`), read as physical values. Mean and sum co-adds are reproject's
`~reproject.mosaicking.reproject_and_coadd`, background matching included; reproject has
no median, so a median is taken over the inputs reprojected one by one with the same
function, after the same per-image constant background offsets are removed.

**Memory of a median.** A median needs every input's value at a pixel at once. It is taken
strip by strip of the output grid (each input reprojected onto the strip's rows only), so
that the layers of one strip stay within `MEDIAN_BYTES` whatever the number of inputs and
the grid's size; the background offsets are measured on the same grid sampled every
*k*-th pixel in each direction (those pixels' values are the full grid's, exactly), with
*k* the smallest step that keeps the sampled layers within the same budget.

**Resampling.** `reproject_interp` (bilinear), without the coordinate round trip: in
bench/stack_bench.py it is the fastest of reproject's algorithms by a wide margin, and at
the native pixel scale of the inputs (the default grid) bilinear interpolation keeps
the flux of the demo archive's sources within 1% and their centroids within 0.2 pixel
(tests/cutout/test_mosaic.py). ``"exact"`` (flux-conserving) and ``"adaptive"`` are
available for grids much coarser than the inputs.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
from astropy.coordinates import FK4, FK5, ICRS, Galactic, SkyCoord
from astropy.io import fits
from astropy.stats import mad_std
from astropy.time import Time
from astropy.utils.exceptions import AstropyWarning
from astropy.visualization import make_lupton_rgb
from astropy.wcs import WCS
from PIL import Image
from reproject import reproject_adaptive, reproject_exact, reproject_interp
from reproject.mosaicking import reproject_and_coadd

from cutout.engine import OUTLINE_PER_EDGE, ParentImage, _clip_polygon
from cutout.errors import FieldError, NoOverlapError
from cutout.preview import PREVIEW_FORMATS
from cutout.sky import Field

#: SIAP CFRAME values: the celestial axes' CTYPE prefixes and the astropy frame
FRAMES = {"ICRS": ("RA", "DEC", ICRS), "FK5": ("RA", "DEC", FK5), "FK4": ("RA", "DEC", FK4),
          "GAL": ("GLON", "GLAT", Galactic)}
#: WCS projections that need no projection parameters (PV cards)
PROJECTIONS = ("TAN", "SIN", "ARC", "STG", "ZEA", "CAR", "MER", "SFL", "PAR", "MOL", "AIT", "TSC", "CSC",
               "QSC", "HPX", "XPH")
COMBINES = ("mean", "median", "sum")
ALGORITHMS = {"interp": reproject_interp, "adaptive": reproject_adaptive, "exact": reproject_exact}
#: bytes of the float64 layers a median holds at once (see the module docstring)
MEDIAN_BYTES = 64 * 1024 * 1024
#: the resampling used by the service (see the module docstring)
ALGORITHM = "interp"
#: input pixels read beyond the grid's outline, so that interpolation has neighbours at its edge
MARGIN = 2
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class Grid:
    """A complete output grid: a celestial WCS and a size."""

    #: (nx, ny): NAXIS1, NAXIS2
    naxis: tuple[int, int]
    #: reference value in ``frame``, degrees
    crval: tuple[float, float]
    #: degrees per pixel along each axis, FITS signs (CDELT1 < 0: east to the left)
    cdelt: tuple[float, float]
    #: 1-based reference pixel
    crpix: tuple[float, float]
    #: position angle of the image's +y axis, degrees east of north
    rotang: float = 0.0
    proj: str = "TAN"
    frame: str = "ICRS"
    #: equinox of FK4/FK5 (Julian years for FK5, Besselian for FK4)
    equinox: float | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx) in numpy order."""
        return self.naxis[1], self.naxis[0]

    @property
    def pixels(self) -> int:
        """Number of output pixels."""
        return self.naxis[0] * self.naxis[1]

    def header(self) -> fits.Header:
        """The grid's WCS as header cards (CDELT and a PC rotation matrix)."""
        lon, lat, _ = FRAMES[self.frame]
        rho = -math.radians(self.rotang)  # CROTA2 turns +y to the west for CDELT1 < 0; ROTANG turns it east
        c1, c2 = self.cdelt
        header = fits.Header()
        header["WCSAXES"] = 2
        header["CTYPE1"] = f"{lon}{'-' * (5 - len(lon))}{self.proj}"
        header["CTYPE2"] = f"{lat}{'-' * (5 - len(lat))}{self.proj}"
        header["CUNIT1"], header["CUNIT2"] = "deg", "deg"
        header["CRPIX1"], header["CRPIX2"] = self.crpix
        header["CRVAL1"], header["CRVAL2"] = self.crval
        header["CDELT1"], header["CDELT2"] = c1, c2
        # CROTA2 as a PC matrix (Calabretta & Greisen 2002, eq. 189)
        header["PC1_1"], header["PC1_2"] = math.cos(rho), -math.sin(rho) * c2 / c1
        header["PC2_1"], header["PC2_2"] = math.sin(rho) * c1 / c2, math.cos(rho)
        if self.frame in ("ICRS", "FK5", "FK4"):
            header["RADESYS"] = self.frame
        if self.equinox is not None:
            header["EQUINOX"] = self.equinox
        header["ROTANG"] = (self.rotang, "[deg] +y axis, east of north (SIAP ROTANG)")
        return header

    def wcs(self) -> WCS:
        """The grid's celestial WCS (made once per grid: do not modify it)."""
        return self._wcs

    @cached_property
    def _wcs(self) -> WCS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            return WCS(self.header())

    def frame_object(self) -> object:
        """The astropy frame of the grid's coordinates."""
        frame = FRAMES[self.frame][2]
        if self.frame == "FK5":
            return frame(equinox=Time(self.equinox or 2000.0, format="jyear"))
        if self.frame == "FK4":
            return frame(equinox=Time(self.equinox or 1950.0, format="byear"))
        return frame()

    @cached_property
    def outline(self) -> tuple[np.ndarray, np.ndarray]:
        """ICRS (ra, dec) of points along the edge of the grid's pixel area, degrees."""
        nx, ny, per_edge = *self.naxis, OUTLINE_PER_EDGE
        t = np.linspace(0.0, 1.0, per_edge, endpoint=False)
        x = np.concatenate([-0.5 + t * nx, np.full(per_edge, nx - 0.5), nx - 0.5 - t * nx, np.full(per_edge, -0.5)])
        y = np.concatenate([np.full(per_edge, -0.5), -0.5 + t * ny, np.full(per_edge, ny - 0.5), ny - 0.5 - t * ny])
        lon, lat = self.wcs().wcs_pix2world(x, y, 0)
        if self.frame == "ICRS":
            return lon, lat
        sky = SkyCoord(lon, lat, unit="deg", frame=self.frame_object()).icrs
        return sky.ra.deg, sky.dec.deg


@dataclass(frozen=True)
class GridSpec:
    """The output grid as requested: every SIAP image-generation parameter is optional."""

    naxis: tuple[int, int] | None = None
    frame: str = "ICRS"
    equinox: float | None = None
    crpix: tuple[float, float] | None = None
    crval: tuple[float, float] | None = None
    cdelt: tuple[float, float] | None = None
    rotang: float = 0.0
    proj: str = "TAN"

    def resolve(self, field: Field, native_scale_deg: float) -> Grid:
        """The grid for ``field``, defaults filled in.

        Parameters
        ----------
        field : Field
            The requested POS and SIZE: the default centre and extent.
        native_scale_deg : float
            The finest pixel scale among the field's inputs: the default CDELT.

        Notes
        -----
        The scale is CDELT if given, else SIZE/NAXIS if NAXIS is given, else the native
        scale; the size is NAXIS if given, else SIZE at that scale. The reference value is
        CRVAL if given, else POS in CFRAME, at CRPIX (default: the grid's centre).
        """
        if self.cdelt is not None:
            cdelt = self.cdelt
        elif self.naxis is not None:
            cdelt = (-field.width / self.naxis[0], field.height / self.naxis[1])
        else:
            cdelt = (-native_scale_deg, native_scale_deg)
        naxis = self.naxis or (max(1, math.ceil(field.width / abs(cdelt[0]) - 1e-9)),
                               max(1, math.ceil(field.height / abs(cdelt[1]) - 1e-9)))
        grid = Grid(naxis, (0.0, 0.0), cdelt, self.crpix or ((naxis[0] + 1) / 2, (naxis[1] + 1) / 2),
                    self.rotang, self.proj, self.frame, self.equinox if self.frame in ("FK4", "FK5") else None)
        if self.crval is not None:
            return replace(grid, crval=self.crval)
        centre = SkyCoord(field.ra, field.dec, unit="deg", frame="icrs").transform_to(grid.frame_object())
        lon, lat = centre.spherical.lon.deg, centre.spherical.lat.deg
        return replace(grid, crval=(float(lon) % 360.0, float(lat)))

    def pixels_bound(self, width: float, height: float, finest_scale_deg: float) -> int:
        """The most output pixels a field of this size can get, whatever its inputs."""
        if self.naxis is not None:
            return self.naxis[0] * self.naxis[1]
        sx, sy = (abs(self.cdelt[0]), abs(self.cdelt[1])) if self.cdelt else (finest_scale_deg, finest_scale_deg)
        return math.ceil(width / sx - 1e-9) * math.ceil(height / sy - 1e-9)

    def to_spec(self) -> dict:
        """Plain JSON-able data."""
        return {"naxis": self.naxis and list(self.naxis), "frame": self.frame, "equinox": self.equinox,
                "crpix": self.crpix and list(self.crpix), "crval": self.crval and list(self.crval),
                "cdelt": self.cdelt and list(self.cdelt), "rotang": self.rotang, "proj": self.proj}

    @classmethod
    def from_spec(cls, spec: dict) -> GridSpec:
        """Inverse of `to_spec`."""
        pair = {k: tuple(spec[k]) if spec.get(k) else None for k in ("naxis", "crpix", "crval", "cdelt")}
        return cls(frame=spec["frame"], equinox=spec["equinox"], rotang=spec["rotang"], proj=spec["proj"], **pair)


@dataclass(frozen=True)
class InputImage:
    """The part of one parent image that covers a grid, as physical values."""

    data: np.ndarray
    wcs: WCS
    parent_id: str
    band: str
    bunit: str | None
    mjd: float | None


def input_region(parent: ParentImage, grid: Grid) -> tuple[int, int, int, int]:
    """The half-open pixel rectangle ``(y0, y1, x0, x1)`` of ``parent`` that covers ``grid``.

    It holds every parent pixel under the grid's outline, plus `MARGIN` pixels for the
    interpolation at the edge, clipped to the parent.

    Raises
    ------
    NoOverlapError
        When the grid and the image do not overlap.
    """
    ra, dec = grid.outline
    x, y = parent.to_pixels(ra, dec)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise NoOverlapError(f"the output grid is not on image {parent.origfile}")
    ny, nx = parent.shape
    x, y = _clip_polygon(x, y, -0.5, nx - 0.5, -0.5, ny - 0.5)
    if not len(x):
        raise NoOverlapError(f"the output grid does not overlap {parent.origfile}")
    x0, x1 = max(math.floor(min(x)) - MARGIN, 0), min(math.ceil(max(x)) + MARGIN, nx - 1)
    y0, y1 = max(math.floor(min(y)) - MARGIN, 0), min(math.ceil(max(y)) + MARGIN, ny - 1)
    return y0, y1 + 1, x0, x1 + 1


def read_input(parent: ParentImage, grid: Grid, band: str, mjd: float | None = None) -> InputImage:
    """Read the part of ``parent`` under ``grid`` (`input_region`) with its WCS.

    Raises
    ------
    NoOverlapError
        When the grid and the image do not overlap.
    """
    y0, y1, x0, x1 = input_region(parent, grid)
    return InputImage(parent.physical(y0, y1, x0, x1), parent.wcs[y0:y1, x0:x1], parent.parent_id,
                      band, parent.bunit, mjd)


@dataclass(frozen=True)
class Mosaic:
    """The co-add of one band on a grid."""

    #: co-added values, float32; NaN where no input covers a pixel
    data: np.ndarray
    #: per pixel, the number of inputs that covered it (their summed reproject footprints)
    weight: np.ndarray
    grid: Grid
    band: str
    #: parent ids of the inputs, in the order given
    inputs: tuple[str, ...]
    bunit: str | None
    combine: str
    background: bool
    mjd: float | None = None
    algorithm: str = ALGORITHM

    def header(self) -> fits.Header:
        """The grid's WCS with the co-add's provenance (BUNIT, NCOMBINE, IMCMBnnn)."""
        header = self.grid.header()
        if self.bunit:
            header["BUNIT"] = self.bunit
        header["FILTER"] = (self.band, "band of every input")
        header["NCOMBINE"] = (len(self.inputs), "number of images co-added")
        header["COMBINE"] = (self.combine, "how overlapping inputs are combined")
        header["BKGMATCH"] = (self.background, "input backgrounds matched (reproject)")
        header["RESAMPLE"] = (f"reproject_{self.algorithm}", "resampling")
        if self.mjd is not None:
            header["MJD-AVG"] = (self.mjd, "mean MJD of the inputs")
            header["DATE-AVG"] = (Time(self.mjd, format="mjd").isot, "mean date of the inputs")
        for i, parent_id in enumerate(self.inputs, 1):
            header[f"IMCMB{i:03d}"] = (parent_id, "input image (archive id)")
        return header


def coadd(inputs: Sequence[InputImage], grid: Grid, combine: str = "mean", match_background: bool = False,
          algorithm: str = ALGORITHM, roundtrip_coords: bool = False) -> Mosaic:
    """Reproject ``inputs`` (one band) onto ``grid`` and combine them.

    Parameters
    ----------
    inputs : sequence of InputImage
        At least one, all of the same band.
    grid : Grid
    combine : {'mean', 'median', 'sum'}
    match_background : bool
        Remove a constant offset per input so that overlaps agree (reproject's model:
        the mean correction is zero).
    algorithm : {'interp', 'adaptive', 'exact'}
    roundtrip_coords : bool
        Whether interp and adaptive check each pixel's coordinates by a round trip (reproject's
        default); off, as the inputs' WCS are well-behaved over the grid (bench/stack_bench.py).

    Returns
    -------
    Mosaic
    """
    if not inputs:
        raise NoOverlapError("no input image covers the grid")
    if combine not in COMBINES:
        raise FieldError(f"combine must be one of {COMBINES}, got {combine!r}")
    function = ALGORITHMS[algorithm]
    options = {} if algorithm == "exact" else {"roundtrip_coords": roundtrip_coords}
    pairs = [(i.data, i.wcs) for i in inputs]
    wcs = grid.wcs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
        if combine == "median":
            data, weight = _median(pairs, wcs, grid.shape, function, match_background, options)
        else:
            data, weight = reproject_and_coadd(pairs, wcs, shape_out=grid.shape, reproject_function=function,
                                               combine_function=combine, match_background=match_background,
                                               blank_pixel_value=np.nan, **options)
    units = {i.bunit for i in inputs}
    mjds = [i.mjd for i in inputs if i.mjd is not None]
    return Mosaic(np.asarray(data, dtype=np.float32), np.asarray(weight, dtype=np.float32), grid, inputs[0].band,
                  tuple(i.parent_id for i in inputs), units.pop() if len(units) == 1 else None, combine,
                  match_background, float(np.mean(mjds)) if mjds else None, algorithm)


def _median(pairs: list, wcs: WCS, shape: tuple[int, int], function: object, match_background: bool,
            options: dict) -> tuple[np.ndarray, np.ndarray]:
    """The median of the reprojected inputs and their count per pixel, strip by strip of the grid, each strip's
    layers within `MEDIAN_BYTES` (a strip is one row at least)."""
    n, (ny, nx), budget = len(pairs), shape, MEDIAN_BYTES
    offsets = np.zeros(n)
    if match_background and n > 1:
        step = max(1, math.ceil(math.sqrt(n * ny * nx * 8 / budget)))
        offsets = _background_offsets(_layers(pairs, wcs[::step, ::step], (-(-ny // step), -(-nx // step)),
                                              function, options))
    data, weight = np.empty(shape, dtype=np.float32), np.empty(shape, dtype=np.float32)
    rows = max(1, budget // (n * nx * 8))
    for y0 in range(0, ny, rows):
        y1 = min(y0 + rows, ny)
        layers = _layers(pairs, wcs[y0:y1, :], (y1 - y0, nx), function, options)
        layers -= offsets[:, None, None]
        count = np.isfinite(layers).sum(axis=0)
        weight[y0:y1] = count
        data[y0:y1] = np.where(count > 0, np.nanmedian(layers, axis=0), np.nan) if count.any() else np.nan
    return data, weight


def _layers(pairs: list, wcs: WCS, shape: tuple[int, int], function: object, options: dict) -> np.ndarray:
    """Each input reprojected onto ``wcs`` and ``shape``: one float64 layer each, NaN where it does not reach."""
    layers = np.full((len(pairs), *shape), np.nan)
    for layer, pair in zip(layers, pairs, strict=True):
        array, footprint = function(pair, wcs, shape_out=shape, **options)
        layer[footprint > 0] = array[footprint > 0]
    return layers


def _background_offsets(layers: np.ndarray) -> np.ndarray:
    """A constant offset per layer, from the median differences in the overlaps, with a zero mean.

    This is the model of reproject's background matching, solved by least squares.
    """
    n = len(layers)
    rows, values = [], []
    for i in range(n):
        for j in range(i + 1, n):
            both = np.isfinite(layers[i]) & np.isfinite(layers[j])
            if both.any():
                row = np.zeros(n)
                row[i], row[j] = 1.0, -1.0
                rows.append(row)
                values.append(float(np.median(layers[i][both] - layers[j][both])))
    rows.append(np.ones(n))
    values.append(0.0)
    return np.linalg.lstsq(np.array(rows), np.array(values), rcond=None)[0]


def mosaic_fits(mosaic: Mosaic, extra: fits.Header | None = None) -> bytes:
    """A mosaic as FITS: the co-add in the primary HDU, its weight map in extension WEIGHT."""
    header = mosaic.header()
    if extra is not None:
        header.extend(extra)
    weight = fits.ImageHDU(mosaic.weight, mosaic.grid.header(), name="WEIGHT")
    return _to_bytes(fits.HDUList([fits.PrimaryHDU(mosaic.data, header), weight]))


def stack_fits(mosaics: Sequence[Mosaic], extra: fits.Header | None = None) -> bytes:
    """A stack as one FITS file: per band, the co-add (EXTNAME the band) and its weights (``<band>_WEIGHT``).

    The primary HDU has no data; it carries the shared WCS and the list of bands.
    """
    primary = fits.PrimaryHDU(header=mosaics[0].grid.header())
    primary.header["NBANDS"] = (len(mosaics), "bands in this stack, one extension each")
    for i, m in enumerate(mosaics, 1):
        primary.header[f"BAND{i}"] = (m.band, f"extension {m.band}, weights {m.band}_WEIGHT")
    if extra is not None:
        primary.header.extend(extra)
    hdus = [primary]
    for m in mosaics:
        hdus += [fits.ImageHDU(m.data, m.header(), name=m.band),
                 fits.ImageHDU(m.weight, m.grid.header(), name=f"{m.band}_WEIGHT")]
    return _to_bytes(fits.HDUList(hdus))


def colour_preview(mosaics: Sequence[Mosaic], mime: str = "image/png") -> bytes:
    """An RGB composite (astropy's Lupton et al. 2004 scheme) of three mosaics, bluest first.

    Each band is put in units of its own sky noise (less the median sky, over a robust
    standard deviation), so the three weigh alike and the noise stays dark: the composite
    starts at one sigma and its asinh stretch bends at twenty. Pixels with no data are black.
    """
    if len(mosaics) != 3:
        raise FieldError(f"a colour preview needs three bands, got {len(mosaics)}")
    planes = []
    for m in mosaics:
        values = np.asarray(m.data, dtype=np.float32)
        finite = np.isfinite(values)
        if finite.any():
            sample = values[finite][::7]  # every 7th pixel: robust statistics, a seventh of the time
            sky, noise = float(np.median(sample)), float(mad_std(sample))
            values = (values - sky) / (noise if noise > 0 else 1.0)
        planes.append(np.where(finite, values, np.float32(0)))
    blue, green, red = planes
    rgb = make_lupton_rgb(red, green, blue, minimum=1.0, stretch=20.0, Q=8)
    buffer = io.BytesIO()
    options = {"quality": 90} if mime == "image/jpeg" else {"compress_level": 1}  # 3x faster than 6, 12% larger
    Image.fromarray(np.ascontiguousarray(np.flipud(rgb))).save(buffer, PREVIEW_FORMATS[mime], **options)
    return buffer.getvalue()


def unit_id(mode: str, band: str | None = None) -> str:
    """The URL-safe id of a generated product per field: ``mosaic-<band>`` or ``stack``."""
    return "stack" if band is None else f"{mode}-{_UNSAFE.sub('_', band)}"


def _to_bytes(hdul: fits.HDUList) -> bytes:
    buffer = io.BytesIO()
    hdul.writeto(buffer, output_verify="exception")
    return buffer.getvalue()
