"""The service's fixed words, without dependencies: the command line reads them without loading the server."""

from __future__ import annotations

#: FORMAT values and the products each makes per (field, image)
FORMATS: dict[str, tuple[str, ...]] = {
    "image/fits": ("image/fits",),
    "image/png": ("image/png",),
    "image/jpeg": ("image/jpeg",),
    "ALL": ("image/fits", "image/png"),
    "GRAPHIC": ("image/png",),
    "METADATA": (),
}

#: MODE values: cutouts of each image, a co-add per band, or every band's co-add on one grid
MODES = ("cutout", "mosaic", "stack")

#: the UWS 1.1 phases
PHASES = ("PENDING", "QUEUED", "EXECUTING", "COMPLETED", "ERROR", "ABORTED", "UNKNOWN", "HELD",
          "SUSPENDED", "ARCHIVED")
