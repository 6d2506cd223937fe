"""Races inside the job service: changes that land while a request is between two awaits.

WAIT long-polls and event streams read the job (an await, during which the job may
change) and then wait for a notification: a change during that read must wake them.
A phase change that fails because another one got there first must say which phase
the job is in now, though the store's cache may not show that change yet. A download
already answered must read whole though the job is destroyed before it is sent.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from siasync.errors import PermissionDenied
from siasync.uws.events import job_events
from siasync.uws.jobs import JobService, PhaseWatch
from siasync.uws.params import Limits
from siasync.web.download import file_response
from storage.files import ResultFiles
from storage.jobs import Job, JobStore

NOW = datetime.now(UTC)
RUNNING = Job(id="j", owner="o", run_id=None, phase="EXECUTING", creation_time=NOW, start_time=NOW, end_time=None,
              execution_duration=60, destruction=NOW, quote=None, start_after=None, error_type=None,
              error_message=None, parameters=[], spec={}, info={})


def test_a_notification_between_arming_and_waiting_is_not_lost() -> None:
    async def scenario() -> tuple[bool, bool]:
        watch = PhaseWatch()
        armed = watch.arm("j")
        watch.notify("j")  # while the waiter was reading the job
        woken = await watch.wait("j", 5.0, armed)
        quiet = await watch.wait("j", 0.01, watch.arm("j"))  # and a new arming waits for the next one
        return woken, quiet

    assert asyncio.run(asyncio.wait_for(scenario(), 2.0)) == (True, False)


class ChangingStore:
    """A store whose job is aborted while a reader awaits its first read (a DELETE or ABORT meanwhile)."""

    def __init__(self, watches: list[PhaseWatch]) -> None:
        self.watches, self.phase = watches, "EXECUTING"

    async def _change_once(self) -> None:
        await asyncio.sleep(0)
        if self.phase == "EXECUTING":
            self.phase = "ABORTED"
            for watch in self.watches:
                watch.notify("j")

    async def get(self, job_id: str) -> Job:
        job = replace(RUNNING, phase=self.phase)
        await self._change_once()  # the answer was read before the change
        return job

    async def results(self, job_id: str, after: int, limit: int) -> list:
        return []


def test_wait_returns_when_the_phase_changes_during_its_read(tmp_path: Path) -> None:
    limits = Limits(frozenset(), frozenset(), 10, 1.0, 60, 60, 60, 60)
    service = JobService(None, ResultFiles(tmp_path), limits, wait_max_s=30)
    service.store = ChangingStore([service.watch])

    async def scenario() -> str:
        return (await service.wait("j", "o", "30")).phase

    assert asyncio.run(asyncio.wait_for(scenario(), 2.0)) == "ABORTED"  # not after the 30 s WAIT


def test_the_event_stream_sends_a_phase_change_made_during_its_read() -> None:
    class Service:
        results_watch = PhaseWatch()
        store = ChangingStore([results_watch])

    async def phases() -> list[str]:
        return [m.data for m in [m async for m in job_events(Service, "j", 0, "http://x")] if m.event == "phase"]

    assert asyncio.run(asyncio.wait_for(phases(), 2.0)) == ['{"phase": "EXECUTING"}', '{"phase": "ABORTED"}']


def test_a_refused_abort_names_the_phase_the_store_holds_not_a_stale_cached_one(tmp_path: Path) -> None:
    """Another writer's change reaches the cache only when that writer resumes: here, never (a second store)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}"
    limits = Limits(frozenset(), frozenset(), 10, 1.0, 60, 60, 60, 60)

    async def scenario() -> tuple[str, str, str]:
        store, other = await JobStore.open(url), await JobStore.open(url)
        await store.create(RUNNING)
        assert await other.transition("j", ["EXECUTING"], "ABORTED")  # a DELETE got there first
        stale = (await store.get("j")).phase
        service = JobService(store, ResultFiles(tmp_path / "results"), limits, wait_max_s=30)
        try:
            await service.abort("j", "o")
        except PermissionDenied as exc:
            refused = exc.message
        after = (await store.get("j")).phase  # the fresh read refreshed the cache
        await store.close()
        await other.close()
        return stale, refused, after

    assert asyncio.run(scenario()) == ("EXECUTING", "cannot abort job j in phase ABORTED", "ABORTED")


def test_a_download_answered_reads_whole_though_its_file_is_deleted_before_it_is_sent(tmp_path: Path) -> None:
    path, data = tmp_path / "00000.x.fits", bytes(range(256)) * 4096  # several chunks

    class Request:
        headers: dict[str, str] = {}

    async def scenario() -> bytes:
        response = await file_response(Request, path, "image/fits", path.name)
        path.unlink()  # a DELETE of the job between the answer's headers and its body
        return b"".join([chunk async for chunk in response.iterator])

    path.write_bytes(data)
    assert asyncio.run(scenario()) == data
