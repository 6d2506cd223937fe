"""The job store, on SQLite and on PostgreSQL: compare-and-set phases under races, ordered results checked
against the phase, versions, atomic admission, values too long, and migrations (Alembic, from the schema
versions before it)."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError

from storage.jobs import Job, JobStore, NotRunning, Product, StoreFull, TableRow, Usage, ValueTooLong
from storage.migrate import SchemaError, head


def make_job(job_id: str, owner: str = "alice", phase: str = "PENDING", created: datetime | None = None) -> Job:
    now = created or datetime.now(UTC)
    return Job(id=job_id, owner=owner, run_id=None, phase=phase, creation_time=now, start_time=None, end_time=None,
               execution_duration=60, destruction=now + timedelta(days=1), quote=None, start_after=None,
               error_type=None, error_message=None, parameters=[["POS", "1,2"]], spec={"a": 1}, info={})


def run(coro):
    return asyncio.run(coro)


async def run_and_close(opening) -> None:
    await (await opening).close()


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty store on each backend."""
    return sqlite_url(tmp_path) if request.param == "sqlite" else request.getfixturevalue("new_database")()


def test_jobs_round_trip_with_utc_times(url: str) -> None:
    async def scenario() -> Job | None:
        store = await JobStore.open(url)
        await store.create(make_job("j1"))
        job = await store.get("j1")
        await store.close()
        return job

    job = run(scenario())
    assert job is not None and job.creation_time.tzinfo is UTC and job.parameters == [["POS", "1,2"]]


def test_the_cached_job_follows_every_write(url: str) -> None:
    """Updates change the cached row and its version; what a second store reads from the database agrees."""
    async def scenario() -> tuple[list[Job | None], list[Job | None]]:
        store = await JobStore.open(url)
        await store.create(make_job("j"))
        await store.get("j")  # cached from here on
        later = datetime.now(UTC).astimezone(timezone(timedelta(hours=2))) + timedelta(hours=3)
        assert await store.transition("j", ["PENDING"], "QUEUED", start_after=later)
        assert not await store.transition("j", ["PENDING"], "ABORTED")  # refused: the cache keeps QUEUED
        assert await store.update("j", info={"products": 3})
        assert not await store.update("j", in_phases=["EXECUTING"], info={"products": 4})
        assert await store.transition("j", ["QUEUED"], "EXECUTING")
        await store.register("j", [Product("r1", 1, "image/fits")], [])
        cached = [await store.get("j")]
        reader = await JobStore.open(url)
        stored = [await reader.get("j")]
        await store.close()
        await reader.close()
        return cached, stored

    cached, stored = run(scenario())
    assert cached == stored
    assert stored[0].phase == "EXECUTING" and stored[0].info == {"products": 3}
    assert stored[0].version == 5 and stored[0].last_seq == 1  # four changes and a registration
    assert cached[0].start_after.tzinfo == stored[0].start_after.tzinfo == UTC


def test_a_shared_store_never_serves_a_row_another_server_changed(new_database) -> None:
    """Two stores on one PostgreSQL database, as two servers: each read shows the other's changes at once (a
    SQLite store is one server's alone, and trusts its cache: tests/e2e/test_guard.py)."""
    url = new_database()

    async def scenario() -> list[tuple[str, int, int]]:
        a, b = await JobStore.open(url), await JobStore.open(url)
        seen = []
        try:
            await a.create(make_job("j", phase="EXECUTING"))
            await b.get("j")  # cached by b
            await a.register("j", [Product("r1", 1, "image/fits")], [])
            job = await b.get("j")
            seen.append((job.phase, job.version, job.last_seq))
            assert await a.transition("j", ["EXECUTING"], "ABORTED")
            job = await b.get("j")
            seen.append((job.phase, job.version, job.last_seq))
            assert await a.delete("j")
            seen.append(await b.get("j"))
        finally:
            await a.close()
            await b.close()
        return seen

    assert run(scenario()) == [("EXECUTING", 2, 1), ("ABORTED", 3, 1), None]


