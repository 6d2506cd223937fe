"""A throwaway PostgreSQL server: ``initdb`` into a fresh directory, ``postgres`` on a loopback port.

Used by the tests, the benchmarks and the local recipe (``make replicas``). It needs
PostgreSQL's server programs: Debian's ``postgresql`` package (``make test`` installs it
when missing, as root) or any installation whose ``initdb`` is on the PATH or under
``/usr/lib/postgresql/*/bin``. PostgreSQL refuses to run as root: as root, the server
runs as the ``postgres`` user the package creates, in a directory of its own under the
system's temporary directory. Everyone on the machine may connect over loopback without a
password (``trust``): this is a server for tests, never for data that matters.

    python -m deploy.postgres DIR     # start one, print its URL, stop it on Ctrl-C
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: settings for a server whose data does not matter: no waiting for the disk
FAST = ("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
USER = "siasync"


class PostgresMissing(RuntimeError):
    """No PostgreSQL server programs on this machine."""


def binaries() -> Path:
    """The directory of ``initdb`` and ``postgres``: on the PATH, or the newest under /usr/lib/postgresql."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if candidates:
        return Path(candidates[-1]).parent
    raise PostgresMissing("no PostgreSQL server found (initdb): install Debian's postgresql package "
                          "(apt-get install postgresql; `make test` does it as root) or put initdb on the PATH")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """One server; `start`, then `url(database)`, `create_database`, and `stop`."""

    def __init__(self, directory: Path | None = None, fast: bool = True) -> None:
        self.bin = binaries()
        self.root = os.geteuid() == 0
        if self.root:  # a directory the postgres user owns, outside any root-only (0700) one
            self.directory = Path(tempfile.mkdtemp(prefix="siasync-pg-"))
            self._user = pwd.getpwnam("postgres")
            os.chown(self.directory, self._user.pw_uid, self._user.pw_gid)
        else:
            self.directory = Path(directory or tempfile.mkdtemp(prefix="siasync-pg-"))
            self._user = None
        self.data = self.directory / "data"
        self.port = _free_port()
        self.fast = fast
        self.process: subprocess.Popen | None = None

    def _run_as(self) -> dict:
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []} if self._user else {}

    def start(self) -> Postgres:
        """Create the cluster and start the server; return once it accepts connections."""
        subprocess.run([str(self.bin / "initdb"), "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8",
                        "--no-locale", "--no-sync"], check=True, capture_output=True, cwd=self.directory,
                       **self._run_as())
        if self._user:
            (self.directory / "postgres.log").touch()
            os.chown(self.directory / "postgres.log", self._user.pw_uid, self._user.pw_gid)
        self._launch()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited: {(self.directory / 'postgres.log').read_text()[-2000:]}")
            ready = subprocess.run([str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                                   capture_output=True)
            if ready.returncode == 0:
                return self
            time.sleep(0.1)
        raise RuntimeError("postgres did not start")

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of a database of this server."""
        return f"postgresql+asyncpg://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database; its URL."""
        subprocess.run([str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, name],
                       check=True, capture_output=True)
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        shutil.rmtree(self.directory, ignore_errors=True)

    def kill(self) -> None:
        """Stop the server at once (SIGKILL of the postmaster and its children), keeping its data."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def restart(self) -> None:
        """Start the server again on the same data and port (after `kill`)."""
        (self.data / "postmaster.pid").unlink(missing_ok=True)
        self._launch()

    def _launch(self) -> None:
        with open(self.directory / "postgres.log", "ab") as log:
            self.process = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.directory),
                 "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300", *(FAST if self.fast else ())],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.directory, start_new_session=True, **self._run_as())


def main() -> int:
    """Start a server, print its URL, and stop it on Ctrl-C or SIGTERM."""
    server = Postgres(Path(sys.argv[1]) if len(sys.argv) > 1 else None, fast=False).start()
    print(server.url(), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        signal.pause()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
