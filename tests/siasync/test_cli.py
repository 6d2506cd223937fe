"""The siasync command line, run as a user runs it: the installed entry point."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from cutout.index import ArchiveIndex


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "siasync", *args], capture_output=True, text=True, timeout=300)


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert "demo-archive" in result.stdout and "archive" in result.stdout
    entry = shutil.which("siasync", path=str(Path(sys.executable).parent))
    assert entry and subprocess.run([entry, "archive", "index", "--help"], capture_output=True).returncode == 0


def test_archive_index_writes_a_loadable_index_and_reports_skips(tmp_path: Path) -> None:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval, w.wcs.crpix, w.wcs.cdelt = [10, 10], [16, 16], [-1 / 3600, 1 / 3600]
    (tmp_path / "a").mkdir()
    fits.PrimaryHDU(np.zeros((32, 32), np.float32), w.to_header()).writeto(tmp_path / "a" / "img.fits")
    (tmp_path / "broken.fits").write_text("nope")
    result = run("archive", "index", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "indexed 1 images" in result.stdout and "skipped 1 files" in result.stdout
    assert result.stderr.count("WARNING") == 1 and "broken.fits: not a FITS file" in result.stderr
    assert [r.path for r in ArchiveIndex.load(tmp_path).records] == ["a/img.fits"]
    assert "1 read, 0 unchanged" not in result.stdout and "2 read, 0 unchanged, 0 removed" in result.stdout
    again = run("archive", "index", str(tmp_path))  # incremental: nothing changed, nothing is read
    assert "0 read, 2 unchanged, 0 removed" in again.stdout and "skipped 1 files (1 not FITS)" in again.stdout
    assert again.stderr.count("WARNING") == 0  # a skipped file is reported when it is read, not again
    (tmp_path / "broken.fits").unlink()
    fits.PrimaryHDU(np.ones((32, 32), np.float32), w.to_header()).writeto(tmp_path / "a" / "img.fits", overwrite=True)
    third = run("archive", "index", str(tmp_path))
    assert "1 read, 0 unchanged, 1 removed" in third.stdout and "indexed 1 images" in third.stdout
    out = tmp_path / "elsewhere" / "idx.sqlite"
    assert run("archive", "index", str(tmp_path), "--output", str(out)).returncode == 0
    assert ArchiveIndex.load(out).root == tmp_path.resolve()


def test_clear_errors_for_bad_arguments(tmp_path: Path) -> None:
    missing = run("archive", "index", str(tmp_path / "missing"))
    assert missing.returncode == 2 and "is not a directory" in missing.stderr
    no_settings = run("demo-archive", str(tmp_path / "demo"), "--settings", str(tmp_path / "none.toml"))
    assert no_settings.returncode == 2 and "no generator settings" in no_settings.stderr
    assert run("archive").returncode == 2


def test_serve_refuses_an_archive_without_index_and_bad_settings(tmp_path: Path) -> None:
    assert "--public-url" in run("serve", "--help").stdout
    result = run("serve", "--archive", str(tmp_path), "--state-dir", str(tmp_path / "state"))
    assert result.returncode == 2 and "no archive index" in result.stderr
    result = run("serve", "--archive", str(tmp_path), "--auth", "token")
    assert result.returncode == 2 and "tokens_file" in result.stderr
    (tmp_path / "siasync-index.sqlite").write_bytes(b"")  # an empty file, as a failed copy leaves
    result = run("serve", "--archive", str(tmp_path), "--state-dir", str(tmp_path / "state"))
    assert result.returncode == 2, result.stderr
    assert result.stderr == (f"siasync: {tmp_path / 'siasync-index.sqlite'} is not a readable archive index (no such "
                             "table: meta); re-run `siasync archive index`\n")


def test_serve_logs_job_events_and_errors_and_access_lines_only_when_asked() -> None:
    import logging
    import logging.config

    import pytest

    from siasync.cli import build_parser, log_config
    from siasync.settings import Settings

    assert build_parser().parse_args(["serve"]).access_log is None
    assert build_parser().parse_args(["serve", "--access-log"]).access_log is True
    assert Settings.from_env({}).access_log is False
    assert Settings.from_env({"SIASYNC_ACCESS_LOG": "true"}).access_log is True
    with pytest.raises(ValueError, match="SIASYNC_ACCESS_LOG"):
        Settings.from_env({"SIASYNC_ACCESS_LOG": "sometimes"})
    config = log_config()
    assert config["root"]["level"] == "WARNING" and config["loggers"]["siasync"]["level"] == "INFO"
    root, names = logging.getLogger(), ("siasync", "uvicorn", "uvicorn.access")
    saved = root.handlers[:], root.level, [logging.getLogger(n).level for n in names]
    logging.config.dictConfig(config)
    try:
        assert not logging.getLogger("reproject.common").isEnabledFor(logging.INFO)  # third-party chatter off
        assert logging.getLogger("siasync.uws.jobs").isEnabledFor(logging.INFO)
    finally:
        root.handlers[:], level, levels = saved
        root.setLevel(level)
        for name, old in zip(names, levels, strict=True):
            logging.getLogger(name).setLevel(old)
