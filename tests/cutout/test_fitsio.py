"""Our hand-formatted FITS cards and data units, parsed back by astropy."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits

from cutout.fitsio import format_card, image_bytes, storable


@pytest.mark.parametrize("value", [
    True, False, 0, -843, 2**40, 1.0, 0.1, -0.000138888888888889, 1e-300, 6.02214076e23,
    150.10000000000002, -29.999999999999996, "ICRS", "", "it's quoted", "x" * 60,
])
def test_cards_parse_back_to_the_same_value(value) -> None:
    card = format_card("KEY", value, "a comment")
    assert len(card) == 80
    parsed = fits.Card.fromstring(card)
    parsed.verify("exception")
    assert parsed.keyword == "KEY"
    assert parsed.value == value and type(parsed.value) is type(value)


def test_long_comments_are_cut_at_the_card_end() -> None:
    card = format_card("ORIGFILE", "DEMO-WIDE/r/file.fits", "a" * 100)
    assert len(card) == 80 and fits.Card.fromstring(card).value == "DEMO-WIDE/r/file.fits"


@pytest.mark.parametrize("key,value", [("TOOLONGKEY", 1), ("NAN", float("nan")), ("INF", float("inf")),
                                       ("LONG", "y" * 80)])
def test_unwritable_cards_are_refused(key: str, value) -> None:
    with pytest.raises(ValueError):
        format_card(key, value)


@pytest.mark.parametrize("dtype", ["<f4", ">f4", "<f8", "u1", "<i2", ">i4", "<i8", "<u2", ">u4", "<u8", "?"])
def test_every_numpy_type_round_trips_through_a_fits_file(dtype: str) -> None:
    rng = np.random.default_rng(1)
    data = (rng.uniform(0, 1, (7, 5)) * (200 if dtype != "?" else 2)).astype(dtype)
    if dtype[-2:] in ("u2", "u4", "u8"):
        data[0, 0] = np.iinfo(dtype).max
    stored, bitpix, bzero = storable(data)
    assert stored.dtype.byteorder in (">", "|") and stored.flags.c_contiguous
    cards = format_card("SIMPLE", True) + format_card("BITPIX", bitpix) + format_card("NAXIS", 2)
    cards += format_card("NAXIS1", 5) + format_card("NAXIS2", 7)
    if bzero is not None:
        cards += format_card("BSCALE", 1) + format_card("BZERO", bzero)
    blob = image_bytes(cards, stored)
    assert len(blob) % 2880 == 0
    with fits.open(io.BytesIO(blob)) as hdul:
        hdul.verify("exception")
        np.testing.assert_array_equal(hdul[0].data, data.astype(np.uint8) if dtype == "?" else data)
