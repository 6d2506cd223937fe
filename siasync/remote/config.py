"""The remote collections an archive declares: ``siasync-remotes.toml`` beside its index.

Each top-level table of the file is one collection, named as ``COLLECTION=`` names it::

    [WIDE-SIA2]                          # a SIA 2.0 service, through pyvo
    protocol = "sia2"
    url = "https://archive.example.org/sia2"
    collection = "survey-dr2"            # the remote's own COLLECTION (optional)

    [DSS2-RED]                           # a HiPS survey, cut by hips2fits through astroquery
    protocol = "hips2fits"
    hips = "CDS/P/DSS2/red"
    band = "R"
    scale_arcsec = 1.0

Every key is validated when the server starts; a mistake stops it with a message naming
the file, the collection and the key (`RemoteConfigError`).
"""

from __future__ import annotations

import importlib.util
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

#: the file's name, beside the archive index
REMOTES_FILE = "siasync-remotes.toml"
PROTOCOLS = ("sia2", "siap", "hips2fits")
#: the clients each protocol may be reached through: pyvo, or an astroquery module for that archive
CLIENTS = {"sia2": ("pyvo", "astroquery.ipac.irsa"), "siap": ("pyvo",), "hips2fits": ("astroquery",)}
#: astroquery's default hips2fits server (CDS), used when a HiPS collection names no URL
HIPS2FITS_SERVER = "https://alasky.cds.unistra.fr/hips-image-services/hips2fits"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_BAND = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,31}")


class RemoteConfigError(ValueError):
    """The remote collections' file is malformed; the message names the file, the collection and the key."""


@dataclass(frozen=True)
class RemoteSpec:
    """One remote collection: where it is, how to reach it, and how hard to try (plain data, sent to workers)."""

    name: str
    protocol: str
    #: SIA 2.0 base URL, SIAP 1.0 query URL, or the hips2fits server
    url: str
    client: str = "pyvo"
    #: SIA 2.0: the remote's own COLLECTION constraints
    remote_collections: tuple[str, ...] = ()
    #: more query parameters sent with every query (SIA 2.0, SIAP 1.0), e.g. a service's own extensions
    params: tuple[tuple[str, str], ...] = ()
    #: a band given to every image (else each image's band as the remote names it)
    band: str | None = None
    #: the bands the remote's images are in, as it names them (BAND= may ask for them)
    bands: tuple[str, ...] = ()
    #: hips2fits: the HiPS id, the pixel scale of its tiles, their HEALPix order and overlap
    hips: str | None = None
    scale_arcsec: float = 1.0
    tile_order: int = 8
    margin_deg: float = 0.05
    #: seconds to connect, and to wait for each read of an answer
    timeout_s: float = 30.0
    #: seconds a whole download may take
    deadline_s: float = 600.0
    #: attempts after the first, waiting `backoff_s`, then twice as long, ...
    retries: int = 3
    backoff_s: float = 1.0
    #: requests to the remote at once, from each server
    concurrency: int = 2
    #: largest diameter (degrees) of the sky region of one query: fields closer than this share it
    max_query_deg: float = 1.0
    #: most rows of one query's answer
    maxrec: int = 1000
    #: largest image a download may bring (bytes)
    max_image_bytes: int = 2 * 1024**3
    title: str = ""

    @property
    def all_bands(self) -> tuple[str, ...]:
        """The bands BAND= may name for this collection."""
        return (self.band,) if self.band else self.bands

    def describe(self) -> str:
        """The collection in a few words: protocol, client and URL."""
        what = {"sia2": "SIA 2.0", "siap": "SIAP 1.0", "hips2fits": f"HiPS {self.hips} through hips2fits"}
        via = f" through {self.client}" if self.protocol != "hips2fits" else ""
        return f"{what[self.protocol]}{via} at {self.url}"


def _url(value: Any) -> str:
    url = _text(value)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"expected an http(s) URL, got {url!r}")
    return url.rstrip("/")


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string, got {value!r}")
    if not value.isprintable():
        raise ValueError(f"expected printable text, got {value!r}")
    return value.strip()


def _texts(value: Any) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values:
        raise ValueError(f"expected a string or a non-empty list of strings, got {value!r}")
    return tuple(_text(v) for v in values)


def _band(value: Any) -> str:
    text = _text(value)
    if not _BAND.fullmatch(text):
        raise ValueError(f"a band is letters, digits and _.+- (at most 32), got {text!r}")
    return text


def _params(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict) or not value:
        raise ValueError(f"expected a table of NAME = value, got {value!r}")
    pairs = []
    for name, item in value.items():
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]{0,63}", name):
            raise ValueError(f"{name!r} is not a parameter name")
        if name.upper() in ("POS", "SIZE", "FORMAT", "INTERSECT", "VERB", "MAXREC", "COLLECTION"):
            raise ValueError(f"{name} is set by siasync for each query")
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise ValueError(f"{name}: expected a string or a number, got {item!r}")
        pairs.append((name, str(item)))
    return tuple(pairs)


def _number(low: float, high: float, integer: bool = False) -> Any:
    def check(value: Any) -> float | int:
        kind = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
            raise ValueError(f"expected {'an integer' if integer else 'a number'}, got {value!r}")
        if not low <= value <= high:
            raise ValueError(f"must be between {low:g} and {high:g}, got {value!r}")
        return int(value) if integer else float(value)
    return check


