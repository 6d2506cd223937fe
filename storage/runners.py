"""The servers sharing a store, the jobs each runs, and duties one server at a time holds.

**Servers.** Each server has a row in ``servers`` with a heartbeat it renews every
``lease_s / 5`` seconds. A server is alive while its heartbeat is younger than
``lease_s * 3 / 4``, so a job whose server died is free at most that long after the
death, and taken over by another within ``lease_s``. A server on the same machine (and PID
namespace) as a dead one need not wait: its PID is gone, which it can see at once. On a
SQLite store, which one process serves at a time, every other server is dead.

**Jobs.** A job's ``runner`` is the server running it: set by a compare-and-set when a
server claims a QUEUED job (or an EXECUTING one whose runner died), cleared when it lets
the job go. A job's lease is alive while its runner is: nobody else claims it meanwhile,
and its results are registered only by its runner (`storage.jobs.JobStore.register`).

**Duties.** `Runners.hold` keeps a named lease (the reaper's) for one server at a time.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from storage.jobs import RUNNER, JobStore, whole
from storage.schema import JobRow, LeaseRow, ServerRow


def this_machine() -> str:
    """Names the machine (its boot) and the PID namespace: servers with the same name see each other's PIDs."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:  # not Linux: the host name and the boot time stand for it
        boot, namespace = socket.gethostname(), int(os.stat("/").st_ctime)
    return f"{boot}:{namespace}"[:128]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Server:
    """A server as its row says."""

    id: str
    host: str
    pid: int
    executor: str
    heartbeat: datetime


