"""The scheduler when the job store's disk is full: no job is left waiting for good, no runner is lost.

The store is real (SQLite in a temporary directory); while ``full`` is set, every phase
change it is asked for fails as a full disk makes it fail (`StoreFull`). The pool is a
stand-in that answers each pair at once without cutting.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from siasync.app import limits_for
from siasync.settings import Settings
from siasync.staging import scheduler as scheduling
from siasync.staging.scheduler import Scheduler
from siasync.staging.worker import BatchTask, PairOutcome
from siasync.uws.jobs import JobService
from storage.files import ResultFiles
from storage.jobs import JobStore, StoreFull
from storage.runners import Runners


class Answered:
    def __init__(self, task: BatchTask) -> None:
        self.task = task

    def cancel(self) -> bool:
        return False

    def __await__(self):
        return self._outcomes().__await__()

    async def _outcomes(self) -> list[PairOutcome]:
        return [PairOutcome(p.field_index, p.record.id, problem="skipped") for p in self.task.pairs]


class InstantPool:
    workers = 1
    sharing = 1
    problem = None

    async def start(self) -> None:
        pass

    def submit(self, task: BatchTask, priority: int = 0) -> Answered:
        return Answered(task)

    async def close(self) -> None:
        pass


def test_a_job_whose_start_cannot_be_recorded_ends_in_error_and_the_runner_goes_on(
        tmp_path: Path, demo_archive: Path, demo_index, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scheduling, "RECORD_EVERY", 0.05)
    full = {"on": False}

    async def scenario() -> tuple[str, str, str | None, str]:
        store = await JobStore.open(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}")
        transition = store.transition

        async def refused_while_full(*args: object, **changes: object) -> bool:
            if full["on"]:
                raise StoreFull("the job store's disk is full")
            return await transition(*args, **changes)

        store.transition = refused_while_full
        limits = limits_for(Settings(archive=demo_archive, state_dir=tmp_path), demo_index)
        service = JobService(store, ResultFiles(tmp_path / "results"), limits, 30, demo_index)
        # one runner: losing it stops all
        runner = Scheduler(service, demo_index, InstantPool(), max_jobs=1, runners=Runners(store, "local"))
        service.executor = runner
        await runner.start()
        try:
            params = [("POS", "150.1,2.2"), ("SIZE", "0.01"), ("PHASE", "RUN")]
            full["on"] = True
            stuck = await service.create("alice", params)  # stored before the disk filled; cannot start
            await asyncio.sleep(0.3)
            while_full = (await store.get(stuck.id)).phase
            full["on"] = False  # space returns: its error is recorded
            for _ in range(100):
                if (await store.get(stuck.id)).phase != "QUEUED":
                    break
                await asyncio.sleep(0.05)
            failed = await store.get(stuck.id)
            after = await service.create("alice", params)
            for _ in range(100):
                if (await store.get(after.id)).phase == "COMPLETED":
                    break
                await asyncio.sleep(0.05)
            return while_full, failed.phase, failed.error_message, (await store.get(after.id)).phase
        finally:
            await runner.close()
            await store.close()

    while_full, phase, message, after = asyncio.run(scenario())
    assert while_full == "QUEUED" and phase == "ERROR" and "disk is full" in message
    assert after == "COMPLETED"
