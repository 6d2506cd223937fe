"""The archive in the ObsCore 1.1 model: one row per image, from the index alone.

SIA 2.0 answers in ObsCore columns. Every image's row is computed once, from what
indexing stored (`cutout.scan.ImageRecord`: footprint, shape, scale, band, MJD,
collection), never by opening the FITS file; queries filter arrays of the values the
SIA 2.0 parameters constrain, and answer with the pre-rendered rows.

Each image is a dataset with a publisher DID, ``ivo://AUTHORITY/images?IMAGE_ID``; its
``access_url`` is its DataLink document (``/datalink?ID=...``), which links the file,
a preview and the SODA cutout services.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from urllib.parse import quote

import numpy as np

from cutout.index import ArchiveIndex
from cutout.regions import Polygon, RegionError
from cutout.scan import ImageRecord, bandpass
from cutout.sky import footprint_circle
from siasync.vo.votable import Col, cell
from storage.table import BASE

#: DataLink's media type: an ``access_format`` of this kind tells clients ``access_url`` is a DataLink document
DATALINK_MIME = "application/x-votable+xml;content=datalink"
#: calibration level of archive images: reduced, calibrated science images (ObsCore 1.1, 2)
CALIB_LEVEL = 2


def _col(name: str, datatype: str, ucd: str, utype: str, unit: str | None = None, arraysize: str | None = None,
         xtype: str | None = None, description: str = "", id: str | None = None) -> Col:
    return Col(name, datatype, ucd, unit, arraysize if arraysize or datatype != "char" else "*",
               f"obscore:{utype}", xtype, description, id)


#: The ObsCore 1.1 columns, mandatory ones first, as SIA 2.0 answers them.
COLUMNS: tuple[Col, ...] = (
    _col("dataproduct_type", "char", "meta.code.class", "ObsDataset.dataProductType", description="image: every "
         "archive dataset is a 2-D image"),
    _col("calib_level", "short", "meta.code;obs.calib", "ObsDataset.calibLevel"),
    _col("obs_collection", "char", "meta.id", "DataID.collection"),
    _col("obs_id", "char", "meta.id", "DataID.observationID", description="the archive's image id"),
    _col("obs_publisher_did", "char", "meta.ref.ivoid", "Curation.publisherDID", id="obs_publisher_did",
         description="the dataset identifier: the ID of DataLink and SODA"),
    _col("access_url", "char", "meta.ref.url", "Access.reference", description="the image's DataLink document"),
    _col("access_format", "char", "meta.code.mime", "Access.format"),
    _col("access_estsize", "long", "phys.size;meta.file", "Access.size", "kbyte"),
    _col("target_name", "char", "meta.id;src", "Target.name"),
    _col("s_ra", "double", "pos.eq.ra", "Char.SpatialAxis.Coverage.Location.Coord.Position2D.Value2.C1", "deg"),
    _col("s_dec", "double", "pos.eq.dec", "Char.SpatialAxis.Coverage.Location.Coord.Position2D.Value2.C2", "deg"),
    _col("s_fov", "double", "phys.angSize;instr.fov", "Char.SpatialAxis.Coverage.Bounds.Extent.diameter", "deg",
         description="diameter of the circle around the image"),
    _col("s_region", "double", "pos.outline;obs.field", "Char.SpatialAxis.Coverage.Support.Area", "deg", "*",
         "polygon", "the image's outline, ICRS"),
    _col("s_resolution", "double", "pos.angResolution", "Char.SpatialAxis.Resolution.Refval.value", "arcsec"),
    _col("s_xel1", "long", "meta.number", "Char.SpatialAxis.numBins1"),
    _col("s_xel2", "long", "meta.number", "Char.SpatialAxis.numBins2"),
    _col("t_min", "double", "time.start;obs.exposure", "Char.TimeAxis.Coverage.Bounds.Limits.StartTime", "d"),
    _col("t_max", "double", "time.end;obs.exposure", "Char.TimeAxis.Coverage.Bounds.Limits.StopTime", "d"),
    _col("t_exptime", "double", "time.duration;obs.exposure", "Char.TimeAxis.Coverage.Support.Extent", "s"),
    _col("t_resolution", "double", "time.resolution", "Char.TimeAxis.Resolution.Refval.value", "s"),
    _col("t_xel", "long", "meta.number", "Char.TimeAxis.numBins"),
    _col("em_min", "double", "em.wl;stat.min", "Char.SpectralAxis.Coverage.Bounds.Limits.LoLimit", "m"),
    _col("em_max", "double", "em.wl;stat.max", "Char.SpectralAxis.Coverage.Bounds.Limits.HiLimit", "m"),
    _col("em_res_power", "double", "spect.resolution", "Char.SpectralAxis.Resolution.ResolPower.refVal"),
    _col("em_xel", "long", "meta.number", "Char.SpectralAxis.numBins"),
    _col("o_ucd", "char", "meta.ucd", "Char.ObservableAxis.ucd"),
    _col("pol_states", "char", "meta.code;phys.polarization", "Char.PolarizationAxis.stateList"),
    _col("pol_xel", "long", "meta.number", "Char.PolarizationAxis.numBins"),
    _col("facility_name", "char", "meta.id;instr.tel", "Provenance.ObsConfig.Facility.name"),
    _col("instrument_name", "char", "meta.id;instr", "Provenance.ObsConfig.Instrument.name"),
    # optional ObsCore columns
    _col("obs_title", "char", "meta.title;obs", "DataID.title"),
    _col("s_pixel_scale", "double", "phys.angSize;instr.pixel", "Char.SpatialAxis.Sampling.RefVal.SamplingPeriod",
         "arcsec"),
    Col("band", "char", "instr.bandpass", arraysize="*", description="the archive's band name"),
    Col("remote", "char", "meta.ref.url", arraysize="*",
        description="the service a remote collection's image comes from; empty for the archive's own images"),
)


@dataclass(frozen=True)
class Datasets:
    """The archive's images as VO datasets: publisher DIDs, and back."""

    index: ArchiveIndex
    #: the IVOA naming authority of the DIDs
    authority: str

    def did(self, record: ImageRecord) -> str:
        """The publisher DID of an image."""
        return f"ivo://{self.authority}/images?{record.id}"

    def resolve(self, identifier: str) -> ImageRecord | None:
        """The image of a publisher DID, or of a bare image id (as ``/sia/cutout`` takes); None if unknown.

        IVOIDs compare case-insensitively up to the ``?``; the image id after it is exact.
        """
        text = identifier.strip()
        prefix = f"ivo://{self.authority}/images?"
        if text[:len(prefix)].lower() == prefix.lower():
            text = text[len(prefix):]
        elif text.lower().startswith("ivo://"):
            return None
        return self.index.by_id.get(text)