def test_a_write_whose_caller_is_cancelled_runs_to_its_end_and_holds_no_lock(url: str) -> None:
    """A server stopping cancels its tasks wherever they are; a write among them completes whole, the next write
    goes through, and closing the store waits for it (cut halfway, a SQLite transaction held the write lock and
    the next write waited the 30 s busy timeout)."""
    pauses = [1, 1, 2, 3, 5, 8]  # loop steps before the cancellation (a task cancelled before its first never began)

    async def scenario() -> list[tuple[int, int, str]]:
        store = await JobStore.open(url)
        for i, pause in enumerate(pauses):
            await store.create(make_job(f"c{i}", phase="EXECUTING"))
            writes = [asyncio.create_task(store.update(f"c{i}", info={"products": 1})),
                      asyncio.create_task(store.register(f"c{i}", [Product("r1", 1, "image/fits")], []))]
            for _ in range(pause):
                await asyncio.sleep(0)
            for write in writes:
                write.cancel()
            await asyncio.gather(*writes, return_exceptions=True)
            assert await asyncio.wait_for(store.update(f"c{i}", run_id="next"), 10)
        await store.close()
        reader = await JobStore.open(url)
        jobs = [await reader.get(f"c{i}") for i in range(len(pauses))]
        await reader.close()
        return [(job.info.get("products"), job.last_seq, job.run_id) for job in jobs]

    assert run(scenario()) == [(1, 1, "next")] * len(pauses)


def test_racing_transitions_let_exactly_one_win(url: str) -> None:
    async def scenario() -> list[tuple[bool, bool, str]]:
        store = await JobStore.open(url)
        outcomes = []
        for i in range(25):
            await store.create(make_job(f"r{i}", phase="EXECUTING"))
            done, aborted = await asyncio.gather(
                store.transition(f"r{i}", ("EXECUTING",), "COMPLETED"),
                store.transition(f"r{i}", ("PENDING", "QUEUED", "EXECUTING"), "ABORTED"))
            outcomes.append((done, aborted, (await store.get(f"r{i}")).phase))
        await store.close()
        return outcomes

    for done, aborted, final in run(scenario()):
        assert done != aborted  # one and only one
        assert final == ("COMPLETED" if done else "ABORTED")


def test_results_are_ordered_and_unique_per_job(url: str) -> None:
    async def scenario() -> None:
        store = await JobStore.open(url)
        await store.create(make_job("a", phase="EXECUTING"))
        await store.create(make_job("b", phase="EXECUTING"))
        await asyncio.gather(*(store.register("a", [Product(f"r{i}", i, "image/fits")],
                                              [TableRow(i, f"img{i}", f"r{i}", f"<TR>{i}</TR>")]) for i in range(20)))
        await store.register("b", [Product("r0", 1, "image/png")], [])
        results = await store.results("a")
        assert [r.seq for r in results] == list(range(1, 21))
        assert len({r.result_id for r in results}) == 20
        assert [seq for seq, _ in await store.table_rows("a")] == list(range(1, 21))
        assert await store.done_pairs("a", 3, 4) == {(3, "img3"), (4, "img4")}
        assert (await store.get("a")).last_seq == 20
        with pytest.raises(IntegrityError):
            await store.register("a", [Product("r3", 1, "image/fits")], [])
        assert (await store.result("b", "r0")).mime_type == "image/png"
        assert await store.delete("a")
        assert await store.results("a") == [] and len(await store.results("b")) == 1
        await store.close()

    run(scenario())


def test_registration_checks_the_phase_and_the_runner(url: str) -> None:
    """Nothing is registered once the job has left EXECUTING, nor by a server that no longer runs it; an abort
    racing registrations lands between two of them, never inside one."""
    async def scenario() -> tuple[list[int], int]:
        store = await JobStore.open(url)
        await store.create(make_job("j", phase="EXECUTING"))
        assert await store.update("j", runner="server-a")
        with pytest.raises(NotRunning):
            await store.register("j", [Product("x", 1, "image/fits")], [], runner="server-b")
        registered = []

        async def register_in_turn() -> None:
            for i in range(30):
                try:
                    await store.register("j", [Product(f"r{i}", 1, "image/fits")],
                                         [TableRow(i, "img", f"r{i}", "<TR/>")], runner="server-a")
                except NotRunning:
                    continue
                registered.append(i)

        registering = asyncio.ensure_future(register_in_turn())
        while len(registered) < 5:
            await asyncio.sleep(0.001)
        await store.transition("j", ["EXECUTING"], "ABORTED")
        await registering
        with pytest.raises(NotRunning):
            await store.register("j", [Product("late", 1, "image/fits")], [], runner="server-a")
        listed = [r.result_id for r in await store.results("j")]
        rows = len(await store.table_rows("j"))
        await store.close()
        assert listed == [f"r{i}" for i in registered]
        return registered, rows

    registered, rows = run(scenario())
    assert registered == list(range(len(registered))) and 5 <= rows == len(registered) < 30


