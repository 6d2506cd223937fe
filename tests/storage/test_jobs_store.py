"""The job store: compare-and-set phases under races, ordered results, schema versions."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError

from storage.jobs import SCHEMA_VERSION, Job, JobStore, Product, StoreError, StoreFull, TableRow


def make_job(job_id: str, owner: str = "alice", phase: str = "PENDING", created: datetime | None = None) -> Job:
    now = created or datetime.now(UTC)
    return Job(id=job_id, owner=owner, run_id=None, phase=phase, creation_time=now, start_time=None, end_time=None,
               execution_duration=60, destruction=now + timedelta(days=1), quote=None, start_after=None,
               error_type=None, error_message=None, parameters=[["POS", "1,2"]], spec={"a": 1}, info={})


def run(coro):
    return asyncio.run(coro)


async def run_and_close(opening) -> None:
    await (await opening).close()


def url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}"


def test_jobs_round_trip_with_utc_times(tmp_path: Path) -> None:
    async def scenario() -> Job | None:
        store = await JobStore.open(url(tmp_path))
        await store.create(make_job("j1"))
        job = await store.get("j1")
        await store.close()
        return job

    job = run(scenario())
    assert job is not None and job.creation_time.tzinfo is UTC and job.parameters == [["POS", "1,2"]]


def test_the_cached_job_follows_every_write(tmp_path: Path) -> None:
    """Updates change the cached row in place; what a second store reads from the file agrees."""
    async def scenario() -> tuple[list[Job | None], list[Job | None]]:
        store = await JobStore.open(url(tmp_path))
        await store.create(make_job("j"))
        await store.get("j")  # cached from here on
        later = datetime.now(UTC).astimezone(timezone(timedelta(hours=2))) + timedelta(hours=3)
        assert await store.transition("j", ["PENDING"], "QUEUED", start_after=later)
        assert not await store.transition("j", ["PENDING"], "ABORTED")  # refused: the cache keeps QUEUED
        assert await store.update("j", info={"products": 3})
        assert not await store.update("j", in_phases=["EXECUTING"], info={"products": 4})
        await store.register("j", [Product("r1", 1, "image/fits")], [])
        cached = [await store.get("j")]
        reader = await JobStore.open(url(tmp_path))
        stored = [await reader.get("j")]
        await store.close()
        await reader.close()
        return cached, stored

    cached, stored = run(scenario())
    assert cached == stored
    assert stored[0].phase == "QUEUED" and stored[0].info == {"products": 3}
    assert cached[0].start_after.tzinfo == stored[0].start_after.tzinfo == UTC


def test_racing_transitions_let_exactly_one_win(tmp_path: Path) -> None:
    async def scenario() -> list[tuple[bool, bool, str]]:
        store = await JobStore.open(url(tmp_path))
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


def test_results_are_ordered_and_unique_per_job(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = await JobStore.open(url(tmp_path))
        await store.create(make_job("a"))
        await store.create(make_job("b"))
        await asyncio.gather(*(store.register("a", [Product(f"r{i}", i, "image/fits")],
                                              [TableRow(i, f"img{i}", f"r{i}", f"<TR>{i}</TR>")]) for i in range(20)))
        await store.register("b", [Product("r0", 1, "image/png")], [])
        results = await store.results("a")
        assert [r.seq for r in results] == list(range(1, 21))
        assert len({r.result_id for r in results}) == 20
        assert [seq for seq, _ in await store.table_rows("a")] == list(range(1, 21))
        assert await store.done_pairs("a", 3, 4) == {(3, "img3"), (4, "img4")}
        assert await store.last_result_seq("a") == 20
        with pytest.raises(IntegrityError):
            await store.register("a", [Product("r3", 1, "image/fits")], [])
        assert (await store.result("b", "r0")).mime_type == "image/png"
        assert await store.delete("a")
        assert await store.results("a") == [] and len(await store.results("b")) == 1
        await store.close()

    run(scenario())


def test_list_filters_and_order(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = await JobStore.open(url(tmp_path))
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


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    run(run_and_close(JobStore.open(url(tmp_path))))  # creates version SCHEMA_VERSION
    with sqlite3.connect(tmp_path / "jobs.db") as db:
        db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="schema version"):
        run(JobStore.open(url(tmp_path)))


def test_a_version_1_store_is_migrated(tmp_path: Path) -> None:
    async def create_v1() -> None:
        store = await JobStore.open(url(tmp_path))
        await store.create(make_job("old"))
        await store.close()

    run(create_v1())
    with sqlite3.connect(tmp_path / "jobs.db") as db:  # as issue 3 left it: no table_rows yet
        db.execute("DROP TABLE table_rows")
        db.execute("UPDATE schema_version SET version = 1")

    async def reopen() -> tuple[Job | None, list]:
        store = await JobStore.open(url(tmp_path))
        job, rows = await store.get("old"), await store.table_rows("old")
        await store.close()
        return job, rows

    job, rows = run(reopen())
    assert job is not None and job.id == "old" and rows == []
    with sqlite3.connect(tmp_path / "jobs.db") as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


def test_a_full_disk_is_a_store_full_error_and_stores_nothing_of_the_write(tmp_path: Path) -> None:
    """SQLite's 'database or disk is full' (here: a page limit) becomes StoreFull; the failed write leaves nothing."""
    async def scenario() -> tuple[int, Job | None]:
        store = await JobStore.open(url(tmp_path))
        await store.create(make_job("j"))

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
