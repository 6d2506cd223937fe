"""DALI regions against brute force: images sampled pixel by pixel through astropy's WCS."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS

from cutout.regions import Circle, Polygon, Range, RegionError, parse_shape
from cutout.scan import image_footprint
from cutout.sky import to_plane

SHAPE = (60, 80)


def tan_image(ra: float, dec: float, scale_deg: float, rotation: float = 0.0) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [(SHAPE[1] + 1) / 2, (SHAPE[0] + 1) / 2]
    c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    wcs.wcs.cd = scale_deg * np.array([[-c, s], [s, c]])
    return wcs


def sky_samples(wcs: WCS, step: int = 2) -> SkyCoord:
    """Points all over an image (its pixel grid, edges included)."""
    ys, xs = np.mgrid[-0.5:SHAPE[0] - 0.5 + 1e-9:step / 2, -0.5:SHAPE[1] - 0.5 + 1e-9:step / 2]
    ra, dec = wcs.all_pix2world(xs.ravel(), ys.ravel(), 0)
    return SkyCoord(ra, dec, unit="deg")


def on_image(wcs: WCS, points: SkyCoord) -> np.ndarray:
    x, y = wcs.all_world2pix(points.ra.deg, points.dec.deg, 0, quiet=True)
    return (x >= -0.5) & (x <= SHAPE[1] - 0.5) & (y >= -0.5) & (y <= SHAPE[0] - 0.5)


def random_images(rng: np.random.Generator, ra: float, dec: float, n: int, spread: float) -> list[WCS]:
    """Small TAN images of random scales and rotations, centred up to ``spread`` degrees from (ra, dec)."""
    images = []
    for _ in range(n):
        pa, sep = rng.uniform(0, 360), rng.uniform(0, spread)
        centre = SkyCoord(ra, dec, unit="deg").directional_offset_by(np.radians(pa), np.radians(sep))
        images.append(tan_image(centre.ra.deg, centre.dec.deg, rng.uniform(0.002, 0.02), rng.uniform(0, 90)))
    return images


def footprints(images: list[WCS]) -> np.ndarray:
    return np.stack([image_footprint(w, SHAPE) for w in images])


# -- circles ------------------------------------------------------------------------------


@pytest.mark.parametrize(("ra", "dec"), [(150.0, 2.0), (0.2, -10.0), (359.9, 45.0), (42.0, 89.7), (200.0, -89.6)])
def test_a_circle_meets_exactly_the_images_with_a_point_within_its_radius(ra: float, dec: float) -> None:
    rng = np.random.default_rng(abs(int(ra * 10 + dec)))
    images = random_images(rng, ra, dec, 60, 2.0)
    found = 0
    for radius in (0.05, 0.3, 1.0):
        circle = Circle(ra, dec, radius)
        hits = circle.meets(footprints(images))
        centre = SkyCoord(ra, dec, unit="deg")
        for wcs, hit in zip(images, hits, strict=True):
            nearest = sky_samples(wcs).separation(centre).deg.min()
            if abs(nearest - radius) < 0.004:  # too close to call at the sampling's resolution
                continue
            assert hit == (nearest <= radius or on_image(wcs, centre[None]).any()), (wcs.wcs.crval, radius)
            found += hit
    assert found > 10  # the test saw hits, not only misses


# -- polygons -----------------------------------------------------------------------------


@pytest.mark.parametrize(("ra", "dec"), [(150.0, 2.0), (0.1, 30.0), (10.0, 88.0)])
def test_a_polygon_meets_exactly_the_images_that_share_a_point_with_it(ra: float, dec: float) -> None:
    rng = np.random.default_rng(abs(int(ra + dec)))
    user = tan_image(ra, dec, 0.01, rotation=25.0)  # the polygon is another image's outline
    polygon = Polygon(tuple(map(tuple, image_footprint(user, SHAPE))))
    images = random_images(rng, ra, dec, 80, 1.5)
    hits = polygon.meets(footprints(images))
    for wcs, hit in zip(images, hits, strict=True):
        truth = on_image(user, sky_samples(wcs, 1)).any() or on_image(wcs, sky_samples(user, 1)).any()
        assert hit == truth, wcs.wcs.crval
    assert 5 < hits.sum() < len(images)


def test_a_concave_polygon_is_not_its_convex_hull() -> None:
    # an L: the notch between its arms holds an image that the hull would take in
    poly = Polygon(((10.0, 10.0), (10.4, 10.0), (10.4, 10.1), (10.1, 10.1), (10.1, 10.4), (10.0, 10.4)))
    in_notch = tan_image(10.3, 10.3, 0.001)
    on_arm = tan_image(10.3, 10.05, 0.001)
    assert poly.meets(footprints([in_notch, on_arm])).tolist() == [False, True]


def test_polygon_vertex_order_does_not_matter_and_dali_order_is_counter_clockwise_from_inside() -> None:
    square = ((10.0, 20.0), (11.0, 20.0), (11.0, 21.0), (10.0, 21.0))
    forward, backward = Polygon(square), Polygon(tuple(reversed(square)))
    images = [tan_image(10.5, 20.5, 0.001), tan_image(12.5, 20.5, 0.001)]
    assert forward.meets(footprints(images)).tolist() == backward.meets(footprints(images)).tolist() == [True, False]
    dali = forward.dali_vertices()
    assert dali == backward.dali_vertices()
    # seen from the centre of the sphere east is on the left: going counter-clockwise from (10, 20), the
    # next vertex is to the north-east of the first... i.e. the path turns left looking outwards
    v = SkyCoord([p[0] for p in dali], [p[1] for p in dali], unit="deg").cartesian.xyz.value.T
    assert np.dot(np.cross(v[0], v[1]), v.mean(axis=0)) < 0  # the turn is about an inward axis


# -- ranges -------------------------------------------------------------------------------


@pytest.mark.parametrize("bounds", [(149.5, 150.5, 1.5, 2.5), (359.5, 0.5, -0.5, 0.5), (0.0, 360.0, 60.0, 61.0),
                                    (100.0, 160.0, 88.0, 90.0)])
def test_a_range_meets_exactly_the_images_with_a_point_inside_it(bounds: tuple[float, ...]) -> None:
    rng = np.random.default_rng(7)
    region = Range(*bounds)
    lo, hi, dmin, dmax = bounds
    ra0 = (lo + region.span / 2) % 360.0
    images = random_images(rng, ra0, (dmin + dmax) / 2, 80, 1.5)
    hits = region.meets(footprints(images))

    def inside(points: SkyCoord) -> np.ndarray:
        lon = (points.ra.deg - lo) % 360.0
        return (lon <= region.span + 1e-9) & (points.dec.deg >= dmin) & (points.dec.deg <= dmax)

    for wcs, hit in zip(images, hits, strict=True):
        samples = sky_samples(wcs, 1)
        margin = np.minimum(np.abs(samples.dec.deg - dmin), np.abs(samples.dec.deg - dmax)).min()
        if margin < 0.002 and hit != inside(samples).any():
            continue  # on the edge, below the sampling's resolution
        assert hit == inside(samples).any(), wcs.wcs.crval
    assert hits.any()


def test_an_open_range_is_clipped_to_the_sphere() -> None:
    everything = parse_shape("RANGE -Inf +Inf -Inf +Inf")
    assert (everything.span, everything.dec_min, everything.dec_max) == (360.0, -90.0, 90.0)
    north = parse_shape("RANGE 0 360.0 89.0 +Inf")
    images = [tan_image(0, 89.5, 0.01), tan_image(0, 80.0, 0.01)]
    assert north.meets(footprints(images)).tolist() == [True, False]
    assert everything.meets(footprints(images)).tolist() == [True, True]


# -- boxes for cutouts ---------------------------------------------------------------------


@pytest.mark.parametrize("region", [Circle(150.0, 2.0, 0.01), Circle(10.0, 89.99, 0.02),
                                    Polygon(((150.0, 2.0), (150.1, 2.0), (150.05, 2.08))),
                                    Range(359.9, 0.1, 10.0, 10.05)])
def test_the_cutout_box_holds_the_region_and_no_more(region) -> None:
    field = region.field()
    if isinstance(region, Circle):
        outline = SkyCoord(region.ra, region.dec, unit="deg").directional_offset_by(
            np.linspace(0, 2 * np.pi, 360), np.radians(region.radius))
        ra, dec = outline.ra.deg, outline.dec.deg
    elif isinstance(region, Polygon):
        ra, dec = np.array(region.vertices).T
    else:
        ra, dec = region._outline()
    x, y, _ = to_plane(field.ra, field.dec, ra, dec)
    assert np.all(np.abs(x) <= field.width / 2 + 1e-9) and np.all(np.abs(y) <= field.height / 2 + 1e-9)
    # tight: the region reaches the box's edges (a circle on all four sides)
    assert np.abs(x).max() > field.width / 2 * 0.97 and np.abs(y).max() > field.height / 2 * 0.97


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty"), ("SQUARE 1 2 3", "unknown shape"), ("CIRCLE 1 2", "expected 3 numbers"),
    ("CIRCLE 1 2 x", "not a number"), ("CIRCLE 1 2 -1", "radius"), ("CIRCLE 400 2 1", "longitude"),
    ("CIRCLE 1 95 1", "latitude"), ("CIRCLE 1 2 nan", "not a finite number"), ("POLYGON 1 2 3 4", "at least 3"),
    ("POLYGON 1 2 3 4 5", "pairs"), ("POLYGON 1 0 2 0 3 0", "no area"), ("RANGE 1 2 3", "4 numbers"),
    ("RANGE 1 2 5 3", "empty"), ("POLYGON 0 0 120 0 240 0", "hemisphere"),
])
def test_malformed_shapes_are_refused_saying_why(text: str, message: str) -> None:
    with pytest.raises(RegionError, match=message):
        parse_shape(text)


def test_a_region_too_large_for_a_cutout_says_so() -> None:
    with pytest.raises(RegionError, match="too large|spans more"):
        Circle(10.0, 10.0, 40.0).field()
    with pytest.raises(RegionError, match="too large"):
        Range(0.0, 360.0, -10.0, 10.0).field()
