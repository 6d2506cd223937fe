"""The same batches on a Dask distributed cluster: an existing one, or a LocalCluster we start.

Workers run `siasync.staging.worker.run_batch` exactly as the local pool does: they read the
archive and write each product into the shared state directory themselves, so only
the small outcome records travel back through the scheduler, never the bytes.

* **Order.** The dispatcher keeps only a few batches per worker in the cluster
  and passes its order as Dask's task priority.
* **Share.** `DaskPool.workers` follows the cluster's worker threads, counted every
  `CHECK_EVERY` seconds, divided among the servers sharing the cluster (`DaskPool.sharing`):
  each server keeps its share of the cluster busy, and the share grows and shrinks with it.
* **Stopping.** A Dask task cannot be withdrawn reliably once the scheduler has it (it
  may already run), so `cancel` says no and the scheduler discards the batch's files
  when it returns. Abort still stops within a batch per worker: the rest of the job
  never left the dispatcher.
* **Losses.** Dask reruns the tasks of a lost worker itself; a task that keeps killing
  workers (``KilledWorker``) is reported as `LostTask`, which the scheduler submits again
  a few times. A lost scheduler cancels every task in flight: those are reported as
  `ExecutorDown`, `DaskPool.problem` says why, and the client connects again (a new one
  once Dask's own gives up) until a scheduler answers at the address; the scheduler then
  sends the batches again. A rerun writes the same file names again, and products are
  registered only once, when a batch returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from distributed import Client, LocalCluster
from distributed.client import FutureCancelledError
from distributed.comm.core import CommClosedError
from distributed.scheduler import KilledWorker

from siasync.staging.pool import ExecutorDown, LostTask, cancel_all
from siasync.staging.worker import BatchTask, PairOutcome, run_batch

log = logging.getLogger(__name__)

#: seconds between looks at the cluster: is the scheduler there, how many worker threads has it
CHECK_EVERY = 1.0
#: seconds one look (or one attempt to connect) may take
CHECK_TIMEOUT = 5.0


class _DaskSubmission:
    def __init__(self, pool: DaskPool, future: Any) -> None:
        self._pool, self._future = pool, future

    def cancel(self) -> bool:
        return False

    def __await__(self):
        return self._result().__await__()

    async def _result(self) -> list[PairOutcome]:
        if self._future is None:
            raise ExecutorDown(self._pool.problem or "the Dask scheduler cannot be reached")
        try:
            return await self._future
        except KilledWorker as exc:
            raise LostTask(f"the Dask cluster lost the batch: {exc}") from exc
        except FutureCancelledError as exc:
            if exc.reason == "scheduler-connection-lost" or self._pool.problem is not None:
                raise ExecutorDown(f"the Dask scheduler was lost: {exc.reason}") from exc
            raise LostTask(f"the Dask cluster lost the batch: {exc}") from exc
        except (CommClosedError, OSError) as exc:
            raise ExecutorDown(f"the Dask scheduler was lost: {exc}") from exc


class DaskPool:
    """Batches on a Dask cluster: ``address`` (``tcp://host:port``), or ``local_workers`` processes here."""

    def __init__(self, address: str | None = None, local_workers: int = 1) -> None:
        self.address = address
        self.threads = local_workers
        self.sharing = 1
        self.problem: str | None = None
        self._cluster: Any = None
        self._client: Any = None
        self._watch: asyncio.Task | None = None

    @property
    def workers(self) -> int:
        """This server's share of the cluster's worker threads (at least one)."""
        shared = self.sharing if self.address is not None else 1  # a LocalCluster is this server's own
        return max(1, round(self.threads / shared))

    async def start(self) -> None:
        """Connect (starting the LocalCluster first, for a local one); count the worker threads."""
        if self.address is None:
            self._cluster = await LocalCluster(n_workers=self.threads, threads_per_worker=1, processes=True,
                                               dashboard_address=None, asynchronous=True)
        self._client = await Client(self.address or self._cluster, asynchronous=True)
        if self.address is not None:
            await self._client.wait_for_workers(1)
            await self._count()
            self._watch = asyncio.create_task(self._watch_cluster(), name="dask-watch")

    def submit(self, task: BatchTask, priority: int = 0) -> _DaskSubmission:
        """Queue a batch on the cluster; a higher priority runs first."""
        if self.problem is not None or self._client.status != "running":
            return _DaskSubmission(self, None)
        return _DaskSubmission(self, self._client.submit(run_batch, task, pure=False, priority=priority))

    async def close(self) -> None:
        """Disconnect, and stop the LocalCluster we started."""
        if self._watch is not None:
            await cancel_all([self._watch])
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()
        if self._cluster is not None:
            await self._cluster.close()

    async def _count(self) -> None:
        """Count the cluster's worker threads now."""
        async with asyncio.timeout(CHECK_TIMEOUT):
            threads = sum((await self._client.nthreads()).values())
        if not threads:
            raise OSError("the Dask cluster has no workers")
        self.threads = threads

    async def _watch_cluster(self) -> None:
        """Follow the scheduler and the cluster's size; connect a new client when Dask's own gives up."""
        while True:
            await asyncio.sleep(CHECK_EVERY)
            try:
                if self._client.status in ("closing", "closed", "failed"):
                    with contextlib.suppress(Exception):
                        await self._client.close()
                    async with asyncio.timeout(2 * CHECK_TIMEOUT):
                        self._client = await Client(self.address, asynchronous=True, timeout=CHECK_TIMEOUT)
                if self._client.status != "running":
                    raise OSError(f"connecting again ({self._client.status})")
                await self._count()
            except (OSError, TimeoutError, CommClosedError) as exc:
                if self.problem is None:
                    log.error("the Dask scheduler at %s cannot be used: %s", self.address, exc)
                self.problem = f"the Dask scheduler at {self.address} cannot be used: {exc or type(exc).__name__}"
                continue
            if self.problem is not None:
                log.warning("the Dask scheduler at %s answers again, with %d worker threads", self.address,
                            self.threads)
                self.problem = None
