"""A bounded, time-limited pool of threads for the CPU work of requests, apart from file I/O.

Parsing a big form body or an uploaded table, and rendering a big job document or job list,
take long enough to stall every other request if they ran on the event loop. They run here
instead: a few threads of their own (``CPU_THREADS``), not asyncio's default pool, which reads
and writes files (downloads, result directories, `/availability`), so a slow parse never
delays a download. The pool is bounded twice:

* at most ``threads + queue`` tasks are in it at once (running or waiting); one more is refused
  at once with 503 and ``Retry-After`` instead of queueing without end;
* a request waits ``timeout_s`` at most for its task, then gets 503. A thread cannot be
  interrupted, so a task past its time keeps its place in the pool until it ends (the limits
  on what requests may ask for keep every task short): the bound holds.

The threads run at a lower priority than the event loop's (`NICE`, as the worker processes do), and
a thread holding the GIL hands it to the loop within `SWITCH_S` (CPython's default is 5 ms): while
the pool parses without pause, each of the loop's requests still waits for the GIL only briefly.
The threads are daemons, so that stopping the server never waits for them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from siasync.errors import Unavailable

log = logging.getLogger(__name__)
T = TypeVar("T")
#: how much lower the pool's threads run than the event loop's
NICE = 10
#: the longest a pool thread keeps the GIL while the event loop waits for it (CPython's default: 5 ms)
SWITCH_S = 0.001


class CpuPool:
    """``threads`` daemon threads, at most ``queue_size`` tasks waiting for them, ``timeout_s`` per task."""

    def __init__(self, threads: int, queue_size: int, timeout_s: float) -> None:
        self.threads, self.queue_size, self.timeout_s = threads, queue_size, timeout_s
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        sys.setswitchinterval(SWITCH_S)
        #: tasks in the pool: waiting or running (one past their time included, until it ends)
        self._held = 0
        self._workers = [threading.Thread(target=self._work, daemon=True, name=f"siasync-cpu-{i}")
                         for i in range(threads)]
        for worker in self._workers:
            worker.start()

    @property
    def held(self) -> int:
        """Tasks in the pool now, running or waiting."""
        return self._held

    async def run(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on one of the pool's threads; ``what`` names the work in the refusals.

        Raises
        ------
        Unavailable
            When the pool is full, or the task took longer than ``timeout_s`` (503, try again).
        """
        with self._lock:
            if self._held >= self.threads + self.queue_size:
                raise Unavailable(f"{what}: the service is busy ({self._held} tasks of parsing and rendering "
                                  f"in hand, the limit); try again later")
            self._held += 1
        future: Future = Future()
        self._tasks.put((future, fn, args))
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
        except TimeoutError:
            log.warning("%s: gave up after %g s (the task ends in the background)", what, self.timeout_s)
            raise Unavailable(f"{what}: took longer than the limit of {self.timeout_s:g} s; "
                              "try again later, or send less") from None

    def _work(self) -> None:
        try:  # below the event loop's thread, as the worker processes are (Linux: a thread has a priority of its own)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + NICE)
        except (AttributeError, OSError):
            pass
        while True:
            item = self._tasks.get()
            if item is None:
                return
            future, fn, args = item
            try:
                if future.set_running_or_notify_cancel():  # not given up on before it started
                    try:
                        future.set_result(fn(*args))
                    except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                        future.set_exception(exc)
            finally:
                with self._lock:
                    self._held -= 1

    def close(self) -> None:
        """Let the threads end once the tasks before this call are done (nothing waits for them)."""
        for _ in self._workers:
            self._tasks.put(None)
