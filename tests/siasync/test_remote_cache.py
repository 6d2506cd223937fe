"""The download cache: once per key across processes, atomic, under its size limit, least recently used first."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from siasync.remote.cache import STALE_TEMPORARY_S, DownloadCache

KEY = "ab" + "0" * 62


def _key(i: int) -> str:
    return f"{i:064x}"


def _slow_fetch(root: str, key: str, log: str, start: float) -> str:
    """In another process: ask for ``key`` at ``start``; the fetch takes a while and writes in pieces."""
    cache = DownloadCache(root, 10**9)

    def fetch(path: Path) -> None:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        with open(path, "wb") as out:
            for _ in range(5):
                out.write(b"x" * 2880)
                out.flush()
                time.sleep(0.05)

    time.sleep(max(0.0, start - time.time()))
    path, hit = cache.get(key, fetch)
    return f"{path.read_bytes() == b'x' * 14400} {hit}"


def test_processes_asking_for_one_key_at_once_make_one_download(tmp_path: Path) -> None:
    log = tmp_path / "fetches.log"
    start = time.time() + 0.5
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        answers = pool.starmap(_slow_fetch, [(str(tmp_path / "cache"), KEY, str(log), start)] * 4)
    assert len(log.read_text().split()) == 1  # one download
    assert sorted(answers) == ["True False", "True True", "True True", "True True"]  # all whole; one fetched
    assert [p.name for p in (tmp_path / "cache" / "images" / "ab").iterdir()] == [f"{KEY}.fits"]  # no temporary


def test_a_failed_download_leaves_nothing_and_is_tried_again(tmp_path: Path) -> None:
    cache = DownloadCache(tmp_path, 10**6)

    def broken(path: Path) -> None:
        path.write_bytes(b"half")
        raise ConnectionError("cut")

    with pytest.raises(ConnectionError):
        cache.get(KEY, broken)
    assert not list((tmp_path / "images").rglob("*.fits"))
    path, hit = cache.get(KEY, lambda p: p.write_bytes(b"whole"))
    assert (path.read_bytes(), hit) == (b"whole", False)
    assert cache.get(KEY, broken) == (path, True)  # a hit never fetches


def test_the_least_recently_used_images_go_first_and_the_limit_holds(tmp_path: Path) -> None:
    cache = DownloadCache(tmp_path, 3000)
    paths = []
    for i in range(3):
        path, _ = cache.get(_key(i), lambda p: p.write_bytes(b"x" * 1000))
        os.utime(path, (time.time() - 100 + i, time.time() - 100 + i))  # 0 oldest, 2 newest
        paths.append(path)
    assert cache.get(_key(0), lambda p: None)[1]  # a hit renews image 0: image 1 is now the oldest
    cache.get(_key(3), lambda p: p.write_bytes(b"x" * 1000))
    assert [p.exists() for p in paths] == [True, False, True]
    assert cache.usage() == (3, 3000)
    big, _ = cache.get(_key(4), lambda p: p.write_bytes(b"x" * 5000))  # larger than the limit: kept until next time
    assert big.exists() and cache.usage() == (1, 5000)


def test_a_dead_downloads_temporary_file_is_removed_once_stale(tmp_path: Path) -> None:
    cache = DownloadCache(tmp_path, 10**6)
    folder = tmp_path / "images" / "ab"
    folder.mkdir(parents=True)
    stale, fresh = folder / ".tmp-dead.fits", folder / ".tmp-running.fits"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    old = time.time() - STALE_TEMPORARY_S - 10
    os.utime(stale, (old, old))
    cache.evict()
    assert not stale.exists() and fresh.exists()


def test_documents_are_kept_atomically_and_expire(tmp_path: Path) -> None:
    cache = DownloadCache(tmp_path, 10**6)
    cache.write_json("queries", "R/abc", [{"id": 1}])
    assert cache.read_json("queries", "R/abc", 60) == [{"id": 1}]
    path = tmp_path / "queries" / "R" / "abc.json"
    os.utime(path, (time.time() - 120, time.time() - 120))
    assert cache.read_json("queries", "R/abc", 60) is None
    assert cache.read_json("queries", "R/none", 60) is None
    with pytest.raises(ValueError, match="not a cache key"):
        cache.path("../../etc")
