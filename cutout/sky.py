"""Sky geometry of a field: the requested box on the tangent plane at its centre.

A *field* is a POS (ICRS degrees) and a SIZE (width, height in degrees). Its sky
box is the footprint of a north-up gnomonic (TAN) image of that size centred on
POS: the points whose standard coordinates about POS satisfy ``|x| <= w/2`` and
``|y| <= h/2``, with ``x`` towards east and ``y`` towards north, both in degrees of
the projection plane. SIZE is therefore an angular size on the sky (as cutout
services such as astrocut use it), not a coordinate width in RA, so the box keeps
its shape near the poles and across RA 0/360, where all of this geometry is done
on the tangent plane and never in raw RA.

The box's edges are great circles (straight lines under any gnomonic projection),
and so are the edges of a TAN image footprint, which makes every test below a
planar polygon test once both are projected onto the field's tangent plane.
"""

from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass

import astropy.units as u
import numpy as np
from astropy.coordinates import ICRS, SkyCoord

from cutout.errors import FieldError

#: Fields and footprints must stay well inside one hemisphere of their tangent plane.
MAX_FIELD_DEG = 30.0


class Intersect(enum.Enum):
    """SIAP 1.0 INTERSECT: how a candidate image must relate to the field."""

    #: the image overlaps the field (the SIAP default)
    OVERLAPS = "OVERLAPS"
    #: the image covers the whole field
    COVERS = "COVERS"
    #: the field encloses the whole image
    ENCLOSED = "ENCLOSED"
    #: the image contains the centre of the field
    CENTER = "CENTER"


