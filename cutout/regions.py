"""Sky regions of the VO protocols: DALI circles, polygons and ranges, in ICRS degrees.

SIA 2.0 ``POS`` and SODA ``POS``, ``CIRCLE`` and ``POLYGON`` give regions in three shapes
(DALI 1.1): ``CIRCLE ra dec radius``, ``POLYGON ra1 dec1 ra2 dec2 ...`` and ``RANGE ra1 ra2
dec1 dec2``. Two things are asked of a region:

* `Circle.meets` (and the others): which image footprints it intersects. Footprints are
  convex spherical polygons (`cutout.scan.image_footprint`); circles are tested exactly on
  the sphere, polygons exactly on the gnomonic plane at their centre (where great circles
  are straight lines), ranges on the longitude/latitude plane against footprints whose
  edges are sampled finely.
* ``.field()``: the smallest north-up box on the tangent plane that holds the region, the
  `Field` whose cutout a SODA request makes.

A polygon's inside is the smaller of the two parts of the sphere it divides (SIA 2.0), so
the order of its vertices does not matter; `Polygon.dali_vertices` gives them in the DALI
winding, counter-clockwise as seen from the centre of the sphere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cutout.errors import CutoutError
from cutout.sky import MAX_FIELD_DEG, Field, from_plane, to_plane, unit_vectors

#: Points per edge where an image footprint's great-circle edges are sampled for a RANGE test.
EDGE_SAMPLES = 16
#: Largest step in degrees along a RANGE's edges of constant latitude, when it is drawn as a polygon.
RANGE_STEP_DEG = 0.5


class RegionError(CutoutError):
    """A region that is malformed or cannot be used (too large, degenerate)."""


def parse_shape(text: str) -> Circle | Polygon | Range:
    """A DALI shape: ``CIRCLE lon lat r``, ``POLYGON lon1 lat1 ...`` or ``RANGE lon1 lon2 lat1 lat2``.

    The keyword is case-insensitive; numbers are separated by white space.

    Raises
    ------
    RegionError
        Saying what is wrong.
    """
    words = text.split()
    if not words:
        raise RegionError("empty; expected CIRCLE, RANGE or POLYGON and its numbers")
    shape, numbers = words[0].upper(), words[1:]
    if shape == "CIRCLE":
        return Circle.parse(" ".join(numbers))
    if shape == "POLYGON":
        return Polygon.parse(" ".join(numbers))
    if shape == "RANGE":
        return Range.parse(" ".join(numbers))
    raise RegionError(f"unknown shape {words[0]!r}; expected CIRCLE, RANGE or POLYGON")


def _numbers(text: str, what: str, allow_infinite: bool = False) -> list[float]:
    values = []
    for word in text.split():
        try:
            value = float(word)
        except ValueError:
            raise RegionError(f"{what}: not a number: {word!r}") from None
        if math.isnan(value) or (math.isinf(value) and not allow_infinite):
            raise RegionError(f"{what}: not a finite number: {word!r}")
        values.append(value)
    return values


def _check_position(ra: float, dec: float, what: str) -> None:
    if not 0.0 <= ra <= 360.0:
        raise RegionError(f"{what}: longitude must be in [0, 360], got {ra:g}")
    if not -90.0 <= dec <= 90.0:
        raise RegionError(f"{what}: latitude must be in [-90, 90], got {dec:g}")


def _box(ra: float, dec: float, points_ra: np.ndarray, points_dec: np.ndarray, what: str) -> Field:
    """The smallest north-up box about a centre near (ra, dec) that holds these points (two passes re-centre it)."""
    for _ in range(2):
        x, y, cosc = to_plane(ra, dec, points_ra, points_dec)
        if np.any(cosc <= 1e-6):
            raise RegionError(f"{what} is too large for a cutout (more than a hemisphere)")
        new_ra, new_dec = from_plane(ra, dec, np.array([(x.min() + x.max()) / 2]), np.array([(y.min() + y.max()) / 2]))
        ra, dec = float(new_ra[0]) % 360.0, float(new_dec[0])
    x, y, _ = to_plane(ra, dec, points_ra, points_dec)
    width, height = 2 * float(np.abs(x).max()), 2 * float(np.abs(y).max())
    if max(width, height) > MAX_FIELD_DEG:
        raise RegionError(f"{what} spans more than {MAX_FIELD_DEG:g} deg on the sky")
    # a point or a line still makes a box a pixel can be cut from
    return Field(ra, dec, max(width, 1e-9), max(height, 1e-9))


@dataclass(frozen=True)
class Circle:
    """A circle on the sky: centre (ICRS degrees) and radius (degrees, 0 < radius < 180)."""

    ra: float
    dec: float
    radius: float

    def __post_init__(self) -> None:
        _check_position(self.ra, self.dec, "CIRCLE")
        if not 0.0 < self.radius < 180.0:
            raise RegionError(f"CIRCLE: the radius must be in (0, 180) deg, got {self.radius:g}")

    @classmethod
    def parse(cls, text: str) -> Circle:
        """``lon lat radius`` in degrees (the DALI circle)."""
        values = _numbers(text, "CIRCLE")
        if len(values) != 3:
            raise RegionError(f"CIRCLE: expected 3 numbers (lon lat radius), got {len(values)}")
        return cls(*values)

    def cap(self) -> tuple[float, float, float]:
        """A circle (ra, dec, radius) holding the region."""
        return self.ra % 360.0, self.dec, self.radius

    def field(self) -> Field:
        """The box on the tangent plane at the centre that holds the circle."""
        if self.radius >= 89.0:
            raise RegionError("CIRCLE is too large for a cutout")
        half = math.degrees(math.tan(math.radians(self.radius)))
        if 2 * half > MAX_FIELD_DEG:
            raise RegionError(f"CIRCLE spans more than {MAX_FIELD_DEG:g} deg on the sky")
        return Field(self.ra % 360.0, self.dec, 2 * half, 2 * half)

    def samples(self, per_ring: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """Points across the circle (ICRS degrees): its centre and rings out to its edge."""
        angles = np.linspace(0.0, 2 * np.pi, per_ring, endpoint=False)
        rho = np.radians(self.radius) * np.array([1 / 3, 2 / 3, 1.0])[:, None]
        x, y = np.degrees(np.tan(rho) * np.sin(angles)), np.degrees(np.tan(rho) * np.cos(angles))
        return from_plane(self.ra % 360.0, self.dec, np.append(x.ravel(), 0.0), np.append(y.ravel(), 0.0))

    def meets(self, footprints: np.ndarray) -> np.ndarray:
        """Which of K convex footprints (K, M, 2) the circle intersects: centre inside, or an edge within the radius."""
        if len(footprints) == 0:
            return np.zeros(0, dtype=bool)
        v = unit_vectors(footprints[..., 0], footprints[..., 1])  # (K, M, 3)
        w = np.roll(v, -1, axis=1)
        c = unit_vectors(self.ra, self.dec)
        normals = np.cross(v, w)  # (K, M, 3), zero for repeated vertices
        lengths = np.linalg.norm(normals, axis=-1)
        real = lengths > 1e-15
        n = np.where(real[..., None], normals / np.where(real, lengths, 1.0)[..., None], 0.0)
        side = n @ c  # (K, M)
        inside = np.all(~real | (side * _orientation(v, n, real) >= 0), axis=1)
        # the closest point of each edge's great circle, if it lies on the edge; else the nearer vertex
        foot = c - side[..., None] * n
        on_arc = real & (np.einsum("kmi,kmi->km", np.cross(v, foot), n) >= 0) & \
            (np.einsum("kmi,kmi->km", np.cross(foot, w), n) >= 0)
        to_line = np.arcsin(np.clip(np.abs(side), 0.0, 1.0))
        to_vertex = np.arccos(np.clip(v @ c, -1.0, 1.0))
        to_edge = np.where(on_arc, to_line, np.minimum(to_vertex, np.roll(to_vertex, -1, axis=1)))
        return inside | (to_edge.min(axis=1) <= math.radians(self.radius))


@dataclass(frozen=True)
class Polygon:
    """A spherical polygon: at least three vertices (ICRS degrees), great-circle edges, implicitly closed.

    Its inside is the smaller part of the sphere; it must fit in a hemisphere.
    """

    vertices: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if len(self.vertices) < 3:
            raise RegionError(f"POLYGON: needs at least 3 vertices, got {len(self.vertices)}")
        for ra, dec in self.vertices:
            _check_position(ra, dec, "POLYGON")
        ra, dec, radius = self.cap()
        if radius >= 89.0:
            raise RegionError("POLYGON: must fit in a hemisphere")
        x, y, _ = to_plane(ra, dec, *self._arrays())
        if abs(_signed_area(x, y)) < 1e-14:
            raise RegionError("POLYGON: its vertices enclose no area")

    @classmethod
    def parse(cls, text: str) -> Polygon:
        """``lon1 lat1 lon2 lat2 ...`` in degrees (the DALI polygon)."""
        values = _numbers(text, "POLYGON")
        if len(values) % 2:
            raise RegionError(f"POLYGON: expected pairs of numbers (lon lat), got {len(values)} numbers")
        points = list(zip(values[0::2], values[1::2], strict=True))
        if len(points) > 3 and points[0] == points[-1]:  # closed explicitly: the DALI form leaves it implicit
            points.pop()
        return cls(tuple(points))

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        points = np.asarray(self.vertices, dtype=float)
        return points[:, 0] % 360.0, points[:, 1]

    def cap(self) -> tuple[float, float, float]:
        """A circle (ra, dec, radius) holding the polygon: the normalised mean of its vertices, out to the farthest."""
        vectors = unit_vectors(*self._arrays())
        centre = vectors.mean(axis=0)
        norm = np.linalg.norm(centre)
        if norm < 1e-9:
            return 0.0, 0.0, 180.0
        centre /= norm
        radius = float(np.degrees(np.arccos(np.clip(vectors @ centre, -1, 1)).max()))
        ra = float(np.degrees(np.arctan2(centre[1], centre[0])) % 360.0)
        return ra, float(np.degrees(np.arcsin(np.clip(centre[2], -1, 1)))), radius

    def dali_vertices(self) -> list[tuple[float, float]]:
        """The vertices counter-clockwise as seen from the centre of the sphere (DALI 1.1)."""
        ra, dec, _ = self.cap()
        x, y, _ = to_plane(ra, dec, *self._arrays())
        # on the tangent plane x points east and y north: seen from inside the sphere east is on the left,
        # so counter-clockwise there is clockwise (negative area) in (x, y)
        return list(self.vertices) if _signed_area(x, y) < 0 else list(reversed(self.vertices))

    def samples(self, per_edge: int = 8, grid: int = 12) -> tuple[np.ndarray, np.ndarray]:
        """Points across the polygon (ICRS degrees): along its edges, and a grid of its inside."""
        ra, dec, _ = self.cap()
        px, py, _ = to_plane(ra, dec, *self._arrays())
        t = np.linspace(0.0, 1.0, per_edge, endpoint=False)[:, None]
        ex, ey = (px + t * (np.roll(px, -1) - px)).ravel(), (py + t * (np.roll(py, -1) - py)).ravel()
        gx, gy = np.meshgrid(np.linspace(px.min(), px.max(), grid), np.linspace(py.min(), py.max(), grid))
        inside = _points_in_polygon(px, py, gx.ravel(), gy.ravel())
        return from_plane(ra, dec, np.concatenate([ex, gx.ravel()[inside]]), np.concatenate([ey, gy.ravel()[inside]]))

    def field(self) -> Field:
        """The box on the tangent plane at the polygon's centre that holds it (its edges are straight there)."""
        ra, dec, _ = self.cap()
        return _box(ra, dec, *self._arrays(), "POLYGON")

    def meets(self, footprints: np.ndarray) -> np.ndarray:
        """Which of K convex footprints (K, M, 2) the polygon intersects, on the gnomonic plane at its centre.

        A footprint reaching a hemisphere away from the centre cannot be projected there; it is taken
        to meet the polygon when its circle meets the polygon's (only all-sky images are so large).
        """
        if len(footprints) == 0:
            return np.zeros(0, dtype=bool)
        ra, dec, radius = self.cap()
        px, py, _ = to_plane(ra, dec, *self._arrays())
        qx, qy, cosc = to_plane(ra, dec, footprints[..., 0], footprints[..., 1])  # (K, M)
        projectable = np.all(cosc > 1e-6, axis=1)
        hits = np.zeros(len(footprints), dtype=bool)
        if np.any(projectable):
            hits[projectable] = _planar_meets(px, py, qx[projectable], qy[projectable])
        if np.any(~projectable):
            hits[~projectable] = Circle(ra, dec, min(radius + 1e-9, 179.0)).meets(footprints[~projectable])
        return hits