class Runners:
    """This server's side of the coordination in ``store``."""

    def __init__(self, store: JobStore, executor: str, lease_s: float = 30.0, server_id: str | None = None) -> None:
        self.store = store
        self.executor = executor
        self.lease_s = lease_s
        self.host, self.pid, self.machine = socket.gethostname()[:255], os.getpid(), this_machine()
        self.id = server_id or self.new_id()

    @staticmethod
    def new_id() -> str:
        """A name for this server, unique among every server there ever was: host, PID and a random part."""
        return f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(4)}"

    @property
    def heartbeat_every(self) -> float:
        """Seconds between heartbeats."""
        return self.lease_s / 5

    @property
    def _alive_for(self) -> timedelta:
        return timedelta(seconds=self.lease_s * 3 / 4)

    @whole
    async def join(self) -> None:
        """Add this server (again, after it was taken for dead)."""
        now = datetime.now(UTC)
        async with self.store.sessions.begin() as s:
            await s.execute(delete(ServerRow).where(ServerRow.id == self.id))
            await s.execute(insert(ServerRow).values(id=self.id, host=self.host, pid=self.pid, machine=self.machine,
                                                     executor=self.executor[:255], started=now, heartbeat=now))

    @whole
    async def heartbeat(self) -> bool:
        """Renew this server's lease; False when another server took it for dead meanwhile (its jobs are lost)."""
        async with self.store.sessions.begin() as s:
            changed = await s.execute(update(ServerRow).where(ServerRow.id == self.id)
                                      .values(heartbeat=datetime.now(UTC)))
        return changed.rowcount == 1

    @whole
    async def leave(self) -> None:
        """Let every job of this server go, and remove it (a clean stop: the jobs are free at once)."""
        for job_id in await self._jobs_of(self.id):
            await self.release(job_id)
        async with self.store.sessions.begin() as s:
            await s.execute(delete(ServerRow).where(ServerRow.id == self.id))

    async def servers(self) -> list[Server]:
        """The servers alive now."""
        since = datetime.now(UTC) - self._alive_for
        query = select(ServerRow).where(ServerRow.heartbeat >= since).order_by(ServerRow.started)
        async with self.store.sessions() as s:
            return [Server(r.id, r.host, r.pid, r.executor, r.heartbeat) for r in (await s.execute(query)).scalars()]

    async def alive(self, server_id: str) -> bool:
        """Whether a server is alive: its heartbeat is recent (and, on this machine, its PID lives)."""
        if self.store.exclusive:
            return server_id == self.id
        async with self.store.sessions() as s:
            row = (await s.execute(select(ServerRow).where(ServerRow.id == server_id))).scalar_one_or_none()
        return (row is not None and row.heartbeat >= datetime.now(UTC) - self._alive_for
                and (row.machine != self.machine or _pid_alive(row.pid)))

    @whole
    async def free_dead(self) -> list[str]:
        """Let go the jobs of the servers found dead, and forget those servers; the jobs freed."""
        # the runners first: a server that claims a job after this read has joined before the next one
        async with self.store.sessions() as s:
            runners = set((await s.execute(select(JobRow.runner).distinct().where(JobRow.runner.is_not(None))))
                          .scalars())
            rows = (await s.execute(select(ServerRow).where(ServerRow.id != self.id))).scalars().all()
        since = datetime.now(UTC) - self._alive_for
        dead = [r for r in rows if self.store.exclusive or r.heartbeat < since
                or (r.machine == self.machine and not _pid_alive(r.pid))]
        # runners no servers row names: left by a server removed meanwhile, or by a store migrated with jobs
        orphans = runners - {r.id for r in rows} - {self.id}
        freed = []
        for runner in [r.id for r in dead] + sorted(orphans):
            for job_id in await self._jobs_of(runner):
                if await self._set_runner(job_id, runner, None):
                    freed.append(job_id)
        for row in dead:  # only as it was seen: a server that beat meanwhile stays
            async with self.store.sessions.begin() as s:
                await s.execute(delete(ServerRow).where(ServerRow.id == row.id, ServerRow.heartbeat == row.heartbeat))
        return freed

    async def _jobs_of(self, runner: str) -> list[str]:
        async with self.store.sessions() as s:
            return list((await s.execute(select(JobRow.id).where(JobRow.runner == runner))).scalars())

    async def claim(self, limit: int) -> list[str]:
        """Take up to ``limit`` jobs nobody runs: EXECUTING ones first (resumed), then QUEUED ones due, oldest first."""
        if limit <= 0:
            return []
        now = datetime.now(UTC)
        due = or_(JobRow.phase == "EXECUTING",
                  (JobRow.phase == "QUEUED") & or_(JobRow.start_after.is_(None), JobRow.start_after <= now))
        query = (select(JobRow.id).where(JobRow.runner.is_(None), due)
                 .order_by((JobRow.phase == "EXECUTING").desc(), JobRow.creation_time).limit(2 * limit))
        async with self.store.sessions() as s:
            candidates = list((await s.execute(query)).scalars())
        claimed = []
        for job_id in candidates:
            if len(claimed) == limit:
                break
            if await self._set_runner(job_id, None, self.id):
                claimed.append(job_id)
        return claimed

    async def release(self, job_id: str) -> bool:
        """Let a job of this server go."""
        return await self._set_runner(job_id, self.id, None)

    async def _set_runner(self, job_id: str, old: str | None, new: str | None) -> bool:
        """Compare-and-set a job's runner (a claim only while the job is QUEUED or EXECUTING)."""
        guard = JobRow.runner.is_(None) if old is None else JobRow.runner == old
        if new is not None:
            guard = guard & JobRow.phase.in_(["QUEUED", "EXECUTING"])
        return await self.store.update_where(job_id, RUNNER, {"runner": new}, guard)

    async def next_start(self) -> datetime | None:
        """The earliest deferred start among the QUEUED jobs nobody runs yet."""
        query = select(func.min(JobRow.start_after)).where(JobRow.phase == "QUEUED", JobRow.runner.is_(None),
                                                          JobRow.start_after > datetime.now(UTC))
        async with self.store.sessions() as s:
            return (await s.execute(query)).scalar()

    @whole
    async def hold(self, name: str, seconds: float) -> bool:
        """Take or renew the named lease for ``seconds``; whether this server holds it now."""
        now = datetime.now(UTC)
        values = {"holder": self.id, "expires": now + timedelta(seconds=seconds)}
        async with self.store.sessions.begin() as s:
            taken = await s.execute(update(LeaseRow).where(LeaseRow.name == name, or_(
                LeaseRow.holder == self.id, LeaseRow.expires < now)).values(**values))
        if taken.rowcount == 1:
            return True
        try:
            async with self.store.sessions.begin() as s:
                if (await s.execute(select(LeaseRow.name).where(LeaseRow.name == name))).first() is not None:
                    return False
                await s.execute(insert(LeaseRow).values(name=name, **values))
        except IntegrityError:  # another server made it first
            return False
        return True
