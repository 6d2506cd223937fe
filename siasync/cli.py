"""The ``siasync`` command line."""

from __future__ import annotations

import argparse
import logging
import logging.config
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from siasync.vocabulary import FORMATS, MODES, PHASES

#: The committed generator settings, found next to the source tree of a checkout.
DEFAULT_DEMO_SETTINGS = Path(__file__).resolve().parents[1] / "data" / "demo-survey.toml"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="siasync", description="Asynchronous image staging for survey astronomy (SIAP 1.0 + UWS 1.1).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo-archive", help="generate the synthetic demo survey archive")
    demo.add_argument("directory", type=Path, metavar="DIR", help="where to write the archive")
    demo.add_argument("--settings", type=Path, default=DEFAULT_DEMO_SETTINGS,
                      help="generator settings (default: %(default)s)")
    demo.add_argument("--workers", type=int, default=None, help="rendering processes (default: cores)")
    demo.set_defaults(handler=_demo_archive)

    serve = commands.add_parser("serve", help="run the HTTP service (settings also from SIASYNC_* variables)")
    serve.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument("--archive", type=Path, help="archive directory with its index (default data/demo)")
    serve.add_argument("--state-dir", type=Path, help="jobs database and result files (default ./var)")
    serve.add_argument("--public-url", help="external base URL for absolute links")
    serve.add_argument("--database-url", help="SQLAlchemy URL of the job store (default SQLite in the state dir)")
    serve.add_argument("--auth", choices=["anonymous", "token", "header"], help="how owners are identified")
    serve.add_argument("--tokens-file", type=Path, help="bearer tokens, one 'TOKEN OWNER' per line")
    serve.add_argument("--workers", type=int, help="worker processes that cut (default: the core count)")
    serve.add_argument("--executor", help="local (default), dask-local[:N] or dask://HOST:PORT")
    serve.add_argument("--access-log", action="store_const", const=True, default=None,
                       help="log a line per HTTP request (default: a line per job event and per error only)")
    serve.set_defaults(handler=_serve)

    archive = commands.add_parser("archive", help="manage the archive index")
    archive_commands = archive.add_subparsers(dest="archive_command", required=True, metavar="ACTION")
    index = archive_commands.add_parser("index", help="scan FITS files under DIR and write the index")
    index.add_argument("directory", type=Path, metavar="DIR", help="the archive root")
    index.add_argument("--output", type=Path, default=None,
                       help="index file (default: DIR/siasync-index.sqlite)")
    index.add_argument("--workers", type=int, default=None, help="processes that read files (default: cores)")
    index.add_argument("--full", action="store_true",
                       help="read every file again, even those unchanged since the last index")
    index.set_defaults(handler=_archive_index)

    fetch = commands.add_parser(
        "fetch", help="create a job (or resume one) and download every result as it appears",
        description="Create and run a job at BASE_URL, or resume one with --job (or from --out DIR alone), and "
                    "download each result into DIR as soon as it is made, then the SIAP table as DIR/table.xml.")
    fetch.add_argument("base_url", nargs="?", metavar="BASE_URL", help="the service, e.g. http://127.0.0.1:8000")
    fetch.add_argument("--pos", action="append", type=_position, metavar="RA,DEC",
                       help="a field centre in ICRS degrees (repeatable)")
    fetch.add_argument("--positions", type=Path, metavar="FILE", help="a CSV or VOTable of positions, uploaded")
    fetch.add_argument("--size", type=_size, metavar="DEG", help="field size in degrees: S or W,H")
    fetch.add_argument("--format", type=_format, help=f"one of {', '.join(FORMATS)} (default image/fits)")
    fetch.add_argument("--collection", action="append", type=_word, help="only this collection (repeatable)")
    fetch.add_argument("--band", action="append", type=_word, help="only this band (repeatable)")
    fetch.add_argument("--mode", choices=MODES, help="cutout (the default), mosaic (a co-add per band) or stack "
                                                     "(every band on one grid, with a colour preview)")
    fetch.add_argument("--param", action="append", type=_param, metavar="NAME=VALUE",
                       help="another job parameter, e.g. NAXIS=512 or COMBINE=median (repeatable)")
    fetch.add_argument("--out", type=Path, required=True, metavar="DIR", help="where the files go")
    fetch.add_argument("--job", type=_word, metavar="JOB_URL", help="resume this job instead of creating one")
    fetch.add_argument("--delete", action="store_true", help="destroy the job once everything is downloaded")
    fetch.add_argument("--token", type=_word, help="bearer token (default: $SIASYNC_TOKEN)")
    fetch.set_defaults(handler=_fetch)

    jobs = commands.add_parser("jobs", help="list the jobs at a service with their phase and progress")
    jobs.add_argument("base_url", metavar="BASE_URL", help="the service, e.g. http://127.0.0.1:8000")
    jobs.add_argument("--phase", action="append", type=str.upper, choices=PHASES, metavar="PHASE",
                      help=f"only jobs in this phase (repeatable): {', '.join(PHASES)}")
    jobs.add_argument("--last", type=_count, metavar="N", help="only the newest N jobs")
    jobs.add_argument("--token", type=_word, help="bearer token (default: $SIASYNC_TOKEN)")
    jobs.set_defaults(handler=_jobs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    logging.config.dictConfig(log_config(args.verbose))
    return args.handler(args)


def log_config(verbose: bool = False) -> dict:
    """One concise line per message on stderr: siasync's own at INFO (DEBUG with ``-v``), uvicorn's start-up and
    (when asked for) access lines, and only the warnings of every other library (reproject, astropy, Dask)."""
    return {"version": 1, "disable_existing_loggers": False,
            "formatters": {"line": {"format": "%(asctime)s %(levelname)s %(message)s", "datefmt": "%Y-%m-%d %H:%M:%S"}},
            "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "line", "stream": "ext://sys.stderr"}},
            "root": {"level": "WARNING", "handlers": ["stderr"]},
            "loggers": {"siasync": {"level": "DEBUG" if verbose else "INFO"}, "uvicorn": {"level": "INFO"},
                        "uvicorn.access": {"level": "INFO"},
                        # Dask installs its own INFO handler when imported: its warnings go through ours instead
                        "distributed": {"level": "WARNING", "handlers": [], "propagate": True}}}


def _demo_archive(args: argparse.Namespace) -> int:
    from cutout.demo import generate_archive

    if not args.settings.is_file():
        print(f"siasync: no generator settings at {args.settings}; pass --settings FILE", file=sys.stderr)
        return 2
    start = time.perf_counter()
    summary = generate_archive(args.directory, args.settings, workers=args.workers)
    print(f"wrote {summary['images']} images ({summary['bytes'] / 1e6:.1f} MB, "
          f"{summary['sources']} catalogue sources) to {args.directory} "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from siasync.settings import Settings

    try:
        settings = Settings.from_env(host=args.host, port=args.port, archive=args.archive, state_dir=args.state_dir,
                                     public_url=args.public_url, database_url=args.database_url, auth=args.auth,
                                     tokens_file=args.tokens_file, workers=args.workers, executor=args.executor,
                                     access_log=args.access_log)
    except ValueError as exc:
        print(f"siasync: {exc}", file=sys.stderr)
        return 2
    if settings.sqlite:  # a state directory another server serves: say so before anything starts
        from storage.guard import StateLock, StateLocked

        try:
            StateLock(settings.state_dir).probe()
        except StateLocked as exc:
            print(f"siasync: {exc}", file=sys.stderr)
            return 2
    if not (settings.archive / "siasync-index.sqlite").is_file():
        print(f"siasync: no archive index in {settings.archive}; run `siasync archive index {settings.archive}`",
              file=sys.stderr)
        return 2
    from cutout.errors import ArchiveError  # numpy and astropy: only once the quick refusals are past
    from cutout.index import check_index
    from siasync.remote.config import RemoteConfigError, load_remotes

    try:  # a damaged index, or a mistake in the remote collections' file, stops the server before it starts
        check_index(settings.archive)
        load_remotes(settings.archive)
    except (ArchiveError, RemoteConfigError) as exc:
        print(f"siasync: {exc}", file=sys.stderr)
        return 2
    if settings.executor == "local":
        _start_forkserver()
    else:
        import distributed  # noqa: F401 - configures its logging when imported: configure ours over it

        logging.config.dictConfig(log_config(args.verbose))
    import uvicorn

    from siasync.app import create_app

    # the logging configured in `main` is kept (log_config None); uvicorn's access lines only when asked for
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None,
                access_log=settings.access_log)
    return 0


def _start_forkserver() -> None:
    """Start the local pool's forkserver first, so that it imports the worker module while this process imports
    the service: on two cores a (re)start takes a second less."""
    from multiprocessing import forkserver

    forkserver.set_forkserver_preload(["siasync.staging.worker"])
    forkserver.ensure_running()


def _archive_index(args: argparse.Namespace) -> int:
    from cutout.index import INDEX_NAME, ArchiveIndex

    if not args.directory.is_dir():
        print(f"siasync: {args.directory} is not a directory", file=sys.stderr)
        return 2
    target = args.output or args.directory / INDEX_NAME
    previous = None
    if target.is_file() and not args.full:
        try:
            previous = ArchiveIndex.load(target)
        except Exception as exc:  # an index of an older schema, or damaged: read everything
            print(f"siasync: reading every file again ({exc})", file=sys.stderr)
    bar = _ProgressBar(sys.stderr) if sys.stderr.isatty() else None
    index, _ = ArchiveIndex.build(args.directory, previous=previous, workers=args.workers,
                                  progress=bar.update if bar else None)
    if bar:
        bar.close()
    path = index.save(target)
    print(f"indexed {len(index)} images in {len(index.collections)} collections "
          f"({', '.join(index.collections) or 'none'}); wrote {path}")
    print(index.report.summary())
    return 0


class _ProgressBar:
    """A one-line progress bar on a terminal: files scanned of all, and the rate."""

    def __init__(self, stream) -> None:
        self.stream, self.start, self.last, self.ended = stream, time.perf_counter(), 0.0, False

    def update(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if self.ended or (now - self.last < 0.1 and done < total):
            return
        self.last = now
        width = 30
        filled = int(width * done / total) if total else width
        rate = done / (now - self.start) if now > self.start else 0.0
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} files, {rate:.0f}/s ")
        if done >= total:  # the line ends before the skipped files are reported
            self.stream.write("\n")
            self.ended = True
        self.stream.flush()

    def close(self) -> None:
        if not self.ended:
            self.stream.write("\n")
            self.ended = True
        self.stream.flush()


def _fetch(args: argparse.Namespace) -> int:
    from siasync.client.commands import fetch_command

    return fetch_command(args)


def _jobs(args: argparse.Namespace) -> int:
    from siasync.client.commands import jobs_command

    return jobs_command(args)


def _numbers(text: str, count: tuple[int, ...], what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in count or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return values


def _position(text: str) -> tuple[float, float]:
    """``--pos RA,DEC``: RA in [0, 360), Dec in [-90, 90]."""
    ra, dec = _numbers(text, (2,), "RA,DEC in degrees")
    if not (0 <= ra < 360 and -90 <= dec <= 90):
        raise argparse.ArgumentTypeError(f"expected RA in [0, 360) and Dec in [-90, 90], got {text!r}")
    return ra, dec


def _size(text: str) -> float | tuple[float, float]:
    """``--size S`` or ``W,H``, positive degrees."""
    values = _numbers(text, (1, 2), "a size in degrees: S or W,H")
    if min(values) <= 0:
        raise argparse.ArgumentTypeError(f"the size must be positive, got {text!r}")
    return values[0] if len(values) == 1 else (values[0], values[1])


def _format(text: str) -> str:
    """``--format``, case-insensitive."""
    for name in FORMATS:
        if name.lower() == text.strip().lower():
            return name
    raise argparse.ArgumentTypeError(f"expected one of {', '.join(FORMATS)}, got {text!r}")


def _param(text: str) -> tuple[str, str]:
    """``NAME=VALUE``."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip().upper(), value.strip()


def _word(text: str) -> str:
    """A non-empty value."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text.strip()


def _count(text: str) -> int:
    """A positive integer."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)
