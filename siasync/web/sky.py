"""Sky pictures drawn by the server as SVG, offline: where the archive has images, and where a job's fields are.

The archive picture is an all-sky Hammer-Aitoff map (RA 0 in the middle, east to the left, as on the
sky) with a gnomonic (TAN) close-up of each region the images cluster in, since a survey's tiles are
a few pixels wide on an all-sky map. A job's picture is one close-up of its fields over the archive's
footprints (or the all-sky map when its fields spread too far for one tangent plane). Every picture
carries a ``<title>`` and a ``<desc>``, and `describe_archive` / `describe_fields` give the same text
for the page's ``alt``. Only presentation attributes are used (no ``style``), so a strict
Content-Security-Policy allows them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cutout.index import ArchiveIndex
from cutout.scan import ImageRecord
from cutout.sky import box_outline, to_plane, unit_vectors
from storage.table import escape

#: Okabe-Ito colours: told apart with every common colour-vision deficiency
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
FIELD_COLOUR = "#CC0000"
WIDTH = 720
#: at most this many close-ups of the archive, the regions with most images first
PANELS = 3
#: images whose centres lie closer than this share a close-up
CLUSTER_DEG = 10.0
#: beyond this many fields, a job's fields are drawn as occupied cells of a grid, not one mark each
FIELD_MARKS = 2000


@dataclass(frozen=True)
class Region:
    """A part of the sky to draw on a tangent plane: centre and half-width in degrees."""

    ra: float
    dec: float
    half: float


def _fmt(v: float) -> str:
    return f"{v:.1f}"


def _points(xs: np.ndarray, ys: np.ndarray) -> str:
    return " ".join(f"{_fmt(x)},{_fmt(y)}" for x, y in zip(xs, ys, strict=True))


def hammer(ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hammer-Aitoff coordinates in [-1, 1] x [-0.5, 0.5] (2:1), RA 0 at the centre and RA growing to the left."""
    lon = np.radians((np.asarray(ra, dtype=float) + 180.0) % 360.0 - 180.0)
    lat = np.radians(np.asarray(dec, dtype=float))
    z = np.sqrt(1.0 + np.cos(lat) * np.cos(lon / 2))
    x = 2 * math.sqrt(2) * np.cos(lat) * np.sin(lon / 2) / z
    y = math.sqrt(2) * np.sin(lat) / z
    return -x / (2 * math.sqrt(2)), y / (2 * math.sqrt(2))


def _centre(ra: np.ndarray, dec: np.ndarray) -> tuple[float, float]:
    mean = unit_vectors(ra, dec).reshape(-1, 3).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    if norm < 1e-9:
        return 0.0, 0.0
    x, y, z = mean / norm
    return float(np.degrees(np.arctan2(y, x)) % 360.0), float(np.degrees(np.arcsin(np.clip(z, -1, 1))))


def _separation(ra0: float, dec0: float, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(unit_vectors(ra, dec) @ unit_vectors(np.array(ra0), np.array(dec0)), -1, 1)))


def clusters(records: Sequence[ImageRecord]) -> list[list[ImageRecord]]:
    """The images grouped by region (centres within `CLUSTER_DEG` of a group's first), largest group first."""
    groups: list[tuple[float, float, list[ImageRecord]]] = []
    for record in records:
        ra, dec = _centre(record.footprint[:, 0], record.footprint[:, 1])
        for gra, gdec, members in groups:
            if _separation(gra, gdec, np.array(ra), np.array(dec)) < CLUSTER_DEG:
                members.append(record)
                break
        else:
            groups.append((ra, dec, [record]))
    return sorted((members for _, _, members in groups), key=len, reverse=True)


def region_of(ra: np.ndarray, dec: np.ndarray, margin: float = 0.08) -> Region | None:
    """The tangent-plane region holding these points with a margin, or None when they spread too far for one."""
    ra0, dec0 = _centre(ra, dec)
    x, y, cosc = to_plane(ra0, dec0, ra, dec)
    if np.any(cosc < math.cos(math.radians(40.0))):
        return None
    half = max(float(np.max(np.abs(x))), float(np.max(np.abs(y))), 1e-3) * (1 + margin)
    return Region(ra0, dec0, half)


