"""The pages' static files (stylesheet and scripts, shipped inside the package) and their text filters."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.static_files import create_static_files_router

STATIC = Path(__file__).parent / "static"


def static_files() -> Router:
    """``/static/…``: the files in `STATIC`; browsers check them again after an hour."""
    return create_static_files_router(path="/static", directories=[STATIC],
                                      cache_control=CacheControlHeader(max_age=3600))


def filesize(n: int | None) -> str:
    """A size in bytes for people: 980 B, 12.3 kB, 4.1 MB."""
    if n is None or n < 0:
        return ""
    value, unit = float(n), "B"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            break
        value /= 1000
    return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"


def when(instant: datetime | None) -> str:
    """An instant for people: ``2026-11-29 10:21:06 UTC`` (empty for None)."""
    if instant is None:
        return ""
    return instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
