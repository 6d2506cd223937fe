"""The same batches on a Dask distributed cluster: an existing one, or a LocalCluster we start.

Workers run `siasync.staging.worker.run_batch` exactly as the local pool does: they read the
archive and write each product into the shared state directory themselves, so only
the small outcome records travel back through the scheduler, never the bytes.

* **Order.** The dispatcher keeps only a few batches per worker in the cluster
  and passes its order as Dask's task priority.
* **Stopping.** A Dask task cannot be withdrawn reliably once the scheduler has it (it
  may already run), so `cancel` says no and the scheduler discards the batch's files
  when it returns. Abort still stops within a batch per worker: the rest of the job
  never left the dispatcher.
* **Losses.** Dask reruns the tasks of a lost worker itself; a task that keeps killing
  workers (``KilledWorker``) or a lost scheduler is reported as `LostTask`, which the
  scheduler submits again a few times. A rerun writes the same file names again, and
  products are registered only once, when a batch returns.
"""

from __future__ import annotations

from typing import Any

from distributed import Client, LocalCluster
from distributed.client import FutureCancelledError
from distributed.scheduler import KilledWorker

from siasync.staging.pool import LostTask
from siasync.staging.worker import BatchTask, PairOutcome, run_batch


class _DaskSubmission:
    def __init__(self, future: Any) -> None:
        self._future = future

    def cancel(self) -> bool:
        return False

    def __await__(self):
        return self._result().__await__()

    async def _result(self) -> list[PairOutcome]:
        try:
            return await self._future
        except (KilledWorker, FutureCancelledError) as exc:
            raise LostTask(f"the Dask cluster lost the batch: {exc}") from exc


class DaskPool:
    """Batches on a Dask cluster: ``address`` (``tcp://host:port``), or ``local_workers`` processes here."""

    def __init__(self, address: str | None = None, local_workers: int = 1) -> None:
        self.address = address
        self.workers = local_workers
        self._cluster: Any = None
        self._client: Any = None

    async def start(self) -> None:
        """Connect (starting the LocalCluster first, for a local one); count the worker threads."""
        if self.address is None:
            self._cluster = await LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                               dashboard_address=None, asynchronous=True)
        self._client = await Client(self.address or self._cluster, asynchronous=True)
        if self.address is not None:
            await self._client.wait_for_workers(1)
            info = self._client.scheduler_info()
            self.workers = max(1, sum(w.get("nthreads", 1) for w in info["workers"].values()))

    def submit(self, task: BatchTask, priority: int = 0) -> _DaskSubmission:
        """Queue a batch on the cluster; a higher priority runs first."""
        return _DaskSubmission(self._client.submit(run_batch, task, pure=False, priority=priority))

    async def close(self) -> None:
        """Disconnect, and stop the LocalCluster we started."""
        if self._client is not None:
            await self._client.close()
        if self._cluster is not None:
            await self._cluster.close()