#: the keys of a collection's table, with their checks
_KEYS: dict[str, Any] = {
    "protocol": _text, "url": _url, "client": _text, "collection": _texts, "band": _band,
    "bands": lambda v: tuple(_band(b) for b in _texts(v)), "hips": _text,
    "scale_arcsec": _number(0.01, 3600.0), "tile_deg": _number(0.01, 10.0), "margin_deg": _number(0.0, 2.0),
    "timeout_s": _number(0.1, 600.0), "deadline_s": _number(1.0, 86400.0),
    "retries": _number(0, 10, integer=True), "backoff_s": _number(0.0, 60.0),
    "concurrency": _number(1, 32, integer=True), "max_query_deg": _number(0.001, 10.0),
    "maxrec": _number(1, 100_000, integer=True), "max_image_bytes": _number(2880, 2**50, integer=True),
    "title": _text, "params": _params,
}
#: keys only some protocols take
_ONLY = {"collection": ("sia2",), "params": ("sia2", "siap"), "hips": ("hips2fits",), "scale_arcsec": ("hips2fits",),
         "tile_deg": ("hips2fits",), "margin_deg": ("hips2fits",), "max_query_deg": ("sia2", "siap"),
         "maxrec": ("sia2", "siap")}


def tile_order(tile_deg: float) -> int:
    """The HEALPix order whose cells are closest to ``tile_deg`` across (a cell at order k spans ~58.6/2**k deg)."""
    return max(0, min(13, round(math.log2(58.6 / tile_deg))))


def parse_remotes(document: Mapping[str, Any], source: str = REMOTES_FILE) -> dict[str, RemoteSpec]:
    """The remote collections of a parsed file, by name.

    Raises
    ------
    RemoteConfigError
        Naming ``source``, the collection and the key at fault.
    """
    remotes = {}
    for name, table in document.items():
        where = f"{source}: [{name}]"
        if not _NAME.fullmatch(name):
            raise RemoteConfigError(f"{where}: a collection name is letters, digits and _.- (at most 64, "
                                    "starting with a letter or digit)")
        if not isinstance(table, dict):
            raise RemoteConfigError(f"{where}: expected a table of keys (protocol, url, ...), got {table!r}")
        if name.lower() in {n.lower() for n in remotes}:
            raise RemoteConfigError(f"{where}: declared twice (names are compared without case)")
        remotes[name] = _spec(name, table, where)
    return remotes


def _spec(name: str, table: dict[str, Any], where: str) -> RemoteSpec:
    unknown = sorted(set(table) - set(_KEYS))
    if unknown:
        raise RemoteConfigError(f"{where} {unknown[0]}: unknown key; the keys are {', '.join(sorted(_KEYS))}")
    values: dict[str, Any] = {}
    for key, value in table.items():
        try:
            values[key] = _KEYS[key](value)
        except ValueError as exc:
            raise RemoteConfigError(f"{where} {key}: {exc}") from None
    protocol = values.get("protocol")
    if protocol is None:
        raise RemoteConfigError(f"{where} protocol: required: one of {', '.join(PROTOCOLS)}")
    if protocol not in PROTOCOLS:
        raise RemoteConfigError(f"{where} protocol: unknown value {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    for key, protocols in _ONLY.items():
        if key in values and protocol not in protocols:
            raise RemoteConfigError(f"{where} {key}: applies only to protocol {' or '.join(protocols)}")
    client = values.pop("client", CLIENTS[protocol][0])
    if client not in CLIENTS[protocol]:
        raise RemoteConfigError(f"{where} client: {client!r} cannot reach a {protocol} service; expected "
                                f"{' or '.join(CLIENTS[protocol])}")
    package = client.partition(".")[0]
    if importlib.util.find_spec(package) is None:
        raise RemoteConfigError(f"{where} client: {client} is not installed here (pip install {package})")
    if "url" not in values:
        if protocol != "hips2fits":
            raise RemoteConfigError(f"{where} url: required: the service's URL")
        values["url"] = HIPS2FITS_SERVER
    if protocol == "hips2fits" and "hips" not in values:
        raise RemoteConfigError(f"{where} hips: required: the HiPS survey's id, e.g. CDS/P/DSS2/red")
    if "band" in values and "bands" in values:
        raise RemoteConfigError(f"{where} bands: give band (one band for every image) or bands (the bands the "
                                "remote names), not both")
    if protocol == "hips2fits" and "bands" in values:
        raise RemoteConfigError(f"{where} bands: a HiPS survey is one band: give band")
    if "tile_deg" in values:
        values["tile_order"] = tile_order(values.pop("tile_deg"))
    if "collection" in values:
        values["remote_collections"] = values.pop("collection")
    return RemoteSpec(name=name, client=client, **values)


def load_remotes(archive: str | Path, local_collections: frozenset[str] = frozenset()) -> dict[str, RemoteSpec]:
    """The remote collections declared beside the archive's index (none when there is no file).

    Raises
    ------
    RemoteConfigError
        When the file is not valid TOML, a key is wrong, or a name is one of ``local_collections``.
    """
    path = Path(archive) / REMOTES_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise RemoteConfigError(f"{path}: cannot be read: {exc}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RemoteConfigError(f"{path}: not valid TOML: {exc}") from None
    remotes = parse_remotes(document, str(path))
    clash = sorted(n for n in remotes if n.lower() in {c.lower() for c in local_collections})
    if clash:
        raise RemoteConfigError(f"{path}: [{clash[0]}]: the archive already has a collection of that name")
    return remotes
