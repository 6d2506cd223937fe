"""The remote collections' file: every key validated, every mistake named (file, collection, key)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from siasync.cli import main
from siasync.remote.config import HIPS2FITS_SERVER, REMOTES_FILE, RemoteConfigError, load_remotes, parse_remotes

GOOD = """
[DEEP-SIA2]
protocol = "sia2"
url = "https://archive.example.org/sia2/"
collection = ["survey-dr2", "survey-dr3"]
bands = ["r", "i"]
params = {RESPONSEFORMAT = "votable", LEVEL = 2}
timeout_s = 5
retries = 0

[IRSA-WISE]
protocol = "sia2"
client = "astroquery.ipac.irsa"
url = "https://irsa.ipac.caltech.edu/SIA"
collection = "wise_allwise"
band = "W1"

[OLD-SIAP]
protocol = "siap"
url = "http://old.example.org/cgi/siap?survey=x"
concurrency = 4
max_query_deg = 0.5

[DSS2-RED]
protocol = "hips2fits"
hips = "CDS/P/DSS2/red"
band = "R"
scale_arcsec = 1.7
tile_deg = 0.5
title = "DSS2 red plates"
"""


def test_a_good_file_gives_every_collection_with_its_values_and_defaults() -> None:
    remotes = parse_remotes(tomllib.loads(GOOD))
    assert list(remotes) == ["DEEP-SIA2", "IRSA-WISE", "OLD-SIAP", "DSS2-RED"]
    deep = remotes["DEEP-SIA2"]
    assert (deep.protocol, deep.client, deep.url) == ("sia2", "pyvo", "https://archive.example.org/sia2")
    assert deep.remote_collections == ("survey-dr2", "survey-dr3") and deep.all_bands == ("r", "i")
    assert deep.params == (("RESPONSEFORMAT", "votable"), ("LEVEL", "2"))
    assert (deep.timeout_s, deep.retries, deep.concurrency, deep.backoff_s) == (5.0, 0, 2, 1.0)
    assert remotes["IRSA-WISE"].client == "astroquery.ipac.irsa" and remotes["IRSA-WISE"].all_bands == ("W1",)
    assert remotes["OLD-SIAP"].concurrency == 4 and remotes["OLD-SIAP"].max_query_deg == 0.5
    dss = remotes["DSS2-RED"]
    assert dss.url == HIPS2FITS_SERVER and dss.hips == "CDS/P/DSS2/red" and dss.client == "astroquery"
    assert dss.tile_order == 7  # 58.6 / 2**7 = 0.46 deg, the order closest to tile_deg
    assert "HiPS CDS/P/DSS2/red" in dss.describe() and "SIA 2.0 through pyvo" in deep.describe()


@pytest.mark.parametrize(("text", "message"), [
    ('[A]\nurl = "http://x.org/sia2"', "[A] protocol: required: one of sia2, siap, hips2fits"),
    ('[A]\nprotocol = "sia3"\nurl = "http://x.org"', "[A] protocol: unknown value 'sia3'; expected one of"),
    ('[A]\nprotocol = "sia2"', "[A] url: required: the service's URL"),
    ('[A]\nprotocol = "sia2"\nurl = "ftp://x.org/a"', "[A] url: expected an http(s) URL, got 'ftp://x.org/a'"),
    ('[A]\nprotocol = "sia2"\nurl = 3', "[A] url: expected a non-empty string, got 3"),
    ('[A]\nprotocol = "sia2"\nurl = "http://x.org"\nurll = 1', "[A] urll: unknown key; the keys are backoff_s,"),
    ('[A]\nprotocol = "siap"\nurl = "http://x.org"\nclient = "astroquery.ipac.irsa"',
     "[A] client: 'astroquery.ipac.irsa' cannot reach a siap service; expected pyvo"),
    ('[A]\nprotocol = "siap"\nurl = "http://x.org"\ncollection = "c"', "[A] collection: applies only to protocol sia2"),
    ('[A]\nprotocol = "sia2"\nurl = "http://x.org"\nhips = "x"', "[A] hips: applies only to protocol hips2fits"),
    ('[A]\nprotocol = "hips2fits"', "[A] hips: required: the HiPS survey's id"),
    ('[A]\nprotocol = "hips2fits"\nhips = "x"\nbands = ["r"]', "[A] bands: a HiPS survey is one band: give band"),
    ('[A]\nprotocol = "sia2"\nurl = "http://x.org"\nband = "r"\nbands = ["r"]', "[A] bands: give band"),
    ('[A]\nprotocol = "sia2"\nurl = "http://x.org"\nband = "r b"', "[A] band: a band is letters, digits"),
    ('[A]\nprotocol = "sia2"\nurl = "http://x.org"\nretries = 11', "[A] retries: must be between 0 and 10, got 11"),
    ('[A]\nprotocol = "sia2"\nurl = "http://x.org"\nretries = 1.5', "[A] retries: expected an integer, got 1.5"),
    ('[A]\nprotocol = "sia2"\nurl = "http://x.org"\ntimeout_s = true', "[A] timeout_s: expected a number, got True"),
    ('[A]\nprotocol = "sia2"\nurl = "http://x.org"\ntimeout_s = 0', "[A] timeout_s: must be between 0.1 and 600"),
    ('[A]\nprotocol = "sia2"\nurl = "http://x.org"\nconcurrency = 0', "[A] concurrency: must be between 1 and 32"),
    ('[A]\nprotocol = "sia2"\nurl = "http://x.org"\ncollection = []', "[A] collection: expected a string or a non"),
    ('[A]\nprotocol = "sia2"\nurl = "http://x.org"\nparams = {POS = "1"}', "[A] params: POS is set by siasync"),
    ('[A]\nprotocol = "sia2"\nurl = "http://x.org"\nparams = {X = [1]}', "[A] params: X: expected a string or a"),
    ('[A]\nprotocol = "hips2fits"\nhips = "x"\nscale_arcsec = 0', "[A] scale_arcsec: must be between 0.01 and"),
    ('[A]\nprotocol = "hips2fits"\nhips = "x"\nmax_query_deg = 1', "[A] max_query_deg: applies only to protocol"),
    ('["bad name"]\nprotocol = "sia2"\nurl = "http://x.org"', '[bad name]: a collection name is letters'),
    ('A = 1', "[A]: expected a table of keys (protocol, url, ...), got 1"),
    ('[A]\nprotocol = "sia2"\nurl = "http://x.org"\n[a]\nprotocol = "sia2"\nurl = "http://x.org"',
     "[a]: declared twice (names are compared without case)"),
])
def test_each_mistake_is_refused_naming_the_file_the_collection_and_the_key(text: str, message: str) -> None:
    with pytest.raises(RemoteConfigError) as caught:
        parse_remotes(tomllib.loads(text), "remotes.toml")
    assert str(caught.value).startswith("remotes.toml: ") and message in str(caught.value), str(caught.value)


def test_the_file_beside_the_index_is_read_and_its_own_mistakes_are_named(tmp_path: Path) -> None:
    assert load_remotes(tmp_path) == {}  # no file: no remote collection
    (tmp_path / REMOTES_FILE).write_text(GOOD)
    assert len(load_remotes(tmp_path)) == 4
    with pytest.raises(RemoteConfigError, match=r"\[DSS2-RED\]: the archive already has a collection of that name"):
        load_remotes(tmp_path, frozenset({"dss2-red"}))
    (tmp_path / REMOTES_FILE).write_text("[A\nprotocol=")
    with pytest.raises(RemoteConfigError, match=rf"{REMOTES_FILE}: not valid TOML: "):
        load_remotes(tmp_path)
    (tmp_path / REMOTES_FILE).write_bytes(b"\xff\xfe[A]")
    with pytest.raises(RemoteConfigError, match="cannot be read"):
        load_remotes(tmp_path)


def test_the_server_does_not_start_with_a_bad_file(tmp_path: Path, demo_archive: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    from cutout.index import ArchiveIndex

    archive = tmp_path / "archive"
    ArchiveIndex.load(demo_archive).save(archive / "siasync-index.sqlite")
    (archive / REMOTES_FILE).write_text('[X]\nprotocol = "sia2"\nurl = "http://x.org"\nretries = -1\n')
    assert main(["serve", "--archive", str(archive), "--state-dir", str(tmp_path / "state")]) == 2
    assert "[X] retries: must be between 0 and 10, got -1" in capsys.readouterr().err


def test_a_client_that_is_not_installed_is_refused_naming_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing client library stops the server at start, not each query later with no rows."""
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "astroquery" else find_spec(name, *a))
    with pytest.raises(RemoteConfigError) as caught:
        parse_remotes(tomllib.loads(GOOD), "remotes.toml")
    assert "[IRSA-WISE] client: astroquery.ipac.irsa is not installed here (pip install astroquery)" \
        in str(caught.value)
    assert parse_remotes(tomllib.loads(GOOD.split("[IRSA-WISE]")[0]), "remotes.toml")  # pyvo alone is here