class _Panel:
    """A square close-up on a tangent plane, placed at (left, top) and ``size`` pixels wide."""

    def __init__(self, region: Region, left: float, top: float, size: float, name: str) -> None:
        self.region, self.left, self.top, self.size, self.name = region, left, top, size, name
        self.scale = size / (2 * region.half)

    def clipped(self, marks: list[str]) -> list[str]:
        """Marks drawn inside the panel only."""
        return [f'<clipPath id="{self.name}"><rect x="{_fmt(self.left)}" y="{_fmt(self.top)}" '
                f'width="{_fmt(self.size)}" height="{_fmt(self.size)}"/></clipPath>',
                f'<g clip-path="url(#{self.name})">', *marks, "</g>"]

    def project(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x, y, cosc = to_plane(self.region.ra, self.region.dec, ra, dec)
        inside = (cosc > 0.5) & (np.abs(x) <= self.region.half * 1.5) & (np.abs(y) <= self.region.half * 1.5)
        return self.left + self.size / 2 - x * self.scale, self.top + self.size / 2 - y * self.scale, inside

    def frame(self, label: str) -> list[str]:
        """The panel's background, then its label and scale bar (drawn over the marks)."""
        r = self.region
        bar = _nice_length(r.half / 2)
        pixels = bar * self.scale
        x0, y0 = self.left + 8, self.top + self.size - 10
        return [f'<rect x="{_fmt(self.left)}" y="{_fmt(self.top)}" width="{_fmt(self.size)}" '
                f'height="{_fmt(self.size)}" fill="#ffffff" stroke="#5f6b7a"/>',
                f'<text x="{_fmt(self.left + 6)}" y="{_fmt(self.top + 16)}" font-size="12" fill="#1d2330">'
                f"{escape(label)}</text>",
                f'<line x1="{_fmt(x0)}" y1="{_fmt(y0)}" x2="{_fmt(x0 + pixels)}" y2="{_fmt(y0)}" stroke="#1d2330" '
                f'stroke-width="2"/>',
                f'<text x="{_fmt(x0)}" y="{_fmt(y0 - 4)}" font-size="11" fill="#1d2330">{_angle(bar)}</text>']

    def footprints(self, records: Sequence[ImageRecord], colours: dict[str, str]) -> list[str]:
        out = []
        for record in records:
            ra, dec = record.footprint[:, 0], record.footprint[:, 1]
            sx, sy, _ = self.project(ra, dec)
            if (to_plane(self.region.ra, self.region.dec, ra, dec)[2] > 0.5).all():  # on the near side
                out.append(f'<polygon points="{_points(sx, sy)}" fill="{colours[record.collection]}" '
                           f'fill-opacity="0.12" stroke="{colours[record.collection]}" stroke-width="1"/>')
        return out


def _nice_length(deg: float) -> float:
    """A round length (1, 2 or 5 times a power of ten) no longer than ``deg``."""
    power = 10 ** math.floor(math.log10(deg))
    return max(m * power for m in (1, 2, 5) if m * power <= deg)


def _angle(deg: float) -> str:
    if deg >= 1:
        return f"{deg:.3g}°"
    if deg >= 1 / 60:
        return f"{deg * 60:.3g}′"
    return f"{deg * 3600:.3g}″"


def _graticule(left: float, top: float, width: float) -> list[str]:
    """The all-sky map's outline, with parallels every 30° and meridians every 60°."""
    def place(ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, y = hammer(ra, dec)
        return left + width / 2 + x * width / 2, top + width / 4 - y * width / 2

    lines = []
    for dec in (-60, -30, 0, 30, 60):
        ra = np.linspace(180.0001, 539.9999, 73) % 360
        sx, sy = place(ra, np.full_like(ra, dec))
        lines.append(f'<polyline points="{_points(sx, sy)}" fill="none" stroke="#c7ced8" stroke-width="0.7"/>')
    for ra in (60, 120, 180.0001, 179.9999, 240, 300, 0):
        dec = np.linspace(-90, 90, 37)
        sx, sy = place(np.full_like(dec, ra), dec)
        lines.append(f'<polyline points="{_points(sx, sy)}" fill="none" stroke="#c7ced8" stroke-width="0.7"/>')
    for ra in (0, 60, 120, 240, 300):
        sx, sy = place(np.array([ra]), np.array([0.0]))
        lines.append(f'<text x="{_fmt(sx[0] + 2)}" y="{_fmt(sy[0] - 3)}" font-size="10" fill="#5f6b7a">'
                     f"{ra}°</text>")
    return lines


def _all_sky(left: float, top: float, width: float, groups: list[tuple[np.ndarray, np.ndarray, str, str]]) -> list[str]:
    """The all-sky map, with each group's points as dots (ra, dec, colour, label)."""
    out = _graticule(left, top, width)
    for ra, dec, colour, label in groups:
        x, y = hammer(ra, dec)
        sx, sy = left + width / 2 + x * width / 2, top + width / 4 - y * width / 2
        for px, py in sorted({(round(px), round(py)) for px, py in zip(sx, sy, strict=True)}):  # one dot a pixel
            out.append(f'<circle cx="{_fmt(px)}" cy="{_fmt(py)}" r="3.5" fill="{colour}" fill-opacity="0.6"/>')
        if label and len(sx):
            out.append(f'<text x="{_fmt(sx[0] + 6)}" y="{_fmt(sy[0] + 14)}" font-size="11" fill="#1d2330">'
                       f"{escape(label)}</text>")
    return out


def _svg(width: float, height: float, title: str, desc: str, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_fmt(width)}" height="{_fmt(height)}" '
            f'viewBox="0 0 {_fmt(width)} {_fmt(height)}" role="img" aria-labelledby="t d" '
            f'font-family="system-ui, sans-serif"><title id="t">{escape(title)}</title>'
            f'<desc id="d">{escape(desc)}</desc>'
            f'<rect width="100%" height="100%" fill="#fafbfc"/>' + "".join(body) + "</svg>")


def _colours(index: ArchiveIndex) -> dict[str, str]:
    return {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(index.collections)}


def _legend(colours: dict[str, str], top: float, extra: list[tuple[str, str]] = ()) -> list[str]:
    out, x = [], 10.0
    for label, colour in [*colours.items(), *extra]:
        out.append(f'<rect x="{_fmt(x)}" y="{_fmt(top)}" width="12" height="12" fill="{colour}" fill-opacity="0.5" '
                   f'stroke="{colour}"/>')
        out.append(f'<text x="{_fmt(x + 16)}" y="{_fmt(top + 11)}" font-size="12" fill="#1d2330">'
                   f"{escape(label)}</text>")
        x += 28 + 7.5 * len(label)
    return out


def _where(records: Sequence[ImageRecord]) -> str:
    ra = np.concatenate([r.footprint[:, 0] for r in records])
    dec = np.concatenate([r.footprint[:, 1] for r in records])
    region = region_of(ra, dec, margin=0)
    names = sorted({r.collection for r in records})
    where = (f"around RA {region.ra:.1f}°, Dec {region.dec:+.1f}°, about {_angle(2 * region.half)} across"
             if region else "spread over the sky")
    return f"{len(records)} images of {', '.join(names)} {where}"


def describe_archive(index: ArchiveIndex) -> str:
    """The archive picture in words: the regions with images."""
    if not len(index):
        return "The archive holds no images."
    return (f"Sky map of the archive's {len(index)} images in {len(index.collections)} collections: "
            + "; ".join(_where(group) for group in clusters(index.records)) + ".")


def archive_svg(index: ArchiveIndex) -> str:
    """Where the archive has images: an all-sky map, and a close-up of each region with images."""
    colours = _colours(index)
    groups = clusters(index.records)
    body = _legend(colours, 8)
    width, sky_top = WIDTH - 20, 30
    centres = [(np.array([_centre(r.footprint[:, 0], r.footprint[:, 1]) for r in group]).T, group)
               for group in groups]
    body += _all_sky(10, sky_top, width, [(c[0], c[1], colours[g[0].collection],
                                           f"{', '.join(sorted({r.collection for r in g}))} ({len(g)})")
                                          for c, g in centres])
    panels = groups[:PANELS]
    size = (WIDTH - 10 * (len(panels) + 1)) / max(len(panels), 1)
    top = sky_top + width / 2 + 10
    for i, group in enumerate(panels):
        ra = np.concatenate([r.footprint[:, 0] for r in group])
        dec = np.concatenate([r.footprint[:, 1] for r in group])
        region = region_of(ra, dec) or Region(*_centre(ra, dec), CLUSTER_DEG)
        panel = _Panel(region, 10 + i * (size + 10), top, size, f"panel{i}")
        background, *labels = panel.frame(f"RA {region.ra:.1f}°, Dec {region.dec:+.1f}°")
        body += [background, *panel.clipped(panel.footprints(group, colours)), *labels]
    height = top + (size + 10 if panels else 0)
    return _svg(WIDTH, height, "Where the archive has images", describe_archive(index), body)


def _field_boxes(positions: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Outline points (K, 4) of each field's box, in RA and Dec."""
    from cutout.sky import from_plane

    ras, decs = [], []
    for (ra, dec), (w, h) in zip(positions, sizes, strict=True):
        x, y = box_outline(w / 2, h / 2, 1)
        r, d = from_plane(ra, dec, x, y)
        ras.append(r)
        decs.append(d)
    return np.array(ras), np.array(decs)


def describe_fields(positions: np.ndarray, done: int) -> str:
    """A job's picture in words."""
    if not len(positions):
        return "The job has no fields."
    region = region_of(positions[:, 0], positions[:, 1], margin=0)
    where = (f"around RA {region.ra:.2f}°, Dec {region.dec:+.2f}°, within {_angle(2 * region.half)}"
             if region else "spread over the sky")
    return (f"Sky map of the job's {len(positions)} fields ({done} done) {where}, "
            "drawn over the archive's image footprints.")


def job_svg(index: ArchiveIndex, positions: np.ndarray, sizes: np.ndarray, done: int) -> str:
    """A job's fields (ra, dec and width, height in degrees, one row each) over the archive's footprints."""
    colours = _colours(index)
    body = _legend(colours, 8, [("fields", FIELD_COLOUR)])
    desc = describe_fields(positions, done)
    size = WIDTH - 20
    region = None
    if len(positions):
        extent = np.concatenate([positions, positions + sizes / 2, positions - sizes / 2])
        region = region_of(extent[:, 0] % 360.0, np.clip(extent[:, 1], -90, 90))
    if region is None:
        body += _all_sky(10, 30, size, [(positions[:, 0], positions[:, 1], FIELD_COLOUR, "")] if len(positions)
                         else [])
        return _svg(WIDTH, 30 + size / 2 + 10, "The job's fields on the sky", desc, body)
    region = Region(region.ra, region.dec, max(region.half, 2 * float(np.max(sizes)) if len(sizes) else 0))
    panel = _Panel(region, 10, 30, size, "fields")
    background, *labels = panel.frame(f"RA {region.ra:.2f}°, Dec {region.dec:+.2f}°")
    near = [r for r in index.records if _separation(region.ra, region.dec, r.footprint[:1, 0],
                                                    r.footprint[:1, 1])[0] < region.half * 3 + 5]
    body += [background, *panel.clipped(panel.footprints(near, colours) + _fields(panel, positions, sizes)), *labels]
    return _svg(WIDTH, 40 + size, "The job's fields on the sky", desc, body)


def _cells(sx: np.ndarray, sy: np.ndarray, cell: int) -> str:
    """One path of the grid cells holding points, each row's adjacent cells merged into one rectangle."""
    occupied = sorted({(int(y // cell), int(x // cell)) for x, y in zip(sx, sy, strict=True)})
    runs: list[list[int]] = []
    for j, i in occupied:
        if runs and runs[-1][0] == j and runs[-1][2] == i:
            runs[-1][2] = i + 1
        else:
            runs.append([j, i, i + 1])
    path = "".join(f"M{i * cell} {j * cell}h{(end - i) * cell}v{cell}h-{(end - i) * cell}z" for j, i, end in runs)
    return f'<path d="{path}" fill="{FIELD_COLOUR}" fill-opacity="0.7"/>'


def _fields(panel: _Panel, positions: np.ndarray, sizes: np.ndarray) -> list[str]:
    """Each field as its box (or a dot when smaller than 3 pixels); occupied grid cells beyond `FIELD_MARKS`."""
    sx, sy, inside = panel.project(positions[:, 0], positions[:, 1])
    sx, sy = sx[inside], sy[inside]
    if len(sx) > FIELD_MARKS:
        return [_cells(sx, sy, 5)]
    if float(np.max(sizes)) * panel.scale >= 3:
        ras, decs = _field_boxes(positions[inside], sizes[inside])
        out = []
        for ra, dec in zip(ras, decs, strict=True):
            px, py, _ = panel.project(ra, dec)
            out.append(f'<polygon points="{_points(px, py)}" fill="none" stroke="{FIELD_COLOUR}" '
                       'stroke-width="1.2"/>')
        return out
    return [f'<circle cx="{_fmt(x)}" cy="{_fmt(y)}" r="2" fill="{FIELD_COLOUR}"/>'
            for x, y in zip(sx, sy, strict=True)]