@dataclass(frozen=True)
class Range:
    """A longitude/latitude box (ICRS degrees); infinite bounds are clipped to the sphere.

    A longitude range whose first bound is greater than the second crosses longitude 0.
    """

    ra_min: float
    ra_max: float
    dec_min: float
    dec_max: float

    def __post_init__(self) -> None:
        for value, lo, hi, name in ((self.ra_min, 0.0, 360.0, "longitude"), (self.ra_max, 0.0, 360.0, "longitude"),
                                    (self.dec_min, -90.0, 90.0, "latitude"), (self.dec_max, -90.0, 90.0, "latitude")):
            if not lo <= value <= hi:
                raise RegionError(f"RANGE: {name} bounds must be in [{lo:g}, {hi:g}], got {value:g}")
        if self.dec_min > self.dec_max:
            raise RegionError(f"RANGE: the latitude range is empty ({self.dec_min:g} > {self.dec_max:g})")

    @classmethod
    def parse(cls, text: str) -> Range:
        """``lon1 lon2 lat1 lat2`` in degrees, -Inf and +Inf allowed (the DALI range)."""
        values = _numbers(text, "RANGE", allow_infinite=True)
        if len(values) != 4:
            raise RegionError(f"RANGE: expected 4 numbers (lon1 lon2 lat1 lat2), got {len(values)}")
        lon1, lon2, lat1, lat2 = values
        if math.isinf(lon1) or math.isinf(lon2):
            lon1, lon2 = (0.0 if lon1 == -math.inf else lon1), (360.0 if lon2 == math.inf else lon2)
        return cls(lon1, lon2, max(lat1, -90.0), min(lat2, 90.0))

    @property
    def span(self) -> float:
        """The longitude span in degrees."""
        return (self.ra_max - self.ra_min) % 360.0 or (360.0 if self.ra_max != self.ra_min else 0.0)

    def _outline(self) -> tuple[np.ndarray, np.ndarray]:
        steps = max(2, math.ceil(self.span / RANGE_STEP_DEG))
        lon = (self.ra_min + np.linspace(0.0, self.span, steps + 1)) % 360.0
        lat_steps = max(2, math.ceil((self.dec_max - self.dec_min) / RANGE_STEP_DEG))
        lat = np.linspace(self.dec_min, self.dec_max, lat_steps + 1)
        ra = np.concatenate([lon, np.full(lat_steps + 1, lon[-1]), lon[::-1], np.full(lat_steps + 1, lon[0])])
        dec = np.concatenate([np.full(steps + 1, self.dec_min), lat, np.full(steps + 1, self.dec_max), lat[::-1]])
        return ra, dec

    def cap(self) -> tuple[float, float, float]:
        """A circle (ra, dec, radius) holding the range."""
        if self.span >= 180.0 or self.dec_max >= 90.0 or self.dec_min <= -90.0:
            if self.dec_min > 0.0:
                return 0.0, 90.0, 90.0 - self.dec_min
            if self.dec_max < 0.0:
                return 0.0, -90.0, 90.0 + self.dec_max
            return 0.0, 0.0, 180.0
        ra = (self.ra_min + self.span / 2) % 360.0
        dec = (self.dec_min + self.dec_max) / 2
        vectors = unit_vectors(*self._outline())
        radius = float(np.degrees(np.arccos(np.clip(vectors @ unit_vectors(ra, dec), -1, 1)).max()))
        return ra, dec, radius

    def samples(self, grid: int = 24) -> tuple[np.ndarray, np.ndarray]:
        """Points across the range (ICRS degrees): its outline, and a longitude/latitude grid of its inside."""
        lon = (self.ra_min + np.linspace(0.0, self.span, grid)) % 360.0
        lat = np.linspace(self.dec_min, self.dec_max, grid)
        glon, glat = np.meshgrid(lon, lat)
        ra, dec = self._outline()
        return np.concatenate([ra, glon.ravel()]), np.concatenate([dec, glat.ravel()])

    def field(self) -> Field:
        """The box on the tangent plane at the range's centre that holds it."""
        if self.span >= 180.0 or self.dec_max >= 90.0 or self.dec_min <= -90.0:
            raise RegionError("RANGE is too large for a cutout")
        ra, dec, _ = self.cap()
        return _box(ra, dec, *self._outline(), "RANGE")

    def meets(self, footprints: np.ndarray) -> np.ndarray:
        """Which of K convex footprints (K, M, 2) meet the range, tested in longitude and latitude.

        The footprints' great-circle edges are sampled at `EDGE_SAMPLES` points each; a
        footprint around a pole reaches every longitude above (below) its lowest (highest) point.
        """
        if len(footprints) == 0:
            return np.zeros(0, dtype=bool)
        ra, dec = _sample_edges(footprints, EDGE_SAMPLES)  # (K, P)
        v = unit_vectors(footprints[..., 0], footprints[..., 1])
        hits = np.zeros(len(footprints), dtype=bool)
        for pole in (90.0, -90.0):
            around = _contains_point(v, unit_vectors(0.0, pole))
            if np.any(around):
                reach = dec[around].min(axis=1) if pole > 0 else dec[around].max(axis=1)
                hits[around] = (self.dec_max >= reach) if pole > 0 else (self.dec_min <= reach)
        rest = ~hits & ~(_contains_point(v, unit_vectors(0.0, 90.0)) | _contains_point(v, unit_vectors(0.0, -90.0)))
        if self.span >= 360.0:
            hits[rest] = (dec[rest].max(axis=1) >= self.dec_min) & (dec[rest].min(axis=1) <= self.dec_max)
            return hits
        centre = (self.ra_min + self.span / 2) % 360.0
        # longitudes about the range's centre, continuous along each outline (which goes round no pole), and the
        # outline taken again a turn east and west: the box may meet it on either side of longitude 180
        x = np.degrees(np.unwrap(np.radians(ra[rest] - centre), axis=1))
        x -= 360.0 * np.round(x.mean(axis=1, keepdims=True) / 360.0)
        hw = self.span / 2
        box_x, box_y = np.array([-hw, hw, hw, -hw]), np.array([self.dec_min, self.dec_min, self.dec_max, self.dec_max])
        hits[rest] = np.logical_or.reduce([_planar_meets(box_x, box_y, x + turn, dec[rest]) for turn in (-360, 0, 360)])
        return hits


