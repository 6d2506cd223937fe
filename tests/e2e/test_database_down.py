"""The database out of reach: /availability says so, requests answer 503 (never 500), and once PostgreSQL is
back the server serves and runs jobs again, with no restart."""

from __future__ import annotations

import io
import time
from pathlib import Path

import httpx
from pyvo.io.vosi import parse_availability

from deploy.postgres import Postgres
from tests.e2e.conftest import serving, submit, wait_final


def availability(url: str):
    return parse_availability(io.BytesIO(httpx.get(url + "/availability", timeout=30).content))


def test_availability_and_answers_while_the_database_is_down(tmp_path: Path, demo_archive: Path) -> None:
    database = Postgres(fast=False).start()  # durable commits: its server is killed
    try:
        url = database.create_database("siasync")
        with serving(tmp_path, demo_archive, "--workers", "1", "--database-url", url) as server:
            assert availability(server.url).available
            database.kill()
            deadline = time.monotonic() + 10
            while availability(server.url).available:
                assert time.monotonic() < deadline, "/availability did not notice"
                time.sleep(0.1)
            assert any("database cannot be reached" in note for note in availability(server.url).notes)
            for answer in (httpx.get(server.url + "/async", timeout=30),
                           httpx.post(server.url + "/async", data={"POS": "150.1,2.2", "SIZE": "0.01"}, timeout=30)):
                assert answer.status_code == 503 and answer.text.startswith("Unavailable: the database"), answer.text
                assert answer.headers["retry-after"]
            database.restart()
            deadline = time.monotonic() + 30
            while not availability(server.url).available:
                assert time.monotonic() < deadline, "/availability did not recover"
                time.sleep(0.2)
            assert wait_final(submit(server, POS="150.1,2.2", SIZE="0.01", PHASE="RUN")).phase == "COMPLETED"
    finally:
        database.stop()
