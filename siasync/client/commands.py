"""The client's subcommands, ``siasync fetch`` and ``siasync jobs`` (their arguments are declared in `siasync.cli`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Coroutine
from typing import Any

import httpx

from siasync.client._async import AsyncClient, AsyncJob
from siasync.client._files import remembered_job
from siasync.client._models import ClientError, JobRef, JobStatus, ServiceError
from siasync.client.fetch import FetchProgress, fetch
from siasync.client.progress import ProgressPrinter, summary_line

#: job parameters that only a new job takes
_JOB_PARAMS = ("pos", "positions", "size", "format", "collection", "band", "mode", "param")
#: concurrent job documents fetched by ``siasync jobs``
JOBS_PARALLEL = 8


def _usage(message: str) -> int:
    print(f"siasync: error: {message}", file=sys.stderr)
    return 2


def _token(args: argparse.Namespace) -> str | None:
    return args.token or os.environ.get("SIASYNC_TOKEN") or None


def _quiet_http(args: argparse.Namespace) -> None:
    """httpx logs every request at INFO: show those only with ``--verbose``."""
    if not getattr(args, "verbose", False):
        logging.getLogger("httpx").setLevel(logging.WARNING)


def fetch_command(args: argparse.Namespace, transport: httpx.AsyncBaseTransport | None = None) -> int:
    """``siasync fetch``: create a job (or resume one) and download all of it into ``--out``."""
    _quiet_http(args)
    given = [f"--{name}" for name in _JOB_PARAMS if getattr(args, name)]
    held = remembered_job(args.out) if args.out.is_dir() else None
    if args.out.exists() and not args.out.is_dir():
        return _usage(f"--out {args.out} exists and is not a directory")
    if args.job is not None:
        if given:
            return _usage(f"--job resumes an existing job; leave out {', '.join(given)}")
        if args.base_url and "://" in args.job:
            return _usage("give --job as a URL, or BASE_URL with --job JOB_ID, not both")
        if not args.base_url and "://" not in args.job:
            return _usage(f"--job {args.job} is not a URL; give the job URL, or BASE_URL with --job JOB_ID")
    elif args.base_url:
        if not args.pos and not args.positions:
            return _usage("give the fields to stage with --pos RA,DEC (repeatable) or --positions FILE")
        if args.size is None and not args.positions:
            return _usage("--size DEG is required with --pos")
        if args.positions is not None and not args.positions.is_file():
            return _usage(f"--positions {args.positions}: no such file")
        if held is not None:
            return _usage(f"{args.out} holds the results of {held}; resume it with "
                          f"`siasync fetch --job {held} --out {args.out}`, or choose another --out")
    elif given:
        return _usage(f"{', '.join(given)} need BASE_URL, the service to create the job at")
    elif held is None:
        return _usage("give BASE_URL with --pos or --positions to create a job, or --job JOB_URL to resume one")
    return _run(_fetch(args, held, transport), f"; resume with: siasync fetch --out {args.out}")


async def _fetch(args: argparse.Namespace, held: str | None, transport: httpx.AsyncBaseTransport | None) -> int:
    base = args.base_url or (args.job if args.job and "://" in args.job else held or "").split("/async/")[0]
    async with AsyncClient(base, _token(args), transport=transport) as client:
        if args.job is None and args.base_url:
            extra = dict(args.param or ()) | ({"MODE": args.mode} if args.mode else {})
            job = await client.submit(args.pos or (), args.size, args.format, args.collection or (), args.band or (),
                                      args.positions, params=extra)
        else:
            job = client.job(args.job or held)  # type: ignore[arg-type]
            if (phase := await job.phase()) in ("PENDING", "HELD"):
                raise ClientError(f"job {job.url} is {phase}; start it first (POST PHASE=RUN to {job.url}/phase)")
        print(f"job {job.url}\n  (resume with: siasync fetch --job {job.url} --out {args.out})", file=sys.stderr)
        printer = ProgressPrinter()
        state = None
        try:
            state = await fetch(job, args.out, printer)
        finally:
            printer.close(state)
        print(summary_line(state))
        return await _conclude(job, state, args.delete)


async def _conclude(job: AsyncJob, state: FetchProgress, delete: bool) -> int:
    if state.failures:
        print(f"siasync: error: {len(state.failures)} files could not be downloaded (run again to retry); "
              f"first: {state.failures[0]}", file=sys.stderr)
        return 1
    if state.phase != "COMPLETED":
        status = await job.info()
        reason = f": {status.error}" if status.error else ""
        print(f"siasync: error: job {job.url} ended {state.phase}{reason}", file=sys.stderr)
        return 1
    if delete:
        await job.delete()
        print(f"deleted job {job.url}", file=sys.stderr)
    return 0


def jobs_command(args: argparse.Namespace, transport: httpx.AsyncBaseTransport | None = None) -> int:
    """``siasync jobs``: one line per job, with its phase and progress."""
    _quiet_http(args)
    return _run(_jobs(args, transport))


async def _jobs(args: argparse.Namespace, transport: httpx.AsyncBaseTransport | None) -> int:
    async with AsyncClient(args.base_url, _token(args), transport=transport) as client:
        refs = await client.jobs(args.phase or (), args.last)
        limit = asyncio.Semaphore(JOBS_PARALLEL)

        async def status(ref: JobRef) -> JobStatus | None:
            async with limit:
                try:
                    return await client.job(ref.url).info()
                except ServiceError as exc:
                    if exc.status == 404:  # destroyed since it was listed
                        return None
                    raise

        for ref, info in zip(refs, await asyncio.gather(*map(status, refs)), strict=True):
            if info is not None:
                print(job_line(ref, info))
    if not refs:
        print("no jobs", file=sys.stderr)
    return 0


def job_line(ref: JobRef, info: JobStatus) -> str:
    """``ID  PHASE  fields DONE/TOTAL  products N  created TIME``."""
    def number(value: int | None) -> str:
        return "-" if value is None else str(value)

    run_id = f"  run {ref.run_id}" if ref.run_id else ""
    return (f"{ref.id}  {info.phase:<9}  fields {number(info.fields_done)}/{number(info.fields_total)}  "
            f"products {number(info.products)}  created {ref.creation_time or '-'}{run_id}")


def _run(main: Coroutine[Any, Any, int], resume: str = "") -> int:
    """Run a command's coroutine; errors become one line and status 1, an interrupt status 130."""
    try:
        return asyncio.run(main)
    except (ClientError, OSError) as exc:
        print(f"siasync: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nsiasync: interrupted{resume}", file=sys.stderr)
        return 130