def _signed_area(x: np.ndarray, y: np.ndarray) -> float:
    return float(0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _sample_edges(footprints: np.ndarray, per_edge: int) -> tuple[np.ndarray, np.ndarray]:
    """Points along the great-circle edges of K polygons (K, M, 2): (K, M * per_edge) longitudes and latitudes."""
    v = unit_vectors(footprints[..., 0], footprints[..., 1])
    w = np.roll(v, -1, axis=1)
    t = np.linspace(0.0, 1.0, per_edge, endpoint=False)[None, None, :, None]
    points = v[:, :, None, :] * (1 - t) + w[:, :, None, :] * t  # chords, pushed back onto the sphere
    points /= np.linalg.norm(points, axis=-1, keepdims=True)
    points = points.reshape(len(footprints), -1, 3)
    ra = np.degrees(np.arctan2(points[..., 1], points[..., 0])) % 360.0
    return ra, np.degrees(np.arcsin(np.clip(points[..., 2], -1, 1)))


def _orientation(v: np.ndarray, normals: np.ndarray, real: np.ndarray) -> np.ndarray:
    """+1 or -1 per polygon (K, 1): the side of its edges' great circles its own centre lies on."""
    centres = v.mean(axis=1)  # inside a convex polygon smaller than a hemisphere
    return np.sign(np.sum(np.where(real, np.einsum("kmi,ki->km", normals, centres), 0.0), axis=1, keepdims=True))


def _contains_point(v: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Whether K convex spherical polygons (unit vectors, (K, M, 3)) contain a point (unit vector)."""
    normals = np.cross(v, np.roll(v, -1, axis=1))
    real = np.linalg.norm(normals, axis=-1) > 1e-15
    return np.all(~real | (normals @ point * _orientation(v, normals, real) > 0), axis=1)


def _planar_meets(px: np.ndarray, py: np.ndarray, qx: np.ndarray, qy: np.ndarray) -> np.ndarray:
    """Whether a plane polygon P (N,) meets each of K polygons Q (K, M): a vertex of one in the other, or
    crossing edges. P may be concave; Q's are treated as general polygons too."""
    inside_p = _points_in_polygon(px, py, qx, qy)  # Q's vertices in P: (K, M)
    inside_q = _points_in_polygons(qx, qy, px, py)  # P's vertices in each Q: (K, N)
    ax, ay = px, py
    bx, by = np.roll(px, -1), np.roll(py, -1)
    cx, cy = qx[:, :, None], qy[:, :, None]
    dx, dy = np.roll(qx, -1, axis=1)[:, :, None], np.roll(qy, -1, axis=1)[:, :, None]
    d1 = _cross(cx - ax, cy - ay, bx - ax, by - ay)
    d2 = _cross(dx - ax, dy - ay, bx - ax, by - ay)
    d3 = _cross(ax - cx, ay - cy, dx - cx, dy - cy)
    d4 = _cross(bx - cx, by - cy, dx - cx, dy - cy)
    crossing = (d1 * d2 <= 0) & (d3 * d4 <= 0)  # touching counts as meeting
    return inside_p.any(axis=1) | inside_q.any(axis=1) | crossing.any(axis=(1, 2))


def _cross(ax: np.ndarray, ay: np.ndarray, bx: np.ndarray, by: np.ndarray) -> np.ndarray:
    return ax * by - ay * bx


def _points_in_polygon(px: np.ndarray, py: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Even-odd test of points (any shape) against one polygon (N,)."""
    inside = np.zeros(np.shape(x), dtype=bool)
    for x1, y1, x2, y2 in zip(px, py, np.roll(px, -1), np.roll(py, -1), strict=True):
        if y1 == y2:
            continue
        crosses = (y1 > y) != (y2 > y)
        at = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (x < at)
    return inside


def _points_in_polygons(qx: np.ndarray, qy: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Even-odd test of points (N,) against each of K polygons (K, M): (K, N)."""
    x1, y1 = qx[:, :, None], qy[:, :, None]
    x2, y2 = np.roll(qx, -1, axis=1)[:, :, None], np.roll(qy, -1, axis=1)[:, :, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        crosses = (y1 > y) != (y2 > y)
        at = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
    return (np.sum(crosses & (x < at), axis=1) % 2).astype(bool)
