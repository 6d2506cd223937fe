"""The service's fixed words, without dependencies: the command line reads them without loading the server."""

from __future__ import annotations

#: FORMAT values and the products each makes per (field, image). SIAP 1.0: ALL is every format
#: (FITS and its preview), GRAPHIC one graphics format (PNG), GRAPHIC-ALL every graphics format.
FORMATS: dict[str, tuple[str, ...]] = {
    "image/fits": ("image/fits",),
    "image/png": ("image/png",),
    "image/jpeg": ("image/jpeg",),
    "ALL": ("image/fits", "image/png"),
    "GRAPHIC": ("image/png",),
    "GRAPHIC-ALL": ("image/png", "image/jpeg"),
    "METADATA": (),
}

#: MODE values: cutouts of each image, a co-add per band, or every band's co-add on one grid
MODES = ("cutout", "mosaic", "stack")

#: the UWS 1.1 phases
PHASES = ("PENDING", "QUEUED", "EXECUTING", "COMPLETED", "ERROR", "ABORTED", "UNKNOWN", "HELD",
          "SUSPENDED", "ARCHIVED")
