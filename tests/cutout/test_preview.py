"""PNG and JPEG previews: orientation, stretch, and robustness to NaN and blanks."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cutout.preview import preview_bytes, stretch_to_uint8


def decode(blob: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(blob)))


@pytest.mark.parametrize("mime,magic", [("image/png", b"\x89PNG"), ("image/jpeg", b"\xff\xd8\xff")])
def test_preview_has_the_image_shape_and_fits_orientation(mime: str, magic: bytes) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(100, 5, (60, 80))
    data[2:8, 2:8] = 5000  # a bright source near FITS pixel (0, 0): bottom left
    blob = preview_bytes(data, mime)
    assert blob.startswith(magic)
    pixels = decode(blob)
    assert pixels.shape == (60, 80)
    assert pixels[-8:-2, 2:8].mean() > 200  # shown at the bottom left, y up
    assert pixels[2:8, 2:8].mean() < 200


def test_stretch_uses_zscale_and_asinh() -> None:
    rng = np.random.default_rng(1)
    data = rng.normal(100, 5, (50, 50))
    out = stretch_to_uint8(data)
    assert out.dtype == np.uint8 and 0 < out.mean() < 255
    assert np.all(np.diff(stretch_to_uint8(np.linspace(80, 120, 101)[None, :])[0].astype(int)) >= 0)


def test_nan_and_blank_pixels_do_not_break_previews() -> None:
    data = np.random.default_rng(2).normal(0, 1, (40, 40)).astype(np.float32)
    data[:, 10] = np.nan
    data[5, 5] = np.inf
    pixels = decode(preview_bytes(data))
    assert np.all(pixels[:, 10] == 0)
    assert decode(preview_bytes(np.full((10, 12), np.nan))).max() == 0
    assert decode(preview_bytes(np.full((10, 12), 7.0))).shape == (10, 12)
    masked = np.ma.masked_greater(np.arange(100.0).reshape(10, 10), 90)
    assert decode(preview_bytes(masked, "image/jpeg")).shape == (10, 10)
    assert decode(preview_bytes(np.arange(20, dtype=">i2").reshape(4, 5))).shape == (4, 5)


def test_unknown_preview_format_is_refused() -> None:
    with pytest.raises(ValueError, match="image/gif"):
        preview_bytes(np.zeros((3, 3)), "image/gif")