def test_admission_is_atomic_per_owner(url: str) -> None:
    """Owners' limits checked inside the write: 30 concurrent creations through two stores (two servers) admit
    exactly the limit."""
    def admit(usage: Usage) -> None:
        if usage.jobs >= 5:
            raise PermissionError("limit")

    async def scenario() -> int:
        a, b = await JobStore.open(url), await JobStore.open(url)

        async def create(store: JobStore, i: int) -> bool:
            try:
                await store.create(make_job(f"j{i}", phase="QUEUED", owner="alice"), admit=admit)
            except PermissionError:
                return False
            return True

        admitted = await asyncio.gather(*(create((a, b)[i % 2] if url.startswith("postgres") else a, i)
                                          for i in range(30)))
        queued = len(await a.list("alice", ["QUEUED"]))
        await a.close()
        await b.close()
        assert sum(admitted) == queued
        return queued

    assert run(scenario()) == 5


def test_an_owners_usage_counts_unfinished_jobs_and_every_stored_upload(url: str) -> None:
    """What an admission sees: the owner's PENDING, QUEUED, EXECUTING and HELD jobs with their fields and estimated
    bytes, the tables of all their stored jobs, and never the job being admitted (its own part is the caller's)."""
    seen: list[Usage] = []

    def job(job_id: str, phase: str, fields: int, output: int, owner: str = "alice") -> Job:
        return replace(make_job(job_id, owner=owner, phase=phase),
                       info={"fields_total": fields, "output_bytes": output, "empty_fields": list(range(1000))})

    async def scenario() -> None:
        store = await JobStore.open(url)
        for j, phase, fields, output in (("p", "PENDING", 1, 10), ("q", "QUEUED", 2, 20), ("e", "EXECUTING", 4, 40),
                                         ("h", "HELD", 8, 80), ("c", "COMPLETED", 16, 160), ("a", "ABORTED", 32, 320)):
            await store.create(job(j, phase, fields, output), [("t", "text/csv", b"x" * fields)])
        await store.create(job("b", "PENDING", 64, 640, owner="bob"), [("t", "text/csv", b"x" * 64)])
        await store.create(job("new", "PENDING", 5, 5), admit=seen.append)
        await store.transition("p", ("PENDING",), "QUEUED", owner="alice", admit=seen.append)
        await store.update("q", owner="alice", admit=seen.append, uploads=[("u", "text/csv", b"y" * 100)])
        assert [u for _, _, u in await store.uploads("q")] == [b"y" * 100]
        await store.close()

    run(scenario())
    assert seen == [Usage(4, 15, 150, 63), Usage(4, 19, 145, 62), Usage(4, 18, 135, 61)]


def test_values_longer_than_their_column_are_refused_alike(url: str) -> None:
    async def scenario() -> list[str]:
        store = await JobStore.open(url)
        columns = []
        for job, uploads in ((make_job("a", owner="x" * 256), ()), (replace(make_job("b"), run_id="r" * 300), ()),
                             (make_job("c"), [("n" * 65, "text/csv", b"ra,dec\n")])):
            with pytest.raises(ValueTooLong) as refused:
                await store.create(job, uploads)
            columns.append(refused.value.column)
        await store.create(make_job("d", owner="x" * 255))  # the longest that fits
        with pytest.raises(ValueTooLong):
            await store.update("d", run_id="r" * 256)
        assert await store.list(None) != [] and [j.id for j in await store.list(None)] == ["d"]
        await store.close()
        return columns

    assert run(scenario()) == ["jobs.owner", "jobs.run_id", "uploads.name"]


def test_list_filters_and_order(url: str) -> None:
    async def scenario() -> None:
        store = await JobStore.open(url)
        base = datetime(2026, 1, 1, tzinfo=UTC)
        for i in range(10):
            await store.create(make_job(f"j{i}", owner="alice" if i % 2 else "bob", created=base + timedelta(hours=i),
                                        phase="COMPLETED" if i < 5 else "PENDING"))
        assert [j.id for j in await store.list("alice")] == ["j9", "j7", "j5", "j3", "j1"]
        assert [j.id for j in await store.list("alice", ["COMPLETED"])] == ["j3", "j1"]
        assert [j.id for j in await store.list("bob", None, base + timedelta(hours=5))] == ["j8", "j6"]
        assert [j.id for j in await store.list("bob", None, None, 2)] == ["j8", "j6"]
        assert len(await store.list(None)) == 10
        await store.close()

    run(scenario())


