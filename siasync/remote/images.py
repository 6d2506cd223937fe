"""Remote images as the planner sees them: an id, a footprint, and where to fetch the pixels.

A `RemoteImage` is plain data (it goes to workers, and into the query cache as JSON). Its
id is made from the remote's own identifier of the image (a SIA 2.0 publisher DID, a
SIAP 1.0 access reference, a HiPS tile), so a job that resumes names its products the same
way; the same identifier is the image's key in the download cache.

The footprint comes from the remote's answer: a SIA 2.0 ``s_region`` (a DALI polygon or an
STC-S string), else its ``s_ra``, ``s_dec`` and ``s_fov``; a SIAP 1.0 row's WCS; a HiPS tile's
own grid. It is used to pair images with fields exactly as the index pairs the archive's.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from astropy_healpix import HEALPix

from cutout.scan import ImageRecord, bandpass
from cutout.sky import Field, Intersect, from_plane, match_footprints, to_plane, unit_vectors
from siasync.remote.config import RemoteSpec

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
#: vertices of the polygon that stands for a circular footprint (circumscribed)
CIRCLE_VERTICES = 16


@dataclass(frozen=True)
class RemoteImage:
    """One image of a remote collection."""

    #: the id of the image in this service (URL-safe, no dots: result ids are FIELD.IMAGE.EXT)
    id: str
    #: the remote collection's name
    remote: str
    band: str
    title: str
    #: the footprint, ICRS degrees: ((ra, dec), ...) in order
    footprint: tuple[tuple[float, float], ...]
    #: where the pixels are: the dataset (or its DataLink document, `datalink`); empty for a HiPS tile
    url: str = ""
    datalink: bool = False
    #: a HiPS tile: (HEALPix order, NESTED cell)
    tile: tuple[int, int] | None = None
    #: the download cache's key: a digest of what determines the bytes
    key: str = ""
    #: what the remote says of it (optional)
    did: str | None = None
    mjd: float | None = None
    scale_arcsec: float | None = None
    size: int | None = None
    em: tuple[float, float] | None = None
    instrument: str | None = None
    facility: str | None = None
    target: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able data (`from_json` reads it back)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RemoteImage:
        """Inverse of `to_json`."""
        values = dict(data)
        values["footprint"] = tuple(tuple(p) for p in values["footprint"])
        for name in ("tile", "em"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return cls(**values)

    def provisional_record(self) -> ImageRecord:
        """An index record standing for the image before it is fetched (band, scale, time, footprint: what a
        co-add's planning and its table row need); its pixels and WCS come with the download."""
        em = self.em
        if em is None and (known := bandpass(self.band)) is not None:
            em = known[1], known[2]
        return ImageRecord(
            id=self.id, path=f"{self.remote}:{self.url or self.title}", hdu=0, collection=self.remote,
            band=self.band, mjd=self.mjd, shape=(0, 0), scale=self.scale_arcsec or math.inf, wcs_header="",
            footprint=np.array(self.footprint, dtype=float), filesize=self.size or 0, compressed=False,
            instrument=self.instrument, facility=self.facility, target=self.target,
            em_min=em[0] if em else None, em_max=em[1] if em else None, t_min=self.mjd, t_max=self.mjd)


def digest(*parts: object) -> str:
    """A stable hexadecimal digest of the parts."""
    return hashlib.sha256("\n".join(map(str, parts)).encode()).hexdigest()


def make_id(remote: str, label: str, identity: str) -> str:
    """The image's id: the collection and the remote's label, readable, and a digest of its identity."""
    name = _UNSAFE.sub("-", remote).strip("-")[:24].lower() or "remote"
    slug = _UNSAFE.sub("_", label).strip("_-")[:40] or "image"
    return f"{name}_{slug}-{digest(remote, identity)[:10]}"


# -- footprints -----------------------------------------------------------------------------


def circle_polygon(ra: float, dec: float, radius: float, vertices: int = CIRCLE_VERTICES) -> np.ndarray:
    """A polygon (M, 2) around a circle: its edges touch the circle, so it holds all of it."""
    angles = np.linspace(0.0, 2 * np.pi, vertices, endpoint=False)
    reach = math.degrees(math.tan(math.radians(radius))) / math.cos(math.pi / vertices)
    ra_, dec_ = from_plane(ra, dec, reach * np.cos(angles), reach * np.sin(angles))
    return np.stack([ra_, dec_], axis=1)


def region_footprint(value: Any) -> np.ndarray | None:
    """A footprint (M, 2) from an ObsCore ``s_region``: a DALI polygon (numbers), or an STC-S string
    (``POLYGON ICRS ...``, ``CIRCLE ...``, ``BOX ...``); None when it says nothing usable."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if not isinstance(value, str):
        try:
            numbers = np.asarray(np.ma.filled(np.ma.asarray(value, dtype=float), np.nan), dtype=float).ravel()
        except (TypeError, ValueError):
            return None
        return _polygon(numbers)
    words = value.replace("(", " ").replace(")", " ").split()
    shapes = [i for i, w in enumerate(words) if w.upper() in ("POLYGON", "CIRCLE", "BOX")]
    if not shapes:
        return None
    start = shapes[0]
    numbers = []
    for word in words[start + 1:]:
        if word.upper() in ("POLYGON", "CIRCLE", "BOX", "UNION", "INTERSECTION", "NOT"):
            break
        if _NUMBER.match(word):
            numbers.append(float(word))
        elif numbers:
            break
    shape = words[start].upper()
    values = np.array(numbers, dtype=float)
    if shape == "CIRCLE" and len(values) == 3 and values[2] > 0:
        return circle_polygon(values[0] % 360.0, values[1], values[2])
    if shape == "BOX" and len(values) == 4 and values[2] > 0 and values[3] > 0:
        hw, hh = values[2] / 2, values[3] / 2
        ra, dec = from_plane(values[0] % 360.0, values[1], np.array([-hw, hw, hw, -hw]), np.array([-hh, -hh, hh, hh]))
        return np.stack([ra, dec], axis=1)
    return _polygon(values) if shape == "POLYGON" else None


def _polygon(numbers: np.ndarray) -> np.ndarray | None:
    if len(numbers) < 6 or len(numbers) % 2 or not np.all(np.isfinite(numbers)):
        return None
    points = numbers.reshape(-1, 2)
    if np.any(np.abs(points[:, 1]) > 90):
        return None
    points[:, 0] %= 360.0
    return points


def wcs_footprint(crpix: Sequence[float], crval: Sequence[float], cd: Sequence[float], naxis: Sequence[int],
                  projection: str = "TAN") -> np.ndarray:
    """The corners (4, 2) of an image described by its WCS keywords (a SIAP 1.0 row's)."""
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = [f"RA---{projection}", f"DEC--{projection}"]
    wcs.wcs.crpix, wcs.wcs.crval = list(crpix), list(crval)
    wcs.wcs.cd = np.asarray(cd, dtype=float).reshape(2, 2)
    nx, ny = naxis
    ra, dec = wcs.all_pix2world([-0.5, nx - 0.5, nx - 0.5, -0.5], [-0.5, -0.5, ny - 0.5, ny - 0.5], 0)
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
        raise ValueError("the row's WCS does not map the image's corners onto the sky")
    return np.stack([np.asarray(ra) % 360.0, np.asarray(dec)], axis=1)


def matching(images: Sequence[RemoteImage], field: Field, intersect: Intersect,
             bands: Iterable[str] = ()) -> list[RemoteImage]:
    """The images that satisfy ``intersect`` for ``field`` (and are in ``bands``, when given)."""
    wanted = set(bands)
    chosen = [i for i in images if not wanted or i.band in wanted]
    if not chosen:
        return []
    if field.is_point:
        intersect = Intersect.CENTER
    size = max(len(i.footprint) for i in chosen)
    polygons = np.stack([_padded(np.asarray(i.footprint, dtype=float), size) for i in chosen])
    hits = match_footprints(field, unit_vectors(polygons[..., 0], polygons[..., 1]), intersect)
    return [image for image, hit in zip(chosen, hits, strict=True) if hit]


def _padded(polygon: np.ndarray, size: int) -> np.ndarray:
    return np.concatenate([polygon, np.repeat(polygon[-1:], size - len(polygon), axis=0)])


# -- HiPS tiles -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Tile:
    """A HiPS tile: a north-up TAN grid centred on a HEALPix cell, holding the cell and a margin around it."""

    order: int
    cell: int
    ra: float
    dec: float
    #: pixels on a side
    side: int
    #: degrees per pixel
    scale: float

    def header(self) -> dict[str, Any]:
        """The tile's WCS as FITS keywords (with NAXIS1/2: the grid hips2fits is asked for)."""
        centre = (self.side + 1) / 2
        return {"NAXIS": 2, "NAXIS1": self.side, "NAXIS2": self.side, "WCSAXES": 2, "CTYPE1": "RA---TAN",
                "CTYPE2": "DEC--TAN", "CUNIT1": "deg", "CUNIT2": "deg", "CRPIX1": centre, "CRPIX2": centre,
                "CRVAL1": self.ra, "CRVAL2": self.dec, "CDELT1": -self.scale, "CDELT2": self.scale, "RADESYS": "ICRS"}

    def footprint(self) -> np.ndarray:
        """The corners (4, 2) of the tile's pixel area, ICRS degrees."""
        half = self.side * self.scale / 2
        x = np.array([half, -half, -half, half])  # east is to the left: CDELT1 < 0
        y = np.array([-half, -half, half, half])
        ra, dec = from_plane(self.ra, self.dec, x, y)
        return np.stack([ra, dec], axis=1)


@lru_cache(maxsize=4096)
def tile(order: int, cell: int, scale_arcsec: float, margin_deg: float) -> Tile:
    """The tile of a HEALPix cell (NESTED) at ``order``: the cell's extent on its tangent plane plus the margin."""
    grid = HEALPix(nside=2**order, order="nested")
    lon, lat = grid.healpix_to_lonlat([cell])
    ra, dec = float(lon.deg[0]) % 360.0, float(lat.deg[0])
    edge_lon, edge_lat = grid.boundaries_lonlat([cell], step=4)
    x, y, _ = to_plane(ra, dec, edge_lon.deg.ravel(), edge_lat.deg.ravel())
    half = float(max(np.abs(x).max(), np.abs(y).max())) + margin_deg
    scale = scale_arcsec / 3600
    return Tile(order, cell, ra, dec, 2 * math.ceil(half / scale), scale)


def tile_image(spec: RemoteSpec, order: int, cell: int) -> RemoteImage:
    """The remote image of one tile of a HiPS collection."""
    t = tile(order, cell, spec.scale_arcsec, spec.margin_deg)
    identity = f"{spec.url}\n{spec.hips}\n{order}\n{cell}\n{spec.scale_arcsec!r}\n{spec.margin_deg!r}"
    return RemoteImage(id=make_id(spec.name, f"o{order}c{cell}", identity), remote=spec.name,
                       band=spec.band or "unknown", title=f"{spec.hips} tile {order}/{cell}",
                       footprint=tuple(map(tuple, t.footprint().tolist())), tile=(order, cell),
                       key=digest("hips", identity), scale_arcsec=spec.scale_arcsec, size=t.side**2 * 4 + 5760)


def tiles_for(spec: RemoteSpec, fields: Sequence[Field], intersect: Intersect) -> list[list[RemoteImage]]:
    """Per field, the tile of the cell that holds its centre, if it satisfies ``intersect`` (else none)."""
    grid = HEALPix(nside=2**spec.tile_order, order="nested")
    import astropy.units as u

    cells = grid.lonlat_to_healpix([f.ra for f in fields] * u.deg, [f.dec for f in fields] * u.deg)
    found = []
    for f, cell in zip(fields, cells, strict=True):
        image = tile_image(spec, spec.tile_order, int(cell))
        found.append(matching([image], f, intersect))
    return found


def tiles_in(spec: RemoteSpec, ra: float, dec: float, radius: float, limit: int) -> list[RemoteImage]:
    """The tiles of a HiPS collection whose cells meet a circle (ICRS degrees), at most ``limit``.

    Raises
    ------
    ValueError
        When the circle holds more than ``limit`` tiles.
    """
    import astropy.units as u
    from astropy_healpix import nside_to_pixel_resolution
    from astropy_healpix.core import healpix_cone_search

    nside = 2**spec.tile_order
    pad = nside_to_pixel_resolution(nside).to_value(u.deg)
    cells = healpix_cone_search(ra * u.deg, dec * u.deg, min(180.0, radius + pad) * u.deg, nside=nside,
                                order="nested")
    if len(cells) > limit:
        raise ValueError(f"the region holds {len(cells)} tiles of {spec.name}, more than {limit}")
    return [tile_image(spec, spec.tile_order, int(cell)) for cell in sorted(cells)]


def hips_url(spec: RemoteSpec, image: RemoteImage) -> str:
    """The hips2fits URL that makes a tile (the request astroquery sends for it)."""
    import json
    from urllib.parse import urlencode

    if image.tile is None:
        raise ValueError(f"image {image.id} is not a HiPS tile")
    header = tile(*image.tile, spec.scale_arcsec, spec.margin_deg).header()
    return f"{spec.url}?" + urlencode({"hips": spec.hips, "wcs": json.dumps(header), "format": "fits"})


def tile_of(spec: RemoteSpec, image_id: str) -> RemoteImage | None:
    """The tile a HiPS collection's image id names (ids carry the order and cell), or None."""
    match = re.search(r"_o(\d+)c(\d+)-[0-9a-f]{10}$", image_id)
    if match is None:
        return None
    order, cell = int(match.group(1)), int(match.group(2))
    if order > 29 or cell >= 12 * 4**order:
        return None
    image = tile_image(spec, order, cell)
    return image if image.id == image_id else None