def datalink_url(base: str, did: str) -> str:
    """The DataLink document of a dataset."""
    return f"{base}/datalink?ID={quote(did, safe='')}"


class ObsCoreTable:
    """One ObsCore row per archive image, and the arrays SIA 2.0 constraints are tested on.

    Parameters
    ----------
    datasets : Datasets
        The archive and its DIDs.
    """

    def __init__(self, datasets: Datasets) -> None:
        self.datasets = datasets
        records = datasets.index.records
        self.records = records
        values = [self._values(r) for r in records]
        column = {c.name: i for i, c in enumerate(COLUMNS)}

        def numbers(name: str) -> np.ndarray:
            return np.array([np.nan if v[column[name]] is None else v[column[name]] for v in values], dtype=float)

        def texts(name: str) -> np.ndarray:
            return np.array([v[column[name]] for v in values], dtype=object)

        self.em_min, self.em_max = numbers("em_min"), numbers("em_max")
        self.t_min, self.t_max = numbers("t_min"), numbers("t_max")
        self.s_fov, self.s_resolution = numbers("s_fov"), numbers("s_resolution")
        self.t_exptime, self.t_resolution = numbers("t_exptime"), numbers("t_resolution")
        self.em_res_power, self.calib_level = numbers("em_res_power"), numbers("calib_level")
        self.text = {name: texts(name) for name in ("obs_collection", "facility_name", "instrument_name",
                                                   "dataproduct_type", "target_name", "access_format", "pol_states")}
        self.did_lower = np.array([self.datasets.did(r).lower() for r in records], dtype=object)
        #: the ``<TR>`` of each image, with `BASE` where the service's base URL goes
        self.rows = ["<TR>" + "".join(cell(v) for v in row) + "</TR>\n" for row in values]

    def _values(self, record: ImageRecord) -> list:
        """An image's row, in `COLUMNS` order (the access URL with `BASE` for the service's base URL)."""
        (ra, dec), radius = footprint_circle(record.footprint)
        outline = None
        if record.wide:  # an all-sky map, a hemisphere: its centre pixel says where it is; no polygon outlines it
            ra, dec = self.datasets.index.geometry(record).centre()
        else:
            try:
                outline = Polygon(tuple(map(tuple, record.footprint))).dali_vertices()
            except RegionError:
                outline = None
        did = self.datasets.did(record)
        ny, nx = record.shape
        t_min = record.t_min if record.t_min is not None else record.mjd
        t_max = record.t_max if record.t_max is not None else t_min
        em_min, em_max = record.em_min, record.em_max
        known = em_min is not None and em_max is not None and em_max > em_min
        centre = (bandpass(record.band) or ((em_min + em_max) / 2,) if known else (None,))[0]
        return [
            "image", CALIB_LEVEL, record.collection, record.id, did,
            datalink_url(BASE, did), DATALINK_MIME, max(1, math.ceil(record.filesize / 1000)), record.target,
            ra, dec, 2 * radius, [c for point in outline for c in point] if outline else None, None,
            nx, ny, t_min, t_max, record.exptime, None, 1 if t_min is not None else None,
            em_min, em_max, centre / (em_max - em_min) if known else None, 1 if known else None,
            None, None, None, record.facility, record.instrument,
            f"{record.collection} {record.band} {record.id}", record.scale, record.band, None,
        ]