def test_servers_opening_an_empty_database_together_migrate_it_once(url: str) -> None:
    """Six stores opened at once on an empty database (six servers starting): the migrations run under a lock,
    once; every store works."""
    async def scenario() -> list[Job | None]:
        stores = await asyncio.gather(*(JobStore.open(url) for _ in range(6)))
        await stores[0].create(make_job("j"))
        found = [await store.get("j") for store in stores]
        for store in stores:
            await store.close()
        return found

    assert all(job is not None and job.id == "j" for job in run(scenario()))


def test_a_store_of_a_newer_revision_is_refused(tmp_path: Path) -> None:
    run(run_and_close(JobStore.open(sqlite_url(tmp_path))))
    with sqlite3.connect(tmp_path / "jobs.db") as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(head(),)]
        db.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(SchemaError, match="revision 9999, unknown to this siasync"):
        run(JobStore.open(sqlite_url(tmp_path)))


LEGACY = (Path(__file__).parent / "data" / "store-v3.sql").read_text()


@pytest.mark.parametrize("version", [1, 2, 3])
def test_a_store_made_before_alembic_is_migrated(tmp_path: Path, version: int) -> None:
    """Stores of schema versions 1 to 3, as the versions before Alembic made them (the DDL they ran), with a job
    running and its results: every row kept, the job resumable, and the store at the newest revision."""
    with sqlite3.connect(tmp_path / "jobs.db") as db:
        db.executescript(LEGACY)
        if version < 3:
            db.execute("DROP TABLE uploads")
        if version < 2:
            db.execute("DROP TABLE table_rows")
        db.execute("INSERT INTO schema_version VALUES (?)", (version,))
        db.execute("INSERT INTO jobs VALUES ('old', 'alice', NULL, 'EXECUTING', '2026-01-01 00:00:00.000000', "
                   "'2026-01-01 00:00:01.000000', NULL, 60, '2026-02-01 00:00:00.000000', NULL, NULL, NULL, NULL, "
                   "'[]', '{}', '{}')")
        db.executemany("INSERT INTO results VALUES ('old', ?, ?, ?, 10, 'image/fits', '{}')",
                       [(seq, f"r{seq}", f"r{seq}") for seq in (1, 2)])

    async def reopen() -> tuple[Job | None, list, list]:
        store = await JobStore.open(sqlite_url(tmp_path))
        job, rows = await store.get("old"), await store.table_rows("old")
        await store.register("old", [Product("r3", 10, "image/fits")], [TableRow(0, "i", "r3", "<TR/>")])
        results = [r.seq for r in await store.results("old")]
        await store.close()
        return job, rows, results

    job, rows, results = run(reopen())
    assert job.id == "old" and job.phase == "EXECUTING" and job.last_seq == 2 and job.runner is None
    assert job.creation_time == datetime(2026, 1, 1, tzinfo=UTC)
    assert rows == [] and results == [1, 2, 3]
    with sqlite3.connect(tmp_path / "jobs.db") as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(head(),)]
    assert {"jobs", "results", "table_rows", "uploads", "servers", "leases"} <= tables
    assert "schema_version" not in tables


def test_a_full_disk_is_a_store_full_error_and_stores_nothing_of_the_write(tmp_path: Path) -> None:
    """SQLite's 'database or disk is full' (here: a page limit) becomes StoreFull; the failed write leaves nothing."""
    async def scenario() -> tuple[int, Job | None]:
        store = await JobStore.open(sqlite_url(tmp_path))
        await store.create(make_job("j", phase="EXECUTING"))

        @event.listens_for(store.engine.sync_engine, "connect")
        def no_room(dbapi_connection, _record) -> None:  # the database may not grow past its size now
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA max_page_count = 1")  # SQLite keeps the larger of this and its page count
            cursor.close()

        await store.engine.dispose()
        products = [Product(f"r{i}", 1, "image/fits", {"padding": "x" * 4000}) for i in range(50)]
        with pytest.raises(StoreFull, match="disk is full"):
            await store.register("j", products, [TableRow(0, "i", "r0", "<TR/>")])
        with pytest.raises(StoreFull):
            await store.create(make_job("k", owner="x" * 200), [("t", "text/csv", bytes(20000))])
        found = len(await store.results("j")), await store.get("k")
        await store.close()
        return found

    assert run(scenario()) == (0, None)
