"""Result files: atomic writes, safe names, and no resurrection of a destroyed job."""

from __future__ import annotations

import threading
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


def test_a_write_racing_the_delete_leaves_nothing(tmp_path: Path) -> None:
    # a worker still writing while the job is destroyed: the directory must go all the same
    files = ResultFiles(tmp_path)
    directory = files.create("job1")
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            try:
                files.write("job1", f"{n:05d}.fits", b"x" * 2880)
            except FileNotFoundError:
                return
            n += 1

    for i in range(500):
        files.write("job1", f"old{i:04d}.fits", b"x")  # a tree that takes a while to remove
    thread = threading.Thread(target=writer)
    thread.start()
    files.delete("job1")
    stop.set()
    thread.join()
    assert not directory.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_deletion_cut_short_by_a_crash_is_finished_at_the_next_start(tmp_path: Path) -> None:
    files = ResultFiles(tmp_path)
    files.create("job1")
    files.write("job1", "a.fits", b"x")
    (tmp_path / "job1").rename(tmp_path / ".deleted-job1-0123abcd")  # the rename happened, the removal did not
    files.create("job2")
    assert files.purge_deleted() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["job2"]
