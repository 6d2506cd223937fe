"""Independent truth for sky matching: dense sampling through astropy WCS only.

Nothing here uses cutout.sky: the field box is an astropy TAN WCS (north up, centred
on POS, SIZE wide), and every relation is decided by mapping sample points between
that box and an image's own WCS.
"""

from __future__ import annotations

import numpy as np
from astropy.wcs import WCS

SAMPLES = 64


def box_wcs(ra: float, dec: float, width: float, height: float) -> tuple[WCS, tuple[int, int]]:
    """A north-up TAN WCS whose pixel grid (SAMPLES x SAMPLES) spans the field box."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.cdelt = [-width / SAMPLES, height / SAMPLES]
    w.wcs.crpix = [(SAMPLES + 1) / 2, (SAMPLES + 1) / 2]
    w.wcs.set()
    return w, (SAMPLES, SAMPLES)


def _grid(shape: tuple[int, int], n: int = SAMPLES) -> tuple[np.ndarray, np.ndarray]:
    ny, nx = shape
    x, y = np.meshgrid(np.linspace(-0.5, nx - 0.5, n), np.linspace(-0.5, ny - 0.5, n))
    return x.ravel(), y.ravel()


def _inside(x: np.ndarray, y: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    ny, nx = shape
    return np.isfinite(x) & np.isfinite(y) & (x >= -0.5) & (x <= nx - 0.5) & (y >= -0.5) & (y <= ny - 0.5)


def _map(src: WCS, dst: WCS, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ra, dec = src.all_pix2world(x, y, 0)
    # points more than 80 deg from the destination's reference have no TAN projection
    a0, d0 = np.radians(dst.wcs.crval)
    cosc = (np.sin(d0) * np.sin(np.radians(dec))
            + np.cos(d0) * np.cos(np.radians(dec)) * np.cos(np.radians(ra) - a0))
    px, py = dst.all_world2pix(ra, dec, 0, quiet=True)
    return np.where(cosc > 0.2, px, np.nan), np.where(cosc > 0.2, py, np.nan)


def relations(field: tuple[float, float, float, float], wcs: WCS, shape: tuple[int, int]) -> dict[str, bool]:
    """OVERLAPS, COVERS, ENCLOSED and CENTER of an image (wcs, shape) for a field."""
    bw, bshape = box_wcs(*field)
    fx, fy = _map(bw, wcs, *_grid(bshape))       # field samples in image pixels
    ix, iy = _map(wcs, bw, *_grid(shape))        # image samples in field-box pixels
    field_in_image = _inside(fx, fy, shape)
    image_in_field = _inside(ix, iy, bshape)
    cx, cy = wcs.all_world2pix([[field[0], field[1]]], 0, quiet=True)[0]
    return {
        "OVERLAPS": bool(field_in_image.any() or image_in_field.any()),
        "COVERS": bool(field_in_image.all()),
        "ENCLOSED": bool(image_in_field.all()),
        "CENTER": bool(_inside(np.array([cx]), np.array([cy]), shape)[0]),
    }


def robust_relations(field: tuple[float, float, float, float], wcs: WCS,
                     shape: tuple[int, int], margin: float = 0.06) -> dict[str, bool | None]:
    """Relations that hold for the field shrunk and grown by ``margin``; None when they differ.

    Sampling cannot decide a relation that changes within a few percent of the field
    size, so such borderline cases are reported as None and not compared.
    """
    ra, dec, w, h = field
    small = relations((ra, dec, w * (1 - margin), h * (1 - margin)), wcs, shape)
    large = relations((ra, dec, w * (1 + margin), h * (1 + margin)), wcs, shape)
    out: dict[str, bool | None] = {k: (small[k] if small[k] == large[k] else None) for k in small}
    out["CENTER"] = small["CENTER"]  # independent of size
    return out
