"""Pure computation for siasync: the archive index and sky lookup, cutouts and writers.

This package imports only numpy, astropy (with astropy-healpix), Pillow and the
standard library; it knows nothing of HTTP, jobs or storage.
"""

from cutout.engine import Cutout, ParentCache, ParentImage, cut, cutout, pixel_box
from cutout.errors import ArchiveError, CutoutError, FieldError, NoOverlapError
from cutout.index import INDEX_NAME, ArchiveIndex
from cutout.preview import preview_bytes
from cutout.scan import ImageRecord
from cutout.sky import Field, Intersect

__all__ = [
    "INDEX_NAME", "ArchiveError", "ArchiveIndex", "Cutout", "CutoutError", "Field", "FieldError",
    "ImageRecord", "Intersect", "NoOverlapError", "ParentCache", "ParentImage", "cut", "cutout",
    "pixel_box", "preview_bytes",
]
