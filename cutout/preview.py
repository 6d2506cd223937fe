"""PNG and JPEG previews of image data, with an astropy.visualization stretch."""

from __future__ import annotations

import io

import numpy as np
from astropy.visualization import AsinhStretch, ManualInterval, ZScaleInterval
from PIL import Image

#: Preview formats by MIME type, with their Pillow encoder names.
PREVIEW_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG"}


def stretch_to_uint8(data: np.ndarray) -> np.ndarray:
    """Map image data to 0..255 with a zscale interval and an asinh stretch.

    NaN, infinite and masked pixels become 0 (black) and are ignored when the
    interval is computed; an image with no finite pixel becomes all black.

    Parameters
    ----------
    data : ndarray, 2-D

    Returns
    -------
    ndarray of uint8, same shape, in FITS orientation (row 0 is the bottom).
    """
    values = np.asarray(np.ma.filled(np.ma.asarray(data, dtype=float), np.nan), dtype=float)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.uint8)
    vmin, vmax = ZScaleInterval().get_limits(values[finite])
    if not vmax > vmin:
        vmin, vmax = float(values[finite].min()), float(values[finite].max())
    if not vmax > vmin:
        return np.where(finite, 128, 0).astype(np.uint8)
    transform = AsinhStretch(a=0.1) + ManualInterval(vmin, vmax)  # interval first, then stretch
    scaled = transform(np.where(finite, values, vmin), clip=True)
    return np.where(finite, np.round(scaled * 255), 0).astype(np.uint8)


def preview_bytes(data: np.ndarray, mime: str = "image/png", quality: int = 90) -> bytes:
    """Encode a preview of ``data`` as PNG or JPEG, shown with y up as FITS viewers do.

    Parameters
    ----------
    data : ndarray, 2-D
    mime : str
        ``image/png`` or ``image/jpeg``.
    quality : int
        JPEG quality (ignored for PNG).
    """
    if mime not in PREVIEW_FORMATS:
        raise ValueError(f"unsupported preview format {mime!r}; expected one of {sorted(PREVIEW_FORMATS)}")
    pixels = np.flipud(stretch_to_uint8(data))
    buffer = io.BytesIO()
    options = {"quality": quality} if mime == "image/jpeg" else {"optimize": False}
    Image.fromarray(np.ascontiguousarray(pixels), mode="L").save(buffer, PREVIEW_FORMATS[mime], **options)
    return buffer.getvalue()
