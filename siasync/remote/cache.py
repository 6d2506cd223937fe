"""The download cache: remote images on disk, fetched once, shared by jobs, worker processes and servers.

Layout under the cache root (``REMOTE_CACHE``, by default ``STATE_DIR/remote-cache``; servers
that share a state directory share it)::

    images/ab/abcdef....fits     one file per remote image, named by its key
    queries/NAME/0123....json    answers of remote queries (see `siasync.remote.catalog`)
    ids/IMAGE.json               remote images named in synchronous query answers, by id
    locks/abc.lock               flock(2) stripes: one download of a key at a time, everywhere

**Once.** A file appears under its name only complete (written as ``.tmp-*`` beside it and
renamed); whoever wants a missing key takes its lock stripe, looks again, and only then
downloads, so two workers (in any process, on any server sharing the directory) asking for
the same image at once make one download.

**Size limit.** After each download, the least recently used files (a hit renews a file's
modification time) are deleted until the images fit in ``max_bytes``; the file just fetched
is kept. A reader that opened a file keeps its bytes when another process deletes it
(POSIX), and a reader that finds it gone between the lookup and the open asks again.
Temporary files left by a process that died mid-download are removed once an hour old, and
query answers and remembered ids once a week old.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from storage.files import replacing, write_atomically

#: a temporary file older than this (seconds) belongs to a download that died
STALE_TEMPORARY_S = 3600.0
#: query answers older than this (seconds) are deleted when the cache is tidied
STALE_DOCUMENT_S = 7 * 86400.0


class DownloadCache:
    """Remote images on disk, under a size limit.

    Parameters
    ----------
    root : path-like
        The cache directory (created if missing).
    max_bytes : int
        The most bytes the images may take together.
    """

    def __init__(self, root: str | os.PathLike, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.images = self.root / "images"

    def path(self, key: str) -> Path:
        """Where the image of ``key`` (a hexadecimal digest) is kept."""
        if len(key) < 16 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"not a cache key: {key!r}")
        return self.images / key[:2] / f"{key}.fits"

    def get(self, key: str, fetch: Callable[[Path], None]) -> tuple[Path, bool]:
        """The file of ``key``, and whether it was there already (a hit).

        When it is missing, ``fetch(path)`` must write the whole image to ``path`` (a temporary
        file, renamed into place once ``fetch`` returns) or raise; it is called at most once
        for a key at a time, whoever asks.
        """
        target = self.path(key)
        if _renew(target):
            return target, True
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._locked(key):
            if _renew(target):  # fetched by another worker while this one waited
                return target, True
            with replacing(target, suffix=".fits") as tmp:
                fetch(tmp)
        self.evict(keep=target)
        return target, False

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        """The lock stripe of a key: an exclusive flock, released when the process ends however it ends."""
        locks = self.root / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{key[:3]}.lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def evict(self, keep: Path | None = None) -> int:
        """Delete the least recently used images until they fit in the limit; return how many were deleted.

        One process evicts at a time; another that finds it busy leaves the work to it.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".evict.lock", "a+b") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0
            files, total, now = [], 0, time.time()
            for path in self.images.glob("*/*"):
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                if path.name.startswith(".tmp-"):
                    if now - stat.st_mtime > STALE_TEMPORARY_S:
                        path.unlink(missing_ok=True)
                    continue
                files.append((stat.st_mtime_ns, path, stat.st_size))
                total += stat.st_size
            for path in [*self.root.glob("queries/*/*.json"), *self.root.glob("ids/*.json")]:
                with contextlib.suppress(FileNotFoundError):
                    if now - path.stat().st_mtime > STALE_DOCUMENT_S:
                        path.unlink()
            deleted = 0
            for _, path, size in sorted(files, key=lambda f: f[:2]):
                if total <= self.max_bytes:
                    break
                if path == keep:
                    continue
                path.unlink(missing_ok=True)
                total -= size
                deleted += 1
            return deleted

    def usage(self) -> tuple[int, int]:
        """(images, bytes) held now."""
        sizes = [p.stat().st_size for p in self.images.glob("*/*.fits") if not p.name.startswith(".tmp-")]
        return len(sizes), sum(sizes)

    # -- small JSON documents: remote query answers ---------------------------------------------

    def read_json(self, kind: str, key: str, max_age_s: float) -> Any | None:
        """A document written by `write_json` no longer than ``max_age_s`` ago, or None."""
        path = self.root / kind / f"{key}.json"
        try:
            if time.time() - path.stat().st_mtime > max_age_s:
                return None
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def write_json(self, kind: str, key: str, data: Any) -> None:
        """Keep a document atomically (a reader sees the old one or the new one)."""
        path = self.root / kind / f"{key}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps(data).encode())


def _renew(path: Path) -> bool:
    """Mark a cached file as just used; False when it is not there."""
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    return True
