"""Domain errors of the cutout package, all `ValueError` subclasses as in astropy."""


class CutoutError(ValueError):
    """Base class of the errors this package raises for bad input."""


class FieldError(CutoutError):
    """A field (position and size) that is not valid."""


class NoOverlapError(CutoutError):
    """The requested field does not overlap the image."""


class ArchiveError(CutoutError):
    """An archive file that cannot be indexed or read."""


class ParentChangedError(ArchiveError):
    """An archive file that is no longer the one indexed: its size or modification time differ."""
