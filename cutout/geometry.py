"""Where a field falls on an image: pixel rectangles and exact overlap tests through the image's WCS.

`Geometry` wraps an image's celestial WCS and shape. The cutout engine asks it for the
pixel rectangle of a field (`Geometry.box`); the index asks it the same of a stored
record, without opening the file, to describe a cutout in a SIAP row, and to decide
exactly whether a *wide* image (all-sky, hemisphere, or with curved edges) meets a field.

Any celestial frame astropy knows (ICRS, FK5, FK4, galactic, ecliptic, supergalactic)
is handled by converting ICRS positions to the image's own frame with astropy.
"""

from __future__ import annotations

import functools
import math
import threading
import warnings

import numpy as np
from astropy.coordinates import ICRS, BarycentricMeanEcliptic, SkyCoord, Supergalactic
from astropy.time import Time
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales, wcs_to_celestial_frame

from cutout.errors import NoOverlapError
from cutout.sky import Field, Intersect, tangent_basis, to_plane, unit_vectors

#: Points sampled along each edge of a field's box before mapping it to pixels.
OUTLINE_PER_EDGE = 8


class Geometry:
    """An image's celestial WCS and shape, for positions, pixel rectangles and overlap tests.

    Thread-safe: a lock serialises the WCS transformations (wcslib keeps state per WCS).
    """

    def __init__(self, wcs: WCS, shape: tuple[int, int], name: str = "") -> None:
        self.wcs = wcs
        self.shape = shape
        self.name = name
        self.frame = celestial_frame(wcs)
        self._icrs = isinstance(self.frame, ICRS)
        self._lng, self._lat = wcs.wcs.lng, wcs.wcs.lat
        self._lock = threading.Lock()
        #: no SIP or lookup table: wcslib's own transformations are the whole WCS (TPV, TPD included)
        self._plain = not wcs.has_distortion
        self._straight: bool | None = None  # see `straight`
        self._corners: np.ndarray | None = None
        self._centre: tuple[float, float] | None = None
        self._crpix: tuple[float, float] | None = None
        self._scales: np.ndarray | None = None
        self._cd: np.ndarray | None = None

    # -- positions ------------------------------------------------------------------------

    def to_pixels(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """0-based pixel coordinates of ICRS positions (degrees); NaN where the projection has none."""
        ra, dec = np.atleast_1d(np.asarray(ra, float)), np.atleast_1d(np.asarray(dec, float))
        if not self._icrs:
            native = SkyCoord(ra, dec, unit="deg", frame="icrs").transform_to(self.frame).spherical
            ra, dec = native.lon.deg, native.lat.deg
        world = np.empty((len(ra), 2))
        world[:, self._lng], world[:, self._lat] = ra, dec
        with self._lock, warnings.catch_warnings(), np.errstate(invalid="ignore"):
            warnings.simplefilter("ignore", AstropyWarning)
            if self._plain:
                try:
                    out = self.wcs.wcs.s2p(world, 0)
                except Exception:  # every point invalid: wcslib raises rather than flagging them
                    return np.full(len(ra), np.nan), np.full(len(ra), np.nan)
                pix = out["pixcrd"]
                pix[out["stat"] != 0] = np.nan
                return pix[:, 0], pix[:, 1]
            try:
                pix = self.wcs.all_world2pix(world, 0, quiet=True)
            except Exception:  # a failed inversion (e.g. off a projection's domain): point by point
                pix = np.array([_one_world2pix(self.wcs, w) for w in world]).reshape(-1, 2)
        return pix[:, 0], pix[:, 1]

    def to_sky(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ICRS (ra, dec) in degrees of 0-based pixel coordinates; NaN off the sky."""
        pixels = np.column_stack([np.ravel(x), np.ravel(y)]).astype(float)
        with self._lock, warnings.catch_warnings(), np.errstate(invalid="ignore"):
            warnings.simplefilter("ignore", AstropyWarning)
            if self._plain:
                try:
                    out = self.wcs.wcs.p2s(pixels, 0)
                    world = out["world"]
                    world[out["stat"] != 0] = np.nan
                except Exception:
                    world = np.full(pixels.shape, np.nan)
            else:
                world = self.wcs.all_pix2world(pixels, 0)
        lon, lat = world[:, self._lng], world[:, self._lat]
        return native_to_icrs(self.frame, lon, lat)

    def scales(self) -> np.ndarray:
        """Pixel scale along each axis, degrees (at the reference point)."""
        if self._scales is None:
            self._scales = proj_plane_pixel_scales(self.wcs)
        return self._scales

    def cd(self) -> np.ndarray:
        """The linear transformation matrix (CD: PC times CDELT), degrees per pixel, (2, 2)."""
        if self._cd is None:
            self._cd = np.array(self.wcs.pixel_scale_matrix)
        return self._cd

    # -- fields ---------------------------------------------------------------------------

    def box(self, field: Field) -> tuple[int, int, int, int]:
        """The half-open pixel rectangle ``(y0, y1, x0, x1)`` of ``field`` clipped to the image.

        It is the smallest set of whole pixels containing the part of the field's sky box
        that lies on the image. A point field (SIZE=0) stands for the whole image that
        contains it.

        Raises
        ------
        NoOverlapError
            When the field and the image do not overlap.
        """
        ny, nx = self.shape
        lo_x, hi_x, lo_y, hi_y = -0.5, nx - 0.5, -0.5, ny - 0.5
        if field.is_point:
            x, y = self.to_pixels(np.array([field.ra]), np.array([field.dec]))
            if not (np.isfinite(x[0]) and np.isfinite(y[0]) and lo_x <= x[0] <= hi_x and lo_y <= y[0] <= hi_y):
                raise NoOverlapError(f"position ({field.ra}, {field.dec}) is not on image {self.name}")
            return 0, ny, 0, nx
        if self.straight and self._inside(field):
            return 0, ny, 0, nx  # the whole image lies in the field
        ra, dec = field.outline(OUTLINE_PER_EDGE)
        x, y = self.to_pixels(ra, dec)
        finite = np.isfinite(x) & np.isfinite(y)
        if not finite.all():
            # part of the field is off the projection (the edge of a hemisphere, an all-sky map's rim):
            # the pixels it covers are those of its points that map, and of the image's rim between them
            if not finite.any():
                raise NoOverlapError(f"field at ({field.ra}, {field.dec}) is not on image {self.name}")
            x, y = x[finite], y[finite]
            inside = (x >= lo_x) & (x <= hi_x) & (y >= lo_y) & (y <= hi_y)
            if not inside.any():
                raise NoOverlapError(f"field at ({field.ra}, {field.dec}) does not overlap {self.name}")
            x, y = list(x[inside]), list(y[inside])
        elif x.min() < lo_x or x.max() > hi_x or y.min() < lo_y or y.max() > hi_y:
            bounds = clipped_bounds(x, y, lo_x, hi_x, lo_y, hi_y)
            if bounds is None:
                raise NoOverlapError(f"field at ({field.ra}, {field.dec}) does not overlap {self.name}")
            x, y = bounds[:2], bounds[2:]
        x0, x1 = max(math.floor(min(x) + 0.5), 0), min(math.floor(max(x) + 0.5), nx - 1)
        y0, y1 = max(math.floor(min(y) + 0.5), 0), min(math.floor(max(y) + 0.5), ny - 1)
        return y0, y1 + 1, x0, x1 + 1

    @property
    def straight(self) -> bool:
        """Whether the WCS is a plain TAN projection (no distortion of any kind): great circles, such as a
        field's edges, are then straight lines in pixels, exactly."""
        if self._straight is None:
            straight = self._plain and all(c[4:] == "-TAN" for c in self.wcs.wcs.ctype)
            if straight:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", AstropyWarning)
                    written = self.wcs.wcs.to_header(True)
                straight = not any(key in written for key in ("PV1_", "PV2_", "DQ1", "DQ2", "DP1", "DP2", "CQDIS",
                                                               "CPDIS"))
            self._straight = straight
        return self._straight

    def _inside(self, field: Field) -> bool:
        """Whether the image's four corners are in the field: then all of it is, its edges being straight."""
        if self._corners is None:
            ny, nx = self.shape
            ra, dec = self.to_sky(np.array([-0.5, nx - 0.5, nx - 0.5, -0.5]),
                                  np.array([-0.5, -0.5, ny - 0.5, ny - 0.5]))
            self._corners = unit_vectors(ra, dec)  # (4, 3); NaN off the sky, which fails every test below
        hw, hh = _half_rad(field.width), _half_rad(field.height)
        for cosc, east, north in (self._corners @ _basis(field)).tolist():  # NaN (off the sky) fails each test
            if not (cosc > 0 and abs(east) <= hw * cosc and abs(north) <= hh * cosc):
                return False
        return True

    @property
    def crpix(self) -> tuple[float, float]:
        """CRPIX1, CRPIX2 (1-based), kept."""
        if self._crpix is None:
            self._crpix = (float(self.wcs.wcs.crpix[0]), float(self.wcs.wcs.crpix[1]))
        return self._crpix

    def centre(self) -> tuple[float, float]:
        """ICRS (ra, dec) of the image's central pixel (kept)."""
        if self._centre is None:
            ny, nx = self.shape
            ra, dec = self.to_sky(np.array([(nx - 1) / 2]), np.array([(ny - 1) / 2]))
            self._centre = (float(ra[0]), float(dec[0]))
        return self._centre

    def matches(self, field: Field, intersect: Intersect, rim: np.ndarray | None = None) -> bool:
        """Whether the image meets ``field`` under ``intersect``, decided through the WCS.

        ``rim`` is the image's footprint polygon (ICRS, (M, 2)), used for ENCLOSED.
        """
        ny, nx = self.shape
        lo_x, hi_x, lo_y, hi_y = -0.5, nx - 0.5, -0.5, ny - 0.5
        if intersect is Intersect.ENCLOSED:
            if rim is None or not np.all(np.isfinite(rim)):
                return False
            px, py, cosc = to_plane(field.ra, field.dec, rim[:, 0], rim[:, 1])
            return bool(np.all(cosc > 0) and np.all(np.abs(px) <= field.width / 2)
                        and np.all(np.abs(py) <= field.height / 2))
        if intersect is Intersect.CENTER or field.is_point:
            x, y = self.to_pixels(np.array([field.ra]), np.array([field.dec]))
            return bool(np.isfinite(x[0]) and np.isfinite(y[0]) and lo_x <= x[0] <= hi_x and lo_y <= y[0] <= hi_y)
        ra, dec = field.outline(OUTLINE_PER_EDGE)
        x, y = self.to_pixels(ra, dec)
        finite = np.isfinite(x) & np.isfinite(y)
        inside = finite & (x >= lo_x) & (x <= hi_x) & (y >= lo_y) & (y <= hi_y)
        if intersect is Intersect.COVERS:
            return bool(inside.all())
        if inside.any():
            return True
        if finite.all():
            return bool(len(clip_polygon(x, y, lo_x, hi_x, lo_y, hi_y)[0]))
        return False


@functools.lru_cache(maxsize=1024)
def _half_rad(size_deg: float) -> float:
    """Half a field's size in radians: the bound of its gnomonic coordinates (|x| <= size/2 in degrees)."""
    return math.radians(size_deg / 2)


@functools.lru_cache(maxsize=1024)
def _basis(field: Field) -> np.ndarray:
    """The tangent-plane basis of a field as the columns of a (3, 3) matrix (kept: one field, many images)."""
    return np.column_stack(tangent_basis(field.ra, field.dec))


def celestial_frame(wcs: WCS) -> object:
    """The astropy frame of a celestial WCS.

    astropy's `~astropy.wcs.utils.wcs_to_celestial_frame` knows equatorial frames (ICRS,
    FK5, FK4 with their equinoxes, from RADESYS, EQUINOX or EPOCH) and galactic ones, but
    answers ICRS for ecliptic (ELON/ELAT) axes and nothing for supergalactic ones. Those are
    mapped here: ELON/ELAT to the barycentric mean ecliptic of EQUINOX (J2000 when absent),
    SLON/SLAT to supergalactic.

    Raises
    ------
    ValueError
        For axes that are not on the sky (helioprojective, planetary...).
    """
    lng = wcs.wcs.ctype[wcs.wcs.lng][:4].rstrip("-")
    if lng == "ELON":
        equinox = wcs.wcs.equinox
        return BarycentricMeanEcliptic(equinox=Time(equinox if np.isfinite(equinox) else 2000.0, format="jyear"))
    if lng == "SLON":
        return Supergalactic()
    if lng not in ("RA", "GLON"):
        raise ValueError(f"{wcs.wcs.ctype[wcs.wcs.lng].strip()} axes are not a celestial frame of the sky")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        return wcs_to_celestial_frame(wcs)


def _one_world2pix(wcs: WCS, world: np.ndarray) -> tuple[float, float]:
    try:
        return tuple(wcs.all_world2pix(world[None], 0, quiet=True)[0])
    except Exception:
        return (math.nan, math.nan)


def native_to_icrs(frame: object, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Convert coordinates in an astropy celestial frame to ICRS degrees (NaN stays NaN)."""
    lon, lat = np.asarray(lon, float), np.asarray(lat, float)
    if isinstance(frame, ICRS):
        return lon % 360.0, lat
    finite = np.isfinite(lon) & np.isfinite(lat)
    ra, dec = np.full(lon.shape, np.nan), np.full(lat.shape, np.nan)
    if finite.any():
        icrs = SkyCoord(lon[finite], lat[finite], unit="deg", frame=frame).icrs
        ra[finite], dec[finite] = icrs.ra.deg, icrs.dec.deg
    return ra, dec


def clipped_bounds(x: np.ndarray, y: np.ndarray, lo_x: float, hi_x: float, lo_y: float,
                   hi_y: float) -> tuple[float, float, float, float] | None:
    """The bounding box (x_min, x_max, y_min, y_max) of a closed polygon clipped to a rectangle, or None."""
    cx, cy = clip_polygon(x, y, lo_x, hi_x, lo_y, hi_y)
    if not cx:
        return None
    return min(cx), max(cx), min(cy), max(cy)


def clip_polygon(x: np.ndarray, y: np.ndarray, lo_x: float, hi_x: float,
                 lo_y: float, hi_y: float) -> tuple[list[float], list[float]]:
    """Sutherland-Hodgman clipping of a polygon to an axis-aligned rectangle."""
    points = list(zip(np.asarray(x).tolist(), np.asarray(y).tolist(), strict=True))
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
