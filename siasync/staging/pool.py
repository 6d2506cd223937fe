"""Worker pools behind one small interface: submit a batch, cancel it, await it as it completes.

`LocalPool` is a process pool on this machine. Workers come from a forkserver that
has already imported the worker module, so a pool starts in well under a second,
and each worker keeps its parent cache for its lifetime. If a worker dies, the
pool is rebuilt and the batches it lost are reported as `LostTask`, which the
scheduler submits again. `ExecutorDown` says that the executor itself was lost (a Dask
scheduler): the batch is sent again once `TaskPool.problem` is None, however often.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol

from siasync.staging.worker import BatchTask, PairOutcome, init_worker, run_batch, warm


class LostTask(RuntimeError):
    """A batch whose worker died before finishing; it may be submitted again."""


class ExecutorDown(RuntimeError):
    """A batch lost with the executor (a Dask scheduler out of reach); it is sent again once the executor is back."""


class Submitted(Protocol):
    """A submitted batch."""

    def cancel(self) -> bool:
        """Withdraw the batch if it has not started; True if it will not run."""

    def __await__(self):  # pragma: no cover - protocol
        """Its outcomes, or `LostTask`."""


class TaskPool(Protocol):
    """What the scheduler needs from a pool of workers."""

    #: worker processes (threads) this server may keep busy
    workers: int
    #: servers sharing the executor, this one included (set by the scheduler; a Dask cluster's share follows it)
    sharing: int
    #: why the executor cannot run batches now, or None
    problem: str | None

    async def start(self) -> None:
        """Start the workers."""

    def submit(self, task: BatchTask, priority: int = 0) -> Submitted:
        """Queue a batch; where the pool orders its queue, a higher priority runs first."""

    async def close(self) -> None:
        """Stop the workers."""


class _LocalSubmission:
    def __init__(self, pool: LocalPool, future: Future) -> None:
        self._pool, self._future = pool, future

    def cancel(self) -> bool:
        return self._future.cancel()

    def __await__(self):
        return self._result().__await__()

    async def _result(self) -> list[PairOutcome]:
        try:
            return await asyncio.wrap_future(self._future)
        except BrokenProcessPool as exc:
            self._pool.rebuild()
            raise LostTask(str(exc)) from exc


class LocalPool:
    """A process pool of ``workers`` processes on this machine.

    With ``terminate``, closing it ends the workers at once instead of letting their batches finish (a remote
    collection's pool: a download may take minutes, and an interrupted one leaves only a temporary file).
    """

    def __init__(self, workers: int, terminate: bool = False) -> None:
        self.workers = workers
        self._terminate = terminate
        self.sharing = 1  # the workers are this server's own
        self.problem: str | None = None
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["siasync.staging.worker"])
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=self._context, initializer=init_worker,
                                   initargs=(os.getpid(),))

    async def start(self) -> None:
        """Start every worker now, so that the first job does not wait for them."""
        await asyncio.gather(*(asyncio.wrap_future(self._executor.submit(warm)) for _ in range(self.workers)))

    def submit(self, task: BatchTask, priority: int = 0) -> _LocalSubmission:
        """Queue a batch; await the result for its outcomes.

        The queue is first in, first out, so ``priority`` is not used: the dispatcher
        keeps no more batches in it than the workers are about to run.
        """
        try:
            return _LocalSubmission(self, self._executor.submit(run_batch, task))
        except BrokenProcessPool:
            self.rebuild()
            return _LocalSubmission(self, self._executor.submit(run_batch, task))

    def rebuild(self) -> None:
        """Replace a broken executor (a worker died) by a fresh one."""
        broken = self._executor
        if getattr(broken, "_broken", False):
            self._executor = self._new_executor()
            broken.shutdown(wait=False, cancel_futures=True)

    async def close(self) -> None:
        """Stop the workers, dropping queued batches."""
        if self._terminate:
            processes = list((getattr(self._executor, "_processes", None) or {}).values())
            self._executor.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.terminate()
            return
        await asyncio.to_thread(self._executor.shutdown, True, cancel_futures=True)


async def cancel_all(tasks: list[asyncio.Task]) -> None:
    """Cancel tasks and wait for them to end. Cancelled again while any runs on: before Python 3.12, wait_for and
    timeout may swallow a cancellation that comes as they time out (or their awaitable completes)."""
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)


def make_pool(executor: str, workers: int) -> TaskPool:
    """The pool an ``executor`` setting names (see `siasync.settings.Settings.executor`)."""
    if executor == "local":
        return LocalPool(workers)
    try:
        from siasync.staging.dask_pool import DaskPool
    except ImportError as exc:
        raise RuntimeError("the Dask executors need the 'distributed' package: pip install 'siasync[dask]'") from exc
    if executor.startswith("dask://"):
        return DaskPool(address="tcp://" + executor.removeprefix("dask://"))
    _, _, count = executor.partition(":")
    return DaskPool(local_workers=int(count) if count else workers)
