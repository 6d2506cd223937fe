"""The dispatcher's order: owners in turn, the least remaining work first, and no starvation."""

from __future__ import annotations

import asyncio

import pytest

from siasync.staging.dispatch import AGING, Dispatcher
from siasync.staging.worker import BatchTask, PairOutcome


class ManualPool:
    """A pool of one slot that runs a batch only when the test says so; records the order."""

    workers = 1

    def __init__(self) -> None:
        self.started: list[tuple[str, int]] = []
        self._pending: list[asyncio.Future] = []

    def submit(self, task: BatchTask, priority: int = 0) -> asyncio.Future:
        self.started.append((task.job_id, priority))
        future = asyncio.get_running_loop().create_future()
        self._pending.append((future, task))
        return future

    async def finish_one(self) -> None:
        future, task = self._pending.pop(0)
        future.set_result([PairOutcome(0, task.job_id, products=[("x", 1, "image/fits", "0" * 64)], seconds=0.01)])
        for _ in range(5):
            await asyncio.sleep(0)


def batch(job_id: str) -> BatchTask:
    return BatchTask(job_id, "/tmp", "/", ())


def test_owners_take_turns_small_jobs_go_first_and_the_bulk_job_still_moves() -> None:
    async def scenario() -> tuple[list[str], float | None]:
        pool = ManualPool()
        dispatcher = Dispatcher(pool, slots=1)
        bulk = dispatcher.open("bulk", "alice", remaining=10_000)
        for _ in range(40):
            dispatcher.submit(bulk, batch("bulk"))
        await asyncio.sleep(0)
        small = dispatcher.open("small", "alice", remaining=10)
        other = dispatcher.open("other", "bob", remaining=50_000)
        for _ in range(10):
            dispatcher.submit(small, batch("small"))
        for _ in range(20):
            dispatcher.submit(other, batch("other"))
        for _ in range(30):
            await pool.finish_one()
        dispatcher.shutdown()
        return [job for job, _ in pool.started], dispatcher.throughput.per_worker()

    order, rate = asyncio.run(scenario())
    assert order[0] == "bulk"  # it started before the others arrived
    # bob's one job gets every other slot, however many jobs alice has
    assert order[1:31:2] == ["other"] * 15
    # alice's small job goes first, except every AGING-th of her grants, which go to her oldest job
    alice = [job for job in order if job != "other"]
    expected = ["bulk" if (i + 1) % AGING == 0 else "small" for i in range(1, 14)]
    assert alice[1:14] == expected
    assert rate == pytest.approx(100.0)  # one pair in 0.01 s of worker time


def test_withdrawn_batches_never_reach_the_pool_and_priorities_follow_the_remaining_work() -> None:
    async def scenario() -> tuple[list[tuple[str, int]], list[bool]]:
        pool = ManualPool()
        dispatcher = Dispatcher(pool, slots=1)
        big = dispatcher.open("big", "alice", remaining=500)
        futures = [dispatcher.submit(big, batch("big")) for _ in range(3)]
        withdrawn = [dispatcher.withdraw(big, f) for f in futures[1:]]
        small = dispatcher.open("small", "alice", remaining=5)
        dispatcher.submit(small, batch("small"))
        await pool.finish_one()
        await pool.finish_one()
        dispatcher.shutdown()
        return pool.started, withdrawn + [f.cancelled() for f in futures[1:]]

    started, withdrawn = asyncio.run(scenario())
    assert started == [("big", -500), ("small", -5)]
    assert all(withdrawn)


def test_the_fifo_policy_sends_batches_in_arrival_order() -> None:
    async def scenario() -> list[str]:
        pool = ManualPool()
        dispatcher = Dispatcher(pool, slots=1, policy="fifo")
        bulk = dispatcher.open("bulk", "alice", remaining=10_000)
        for _ in range(4):
            dispatcher.submit(bulk, batch("bulk"))
        small = dispatcher.open("small", "bob", remaining=1)
        dispatcher.submit(small, batch("small"))
        dispatcher.submit(bulk, batch("bulk"))
        for _ in range(5):
            await pool.finish_one()
        dispatcher.shutdown()
        return [job for job, _ in pool.started]

    assert asyncio.run(scenario()) == ["bulk"] * 4 + ["small", "bulk"]
