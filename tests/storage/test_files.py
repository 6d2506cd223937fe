"""Result files: atomic writes, safe names, and no resurrection of a destroyed job."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.files import ResultFiles


def test_writes_are_atomic_and_listed_only_complete(tmp_path: Path) -> None:
    files = ResultFiles(tmp_path / "results")
    files.create("job1")
    assert files.write("job1", "a.fits", b"x" * 5000) == 5000
    assert files.path("job1", "a.fits").read_bytes() == b"x" * 5000
    assert [p.name for p in files.job_dir("job1").iterdir()] == ["a.fits"]  # no temporary left


def test_a_destroyed_job_is_never_recreated(tmp_path: Path) -> None:
    files = ResultFiles(tmp_path)
    files.create("job1")
    files.delete("job1")
    with pytest.raises(FileNotFoundError):
        files.write("job1", "late.fits", b"late")
    assert not files.job_dir("job1").exists()


@pytest.mark.parametrize("name", ["../x", "..", ".hidden", "a/b", "/etc/passwd", "a\x00b", "x" * 300, ""])
def test_unsafe_names_are_refused(tmp_path: Path, name: str) -> None:
    files = ResultFiles(tmp_path)
    with pytest.raises(ValueError):
        files.path("job1", name)
    with pytest.raises(ValueError):
        files.job_dir(name)


def test_stray_temporaries_are_removed(tmp_path: Path) -> None:
    files = ResultFiles(tmp_path)
    directory = files.create("job1")
    (directory / ".tmp-abc").write_bytes(b"partial")
    files.write("job1", "ok.png", b"png")
    assert files.remove_temporaries("job1") == 1
    assert [p.name for p in directory.iterdir()] == ["ok.png"]
