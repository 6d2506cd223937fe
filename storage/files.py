"""Result files: one directory per job, written atomically, never recreated once deleted."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
#: prefix of a deleted job's directory while it is being removed (job ids never start with a dot)
_TRASH = ".deleted-"


class ResultFiles:
    """The ``results/`` tree of the state directory.

    A job's directory is created once, when the job starts executing. Writes go to a
    temporary name in that directory and are renamed into place, so a reader never
    sees a partial file; a write for a job whose directory is gone (destroyed) fails
    instead of recreating it.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def job_dir(self, job_id: str) -> Path:
        """The directory of a job (which may not exist)."""
        if not _SAFE_NAME.match(job_id):
            raise ValueError(f"unsafe job id {job_id!r}")
        return self.root / job_id

    def path(self, job_id: str, name: str) -> Path:
        """The path of a result file; refuses names that could leave the job's directory."""
        if not _SAFE_NAME.match(name) or ".." in name:
            raise ValueError(f"unsafe result name {name!r}")
        return self.job_dir(job_id) / name

    def create(self, job_id: str) -> Path:
        """Create the job's directory (idempotent)."""
        directory = self.job_dir(job_id)
        directory.mkdir(exist_ok=True)
        return directory

    def write(self, job_id: str, name: str, data: bytes) -> int:
        """Write a result atomically; return its size.

        Raises
        ------
        FileNotFoundError
            When the job's directory does not exist (the job was destroyed).
        """
        write_atomically(self.path(job_id, name), data)
        return len(data)

    def remove_temporaries(self, job_id: str) -> int:
        """Delete stray temporary files left by an interrupted write; return how many."""
        directory = self.job_dir(job_id)
        stray = list(directory.glob(".tmp-*")) if directory.is_dir() else []
        for path in stray:
            path.unlink(missing_ok=True)
        return len(stray)

    def delete(self, job_id: str) -> None:
        """Delete every file of a job.

        The directory is first renamed out of the way, atomically: a worker still writing into
        it then fails (its directory is gone) instead of adding a file while the tree is removed,
        which would leave the directory behind.
        """
        trash = self.detach(job_id)
        if trash is not None:
            self.remove(trash)

    def detach(self, job_id: str) -> Path | None:
        """Rename a job's directory out of the way (one system call, cheap enough for an event loop): from here
        on the job has no directory for readers or writers. The renamed tree, for `remove`; None if none."""
        trash = self.root / f"{_TRASH}{self.job_dir(job_id).name}-{secrets.token_hex(4)}"
        try:
            os.rename(self.job_dir(job_id), trash)
        except FileNotFoundError:
            return None
        return trash

    @staticmethod
    def remove(trash: Path) -> None:
        """Remove a tree `detach` renamed away."""
        shutil.rmtree(trash, ignore_errors=True)

    def purge_deleted(self) -> int:
        """Remove what deletions interrupted by a crash left; return how many directories."""
        leftovers = [p for p in self.root.glob(f"{_TRASH}*") if p.is_dir()]
        for path in leftovers:
            shutil.rmtree(path, ignore_errors=True)
        return len(leftovers)


@contextmanager
def replacing(target: Path, suffix: str = "") -> Iterator[Path]:
    """A temporary file beside ``target`` (named ``.tmp-*``) to fill in the block, renamed onto ``target`` when
    the block ends, removed when it fails: a reader sees the old file or the whole new one.

    Raises
    ------
    FileNotFoundError
        When ``target``'s directory does not exist.
    """
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomically(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically (`replacing`)."""
    with replacing(target) as tmp:
        tmp.write_bytes(data)
