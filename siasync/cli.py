"""The ``siasync`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

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

    archive = commands.add_parser("archive", help="manage the archive index")
    archive_commands = archive.add_subparsers(dest="archive_command", required=True, metavar="ACTION")
    index = archive_commands.add_parser("index", help="scan FITS files under DIR and write the index")
    index.add_argument("directory", type=Path, metavar="DIR", help="the archive root")
    index.add_argument("--output", type=Path, default=None,
                       help="index file (default: DIR/siasync-index.sqlite)")
    index.set_defaults(handler=_archive_index)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s: %(message)s", stream=sys.stderr)
    return args.handler(args)


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


def _archive_index(args: argparse.Namespace) -> int:
    from cutout.index import ArchiveIndex

    if not args.directory.is_dir():
        print(f"siasync: {args.directory} is not a directory", file=sys.stderr)
        return 2
    start = time.perf_counter()
    index, skipped = ArchiveIndex.build(args.directory)
    path = index.save(args.output)
    print(f"indexed {len(index)} images in {len(index.collections)} collections "
          f"({', '.join(index.collections) or 'none'}); skipped {len(skipped)} files; "
          f"wrote {path} in {time.perf_counter() - start:.1f} s")
    return 0
