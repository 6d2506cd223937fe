"""Documents sent deflated piece by piece: the zlib streams they make, checked by zlib itself."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siasync.uws.deflate import GrowingPiece, accepts_deflate, adler32_combine, piece, raw, zlib_stream

chunks = st.lists(st.binary(max_size=3000) | st.text(max_size=2000).map(str.encode), max_size=8)


@given(st.binary(max_size=5000), st.binary(max_size=5000))
def test_adler32_combine_agrees_with_zlib_on_the_joined_bytes(first: bytes, second: bytes) -> None:
    assert adler32_combine(zlib.adler32(first), zlib.adler32(second), len(second)) == zlib.adler32(first + second)


def test_adler32_combine_past_the_modulus_and_on_long_runs() -> None:
    # lengths at and beyond 65521 (the modulus), sums that wrap, and a run that is not all one byte
    for second in (b"\xff" * 65521, b"\xff" * 65522, bytes(range(256)) * 700, b""):
        first = b"\xfe" * 70000
        assert adler32_combine(zlib.adler32(first), zlib.adler32(second), len(second)) == \
            zlib.adler32(first + second)


@given(st.lists(chunks, min_size=1, max_size=4), chunks)
def test_pieces_make_one_zlib_stream_of_the_joined_bytes(frames: list[list[bytes]], growth: list[bytes]) -> None:
    growing = GrowingPiece()
    for step, chunk in enumerate(growth, 1):
        growing.append(chunk)
        # every state of the growing piece, between fixed pieces, ends a valid stream
        pieces = [piece(b"".join(frame)) for frame in frames]
        pieces.insert(1, growing.upto(step))
        stream = zlib_stream(pieces)
        assert zlib.decompress(stream) == raw(pieces) == b"".join(
            [b"".join(frames[0]), *growth[:step], *(b"".join(f) for f in frames[1:])])
    assert zlib.decompress(zlib_stream([growing.upto(0)])) == b""


def test_a_grown_piece_compresses_repetitive_results_well() -> None:
    growing = GrowingPiece()
    for i in range(2000):
        growing.append(f'<uws:result id="f{i}-g" xlink:href="http://example.org/async/abc/results/f{i}-g"/>'.encode())
    whole = growing.upto(2000)
    assert len(whole.deflated) * 5 < len(whole.raw)
    assert zlib.decompress(zlib_stream([whole])) == whole.raw


@pytest.mark.parametrize(("header", "accepted"), [
    ("gzip, deflate", True), ("deflate", True), ("DEFLATE;q=0.5", True), ("*", True), ("gzip, *;q=0.1", True),
    ("deflate;q=0", False), ("deflate; q=0.0, *", False), ("*;q=0, deflate", True), ("gzip", False),
    ("identity", False), ("", False), (None, False), ("deflate;q=x", False), ("br, gzip;q=0.8", False),
])
def test_accept_encoding_is_read_as_rfc_9110_says(header: str | None, accepted: bool) -> None:
    assert accepts_deflate(header) is accepted