@dataclass(frozen=True)
class Field:
    """A requested box on the sky.

    Parameters
    ----------
    ra, dec : float
        Centre (POS), ICRS degrees.
    width, height : float
        SIZE along east and north on the tangent plane at the centre, degrees; both 0 for a
        point (SIAP 1.0 SIZE=0, see `is_point`).
    """

    ra: float
    dec: float
    width: float
    height: float

    def __post_init__(self) -> None:
        values = (self.ra, self.dec, self.width, self.height)
        if not all(map(math.isfinite, values)):
            raise FieldError(f"field values must be finite, got {values}")
        if not 0.0 <= self.ra < 360.0:
            raise FieldError(f"RA must be in [0, 360), got {self.ra}")
        if not -90.0 <= self.dec <= 90.0:
            raise FieldError(f"Dec must be in [-90, 90], got {self.dec}")
        if self.width == 0.0 and self.height == 0.0:
            return  # a point (SIAP 1.0 SIZE=0): the images that contain it
        for name, value in (("width", self.width), ("height", self.height)):
            if not 0.0 < value <= MAX_FIELD_DEG:
                raise FieldError(f"{name} must be in (0, {MAX_FIELD_DEG}] deg, got {value}")

    @property
    def is_point(self) -> bool:
        """Whether the field is a point (SIAP 1.0 SIZE=0): it selects the images that contain it, whole."""
        return self.width == 0.0 and self.height == 0.0

    @classmethod
    def from_sky(cls, position: SkyCoord, size: u.Quantity) -> Field:
        """Build a field from a sky position and one or two angular sizes.

        Parameters
        ----------
        position : `~astropy.coordinates.SkyCoord`
            Centre of the field, in any frame (converted to ICRS).
        size : `~astropy.units.Quantity`
            One angle (a square field) or two angles (width, height).
        """
        icrs = position.transform_to(ICRS())
        sizes = np.atleast_1d(u.Quantity(size).to_value(u.deg))
        if sizes.shape not in ((1,), (2,)):
            raise FieldError(f"size needs one or two angles, got {sizes.size}")
        width, height = (sizes[0], sizes[0]) if sizes.size == 1 else sizes
        ra = float(icrs.ra.wrap_at(360 * u.deg).deg) % 360.0
        return cls(ra, float(icrs.dec.deg), float(width), float(height))

    @property
    def radius(self) -> float:
        """Angular distance from the centre to a corner of the box, degrees."""
        half = np.radians([self.width / 2, self.height / 2])
        return float(np.degrees(np.arctan(np.hypot(*half))))

    def outline(self, per_edge: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """Points along the box boundary, as ICRS (ra, dec) arrays in degrees.

        Each edge is sampled at ``per_edge`` points (corners included once), so that
        the outline stays faithful after a distorted (e.g. SIP) sky-to-pixel mapping.
        """
        return _outline(self, per_edge)


@functools.lru_cache(maxsize=1024)
def _outline(field: Field, per_edge: int) -> tuple[np.ndarray, np.ndarray]:
    """A field's outline, kept: a query describes many images with the same field (read-only arrays)."""
    x, y = box_outline(field.width / 2, field.height / 2, per_edge)
    ra, dec = from_plane(field.ra, field.dec, x, y)
    ra.flags.writeable = dec.flags.writeable = False
    return ra, dec


def box_outline(half_w: float, half_h: float, per_edge: int) -> tuple[np.ndarray, np.ndarray]:
    """Points around the rectangle ``[-half_w, half_w] x [-half_h, half_h]``, anticlockwise."""
    t = np.linspace(-1.0, 1.0, per_edge + 1)[:-1]
    x = np.concatenate([t * half_w, np.full_like(t, half_w), -t * half_w, np.full_like(t, -half_w)])
    y = np.concatenate([np.full_like(t, -half_h), t * half_h, np.full_like(t, half_h), -t * half_h])
    return x, y


def to_plane(ra0: float, dec0: float, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, ...]:
    """Gnomonic standard coordinates of (ra, dec) about (ra0, dec0).

    Returns
    -------
    x, y : ndarray
        Degrees on the projection plane, x east and y north.
    cosc : ndarray
        Cosine of the angular distance from the centre; points with ``cosc <= 0``
        lie on the far hemisphere and have no projection.
    """
    a0, d0 = np.radians(ra0), np.radians(dec0)
    a, d = np.radians(ra), np.radians(dec)
    da = a - a0
    cos_d = np.cos(d)
    cosc = np.sin(d0) * np.sin(d) + np.cos(d0) * cos_d * np.cos(da)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.degrees(cos_d * np.sin(da) / cosc)
        y = np.degrees((np.cos(d0) * np.sin(d) - np.sin(d0) * cos_d * np.cos(da)) / cosc)
    return x, y, cosc


def from_plane(ra0: float, dec0: float, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`to_plane`: (ra, dec) in degrees, ra in [0, 360)."""
    a0, d0 = np.radians(ra0), np.radians(dec0)
    xr, yr = np.radians(x), np.radians(y)
    rho = np.hypot(xr, yr)
    c = np.arctan(rho)
    sin_c, cos_c = np.sin(c), np.cos(c)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(rho > 0, yr * sin_c / rho, 0.0)
    dec = np.arcsin(np.clip(cos_c * np.sin(d0) + ratio * np.cos(d0), -1.0, 1.0))
    ra = a0 + np.arctan2(xr * sin_c, rho * np.cos(d0) * cos_c - yr * np.sin(d0) * sin_c)
    return np.degrees(ra) % 360.0, np.degrees(dec)


def points_in_polygons(px: np.ndarray, py: np.ndarray, qx: np.ndarray, qy: np.ndarray) -> np.ndarray:
    """Whether Q points lie inside (or on) K convex closed polygons.

    Parameters
    ----------
    px, py : ndarray, shape (K, M + 1)
        Convex polygon vertices in order (either orientation), the first repeated last.
    qx, qy : ndarray, shape (Q,)

    Returns
    -------
    ndarray of bool, shape (K, Q)
    """
    ex, ey = np.diff(px, axis=1)[:, :, None], np.diff(py, axis=1)[:, :, None]
    cross = ex * (qy - py[:, :-1, None]) - ey * (qx - px[:, :-1, None])
    orientation = np.sign(np.sum(px[:, :-1] * py[:, 1:] - px[:, 1:] * py[:, :-1], axis=1))[:, None, None]
    return np.all(cross * orientation >= 0, axis=1)


def polygons_meet_box(px: np.ndarray, py: np.ndarray, half_w: float, half_h: float) -> np.ndarray:
    """Whether K convex closed polygons (K, M + 1) intersect the box, by separating axes.

    Two convex shapes are disjoint exactly when some edge normal of either one
    separates their projections; the box contributes the x and y axes.
    """
    nx, ny = -np.diff(py, axis=1), np.diff(px, axis=1)  # edge normals, (K, M)
    proj = nx[:, :, None] * px[:, None, :-1] + ny[:, :, None] * py[:, None, :-1]  # (K, M, M)
    support = np.abs(nx) * half_w + np.abs(ny) * half_h
    by_edges = np.any((proj.min(axis=2) > support) | (proj.max(axis=2) < -support), axis=1)
    by_box = ((px.min(axis=1) > half_w) | (px.max(axis=1) < -half_w)
              | (py.min(axis=1) > half_h) | (py.max(axis=1) < -half_h))
    return ~(by_edges | by_box)


def match_footprints(field: Field, vectors: np.ndarray, mode: Intersect) -> np.ndarray:
    """Which footprints satisfy ``mode`` for ``field``.

    Footprints are treated as convex polygons, which image footprints are (up to
    distortion far below a pixel); the tests check this against brute force.

    Parameters
    ----------
    field : Field
    vectors : ndarray, shape (K, M, 3)
        Footprint polygons of K images as unit vectors (see `unit_vectors`), M
        vertices each, in order.
    mode : Intersect

    Returns
    -------
    ndarray of bool, shape (K,)
    """
    if len(vectors) == 0:
        return np.zeros(0, dtype=bool)
    closed = np.concatenate([vectors, vectors[:, :1]], axis=1)
    centre, east, north = tangent_basis(field.ra, field.dec)
    cosc = closed @ centre
    near = np.all(cosc > 0, axis=1)
    cosc = np.where(near[:, None], cosc, 1.0)
    px, py = np.degrees((closed @ east) / cosc), np.degrees((closed @ north) / cosc)
    hw, hh = field.width / 2, field.height / 2
    if mode is Intersect.CENTER:
        hit = points_in_polygons(px, py, np.zeros(1), np.zeros(1))[:, 0]
    elif mode is Intersect.COVERS:
        hit = np.all(points_in_polygons(px, py, np.array([-hw, hw, hw, -hw]), np.array([-hh, -hh, hh, hh])), axis=1)
    elif mode is Intersect.ENCLOSED:
        hit = np.all((np.abs(px) <= hw) & (np.abs(py) <= hh), axis=1)
    else:
        hit = polygons_meet_box(px, py, hw, hh)
    return hit & near


def tangent_basis(ra: float, dec: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors towards (ra, dec), local east and local north.

    For a unit vector ``p``, ``(p @ east) / (p @ centre)`` and ``(p @ north) / (p @ centre)``
    are the gnomonic standard coordinates of :func:`to_plane`, in radians.
    """
    a, d = np.radians(ra), np.radians(dec)
    centre = np.array([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)])
    east = np.array([-np.sin(a), np.cos(a), 0.0])
    north = np.array([-np.sin(d) * np.cos(a), -np.sin(d) * np.sin(a), np.cos(d)])
    return centre, east, north


def footprint_circle(footprint: np.ndarray) -> tuple[tuple[float, float], float]:
    """A circle (centre ra/dec, radius in degrees) enclosing a footprint polygon (M, 2)."""
    centres, radii = bounding_circles(unit_vectors(footprint[:, 0], footprint[:, 1])[None])
    x, y, z = centres[0]
    ra = float(np.degrees(np.arctan2(y, x)) % 360.0)
    return (ra, float(np.degrees(np.arcsin(np.clip(z, -1, 1))))), float(np.degrees(radii[0]))


def bounding_circles(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Enclosing circles of K polygons given as unit vectors (K, M, 3).

    Returns the centres as unit vectors (K, 3) (the normalised vertex mean) and the
    radii in radians (K,), the largest angle from the centre to a vertex.
    """
    mean = vectors.mean(axis=1)
    centres = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    radii = np.arccos(np.clip(np.einsum("kmi,ki->km", vectors, centres), -1, 1)).max(axis=1)
    return centres, radii


def unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Cartesian unit vectors, shape (..., 3), of ICRS positions in degrees."""
    a, d = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)], axis=-1)
