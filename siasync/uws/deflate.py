"""Documents made of pieces, each kept both as it is and deflated, joined into a zlib stream per request.

A busy job's document is megabytes of result elements that grow at the end, between a
few kilobytes that change with every version (phase, progress). Compressing the whole
document for every version would cost more than sending it; so each piece is compressed
once (the growing results incrementally, as they are appended) and ended by a sync flush,
which leaves it a run of complete, non-final DEFLATE blocks on a byte boundary. Such runs
concatenate into one valid DEFLATE stream; a final empty block ends it, and the zlib
wrapper (RFC 1950) needs the Adler-32 of the whole, which is combined from the pieces'
own. Clients get it as ``Content-Encoding: deflate`` (RFC 9110 8.4.1.2), which they ask
for in ``Accept-Encoding`` (httpx, requests and browsers do by default).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

#: compression level: the results are repetitive (URLs), so the fastest level already gives ~10x
LEVEL = 1
#: the zlib header: deflate with a 32 KiB window, the fastest level, and the check bits (0x7801 % 31 == 0)
_HEADER = b"\x78\x01"
#: a final, empty DEFLATE block (BFINAL=1, fixed Huffman, end of block)
_FINAL = b"\x03\x00"
_ADLER_BASE = 65521


@dataclass(frozen=True)
class Piece:
    """A part of a document: its bytes, the same deflated (sync-flushed), and their Adler-32."""

    raw: bytes
    deflated: bytes
    adler: int


def piece(data: bytes) -> Piece:
    """A piece of these bytes, deflated on its own."""
    compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -15)
    return Piece(data, compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH), zlib.adler32(data))


@dataclass
class GrowingPiece:
    """An append-only piece, deflated as it grows; its state at each append can be taken back (`upto`)."""

    data: bytearray = field(default_factory=bytearray)
    deflated: bytearray = field(default_factory=bytearray)
    #: after each append: (bytes so far, deflated bytes so far, Adler-32 so far)
    marks: list[tuple[int, int, int]] = field(default_factory=list)
    _compressor: object = field(default_factory=lambda: zlib.compressobj(LEVEL, zlib.DEFLATED, -15))

    def append(self, data: bytes) -> None:
        """Add bytes at the end (one sync flush: they can end a document)."""
        adler = zlib.adler32(data, self.marks[-1][2] if self.marks else 1)
        self.data += data
        self.deflated += self._compressor.compress(data) + self._compressor.flush(zlib.Z_SYNC_FLUSH)
        self.marks.append((len(self.data), len(self.deflated), adler))

    def upto(self, mark: int) -> Piece:
        """The piece as it was after its ``mark``-th append (0: empty): a copy, as the piece goes on growing."""
        if mark == 0:
            return Piece(b"", b"", 1)
        end, deflated_end, adler = self.marks[mark - 1]
        return Piece(bytes(self.data[:end]), bytes(self.deflated[:deflated_end]), adler)


def raw(pieces: Sequence[Piece]) -> bytes:
    """The document as it is."""
    return b"".join(p.raw for p in pieces)


def zlib_stream(pieces: Sequence[Piece]) -> bytes:
    """The document as one zlib stream (``Content-Encoding: deflate``)."""
    adler = 1
    for p in pieces:
        adler = adler32_combine(adler, p.adler, len(p.raw))
    return b"".join([_HEADER, *(p.deflated for p in pieces), _FINAL, adler.to_bytes(4, "big")])


def adler32_combine(first: int, second: int, second_length: int) -> int:
    """The Adler-32 of two byte strings joined, from theirs and the second's length (as zlib's adler32_combine)."""
    rem = second_length % _ADLER_BASE
    a = (first & 0xFFFF) + (second & 0xFFFF) + _ADLER_BASE - 1
    b = (rem * (first & 0xFFFF)) % _ADLER_BASE + ((first >> 16) & 0xFFFF) + ((second >> 16) & 0xFFFF) \
        + _ADLER_BASE - rem
    return (a % _ADLER_BASE) | ((b % _ADLER_BASE) << 16)


def accepts_deflate(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` header takes ``deflate`` with a quality above zero, by name or as ``*``
    (RFC 9110 12.5.3: the name, when given, rules over ``*``)."""
    qualities: dict[str, float] = {}
    for part in (accept_encoding or "").split(","):
        coding, *params = (p.strip() for p in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        qualities.setdefault(coding.lower(), quality)
    return qualities.get("deflate", qualities.get("*", 0.0)) > 0
