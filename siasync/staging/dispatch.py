"""Sharing the worker pool among running jobs: small jobs first, owners in turn.

Every running job hands its planned batches to the `Dispatcher`, which keeps at most
`slots` of them in the pool: `SLOTS_PER_WORKER` per worker, so that each worker has
its next batches ready while the event loop is busy registering, and a newly arrived
job waits for at most two batches per worker (a fraction of a second). When a slot
frees up, the next batch is chosen at task granularity:

1. **Owners take turns** (round-robin): the slot goes to the owner, among those with
   work waiting, whose last grant is the oldest. Two users each get half the pool,
   however many jobs either has submitted.
2. **Within an owner, the least remaining work first**, so a 10-field job overtakes a
   10,000-field job and finishes within seconds.
3. **No starvation:** every `AGING`-th grant of an owner goes to its oldest waiting
   job instead, so a bulk job keeps at least 1/`AGING` of its owner's share however
   many small jobs arrive.

The same order is passed to the pool as a priority, which a Dask cluster honours.
With ``policy="fifo"`` batches go out in the order the jobs planned them instead, as a
plain shared queue would do (the baseline of bench/staging_bench.py).

The dispatcher also measures throughput: (field, image) pairs per second per worker (a
pair is one product for FITS, two for ``ALL``; a mosaic counts its inputs), as a moving average over the last
`WINDOW` batches, from the time each batch took on its worker. Costs and quotes are
counted in pairs too.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from dataclasses import dataclass, field

from siasync.staging.pool import TaskPool
from siasync.staging.worker import BatchTask, PairOutcome

AGING = 4
WINDOW = 64
SLOTS_PER_WORKER = 3
POLICIES = ("fair", "fifo")


@dataclass(eq=False)
class Ticket:
    """A running job's place in the dispatcher."""

    job_id: str
    owner: str
    #: pairs still to make (the estimate, counted down as batches finish)
    remaining: int
    order: int = 0
    queue: deque = field(default_factory=deque)


class Throughput:
    """Pairs per second per worker, over the last `WINDOW` batches (None before any)."""

    def __init__(self) -> None:
        self._batches: deque[tuple[int, float]] = deque(maxlen=WINDOW)

    def record(self, outcomes: list[PairOutcome]) -> None:
        seconds = sum(o.seconds for o in outcomes)
        if seconds > 0:
            self._batches.append((sum(o.pairs for o in outcomes), seconds))

    def per_worker(self) -> float | None:
        seconds = sum(s for _, s in self._batches)
        return sum(n for n, _ in self._batches) / seconds if seconds else None


class Dispatcher:
    """Feeds one `TaskPool` from the queues of the running jobs."""

    def __init__(self, pool: TaskPool, slots: int | None = None, policy: str = "fair") -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        self.pool = pool
        self.policy = policy
        self._slots = slots
        self.throughput = Throughput()
        self._tickets: dict[str, Ticket] = {}
        self._busy = 0
        self._order = itertools.count()
        self._arrivals = itertools.count()
        self._grants = itertools.count(1)
        self._last_grant: dict[str, int] = {}
        self._owner_grants: dict[str, int] = {}
        self._running: dict[asyncio.Future, object] = {}
        self._closed = False

    @property
    def slots(self) -> int:
        """Batches kept in the pool, unless given: a cluster's size is known once it starts."""
        return self._slots or SLOTS_PER_WORKER * self.pool.workers

    def open(self, job_id: str, owner: str, remaining: int) -> Ticket:
        """A ticket for a job that starts running."""
        ticket = self._tickets[job_id] = Ticket(job_id, owner, remaining, next(self._order))
        return ticket

    def close(self, ticket: Ticket) -> None:
        """The job stopped: forget it (its batches must have been withdrawn or finished)."""
        self._tickets.pop(ticket.job_id, None)

    def shutdown(self) -> None:
        """Send nothing more to the pool (the server is stopping)."""
        self._closed = True

    def submit(self, ticket: Ticket, task: BatchTask) -> asyncio.Future:
        """Queue a batch of the job; the future gives its outcomes (or `LostTask`)."""
        future = asyncio.get_running_loop().create_future()
        ticket.queue.append((task, future, next(self._arrivals)))
        self._pump()
        return future

    def withdraw(self, ticket: Ticket, future: asyncio.Future) -> bool:
        """Withdraw a batch that has not started on a worker; True if it will not run."""
        for item in ticket.queue:
            if item[1] is future:
                ticket.queue.remove(item)
                future.cancel()
                return True
        submission = self._running.get(future)
        return submission is not None and submission.cancel()

    def work_ahead(self, job_id: str, remaining: int) -> int:
        """Pairs of the other running jobs that this order serves before a job (those with less to do)."""
        return sum(t.remaining for t in self._tickets.values() if t.job_id != job_id and t.remaining < remaining)

    def _pick(self) -> Ticket | None:
        waiting = [t for t in self._tickets.values() if t.queue]
        if not waiting:
            return None
        if self.policy == "fifo":
            return min(waiting, key=lambda t: t.queue[0][2])
        owner = min({t.owner for t in waiting}, key=lambda o: (self._last_grant.get(o, 0), o))
        mine = [t for t in waiting if t.owner == owner]
        self._owner_grants[owner] = self._owner_grants.get(owner, 0) + 1
        if self._owner_grants[owner] % AGING == 0:
            return min(mine, key=lambda t: t.order)
        return min(mine, key=lambda t: (t.remaining, t.order))

    def _pump(self) -> None:
        while not self._closed and self._busy < self.slots and (ticket := self._pick()) is not None:
            task, future, _ = ticket.queue.popleft()
            self._last_grant[ticket.owner] = next(self._grants)
            self._busy += 1
            submission = self.pool.submit(task, priority=-ticket.remaining)
            self._running[future] = submission
            asyncio.ensure_future(self._finish(ticket, submission, future))

    async def _finish(self, ticket: Ticket, submission: object, future: asyncio.Future) -> None:
        try:
            outcomes = await submission
        except BaseException as exc:  # LostTask, or a withdrawn batch
            if not future.done():
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
        else:
            self.throughput.record(outcomes)
            ticket.remaining = max(0, ticket.remaining - sum(o.pairs for o in outcomes))
            if not future.done():
                future.set_result(outcomes)
        finally:
            self._busy -= 1
            self._running.pop(future, None)
            self._pump()
